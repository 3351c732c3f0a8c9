"""Easel's engine on a Ray Serve cluster (``easel serve --ray ADDRESS|local``; docs/scaling.md).

The websocket front door, the fair queue, the result store, auth and the protocol stay in the
``easel serve`` process; the engine runs in Ray Serve replicas (``replica``), one job at a time each,
fed by ``RayWorker`` slots (``worker``). ``cluster`` joins or starts Ray and deploys the replicas, in a
child process, the Ray driver (``driver``), so that the front door outlives the cluster's head.
Ray is optional: ``pip install '.[ray]'`` in the checkout (or ``pip install 'ray[serve]'``).
"""

from __future__ import annotations

INSTALL_HINT = ("easel serve --ray needs Ray Serve: pip install 'ray[serve]' into Easel's environment (or, in "
                "the Easel checkout: pip install '.[ray]'; docs/scaling.md)")
APP_NAME = "easel"
