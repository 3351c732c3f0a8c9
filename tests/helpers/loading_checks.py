"""A tiny txt2img engine job and its pixels, shared by the engine loading and hub tests."""

from __future__ import annotations

import numpy as np

from easel.server.engine import Engine, EngineJob, Progress

PROMPT = "a blue dog"


def job(**kw) -> EngineJob:
    kw.setdefault("steps", 2)
    kw.setdefault("seeds", [4])
    return EngineJob(mode="txt2img", prompt=PROMPT, width=64, height=64, **kw)


def generate(engine: Engine, **kw) -> np.ndarray:
    events: list[Progress] = []
    (img,) = engine.run(job(**kw), events.append, lambda: False)
    return np.asarray(img)
