"""Easel server package: engine, imaging, jobs, websocket app, protocol, client and CLI."""

__version__ = "0.1.0"
