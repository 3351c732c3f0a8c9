"""Easel's built-in demo model: a toy Stable Diffusion trained on drawn shapes, offline.

``server.demo.model.load_pipeline`` builds it from the committed weights; ``server.demo.train``
retrains it; ``server.demo.shapes`` draws its data set and ``server.demo.measure`` grades it.
This package file stays import-light (no torch) so the CLI can read constants cheaply.
"""
