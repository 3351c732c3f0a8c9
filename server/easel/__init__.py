"""Easel: local AI painting for Krita and GIMP.

``easel.client`` is everything the editor plugins bundle (protocol, websocket client, editor-independent
plugin logic; stdlib + websockets only). ``easel.server`` is the server side (engine, imaging, jobs,
websocket app). ``easel.cli`` is the ``easel`` command; ``easel.plugin_install`` installs the plugins.
Loggers live under the ``easel`` namespace.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
