"""Easel's client side, bundled whole into both editor plugins (as their ``shared`` package).

``protocol`` (protocol v1, sans-IO), ``connection`` (the synchronous websocket client),
``send_region`` (which part of the canvas a plugin sends) and ``editing`` (editor-independent plugin
logic: mode choice, layer names, worker tasks, live painting, power features).

Rules, enforced by tests/test_layout.py: stdlib and ``websockets`` only, and relative imports that stay
inside this package (it is copied under another name into the plugins); nothing from ``easel.server``.
"""
