"""Easel's server side: the diffusers engine, imaging, the fair job queue, the result store and the
websocket app. It may import ``easel.client`` (the protocol); the client never imports this package."""
