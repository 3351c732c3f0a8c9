"""Easel's built-in demo model: a toy Stable Diffusion trained on drawn shapes, offline.

``easel.server.demo.model.load_pipeline`` builds it from the committed weights; ``easel.server.demo.train``
retrains it; ``easel.server.demo.shapes`` draws its data set and ``easel.server.demo.measure`` grades it.
This package file stays import-light (no torch) so the CLI can read constants cheaply.
"""

DEMO_ID = "easel-demo"  #: the built-in demo model's id (what clients and ``--model`` name it)
