"""Easel for Krita: local AI painting through an Easel server (see docs/krita.md).

The installer bundles the shared client (``easel.client``) as ``easel_krita.shared`` and a pure-Python ``websockets``
in ``vendor/``; that folder goes first on ``sys.path`` so Krita's own Python finds it.
"""

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

from .extension import register  # noqa: E402

register()
