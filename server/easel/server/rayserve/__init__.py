"""Easel's engine on a Ray Serve cluster (``easel serve --ray ADDRESS|local``, issue #19; docs/scaling.md).

The websocket front door, the fair queue, the result store, auth and the protocol stay in the
``easel serve`` process; the engine runs in Ray Serve replicas (``replica``), one job at a time each,
fed by ``RayWorker`` slots (``worker``). ``cluster`` joins or starts Ray and deploys the replicas, in a
child process, the Ray driver (``driver``), so that the front door outlives the cluster's head.
Ray is optional: ``pip install 'easel[ray]'``.
"""

from __future__ import annotations

INSTALL_HINT = "easel serve --ray needs Ray Serve: pip install 'easel[ray]' (or: pip install 'ray[serve]')"
APP_NAME = "easel"
