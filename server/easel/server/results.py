"""Finished results, written to disk before they are sent, kept until acknowledged or expired.

Each job gets a folder ``<output_dir>/<job id>/`` with ``image-N.png`` files (carrying their
parameters in the PNG ``parameters`` text chunk that other tools read) and ``result.json``.
A client that lost its connection reconnects and sends ``fetch`` with the job id.
Retention: at most ``max_count`` results and none older than ``max_age_s``; ``ack`` deletes one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

log = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def default_output_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("easel", appauthor=False)) / "outputs"


def parameters_text(params: dict[str, Any], seed: int, width: int, height: int) -> str:
    """The widely read A1111-style ``parameters`` text: prompt, negative line, key: value line.

    ``Size`` is what the model's (first) pass ran at (``work_size``; ``width`` x ``height`` when the
    parameters do not say). After a second pass, A1111's hires keys follow: ``Hires upscale`` (the
    factor), ``Hires resize`` (the size refined at) and its strength: ``Denoising strength`` for text
    to image (A1111's meaning there), ``Hires strength`` with an image (whose own strength stays).
    """
    size = params.get("work_size") or (width, height)
    second = params.get("second_pass")
    strength = params.get("strength")
    if second and params.get("mode") == "txt2img":
        strength = second.get("strength")
    fields = [("Steps", params.get("steps")), ("Sampler", params.get("scheduler")),
              ("CFG scale", params.get("guidance")), ("Seed", seed), ("Size", f"{size[0]}x{size[1]}"),
              ("Model", params.get("model")), ("Denoising strength", strength), ("Mode", params.get("mode"))]
    if second:
        fields += [("Hires upscale", second.get("upscale")), ("Hires resize", "x".join(map(str, second["size"])))]
        if params.get("mode") != "txt2img":
            fields.append(("Hires strength", second.get("strength")))
    if params.get("variation_seed") is not None and params.get("variation_strength"):
        fields += [("Variation seed", params["variation_seed"]),
                   ("Variation seed strength", params["variation_strength"])]
    if params.get("loras"):
        fields.append(("Lora", " ".join(f"{x['name']}:{x.get('weight', 1.0)}" for x in params["loras"])))
    if params.get("control_model"):
        fields.append(("ControlNet", f"{params['control_model']} ({params.get('control_strength', 1.0)})"))
    for i, c in enumerate(params.get("controls") or []):  # as A1111's ControlNet extension writes its units
        unit = [("Module", c.get("kind")), ("Model", c.get("model")), ("Weight", c.get("strength")),
                ("Guidance Start", c.get("start")), ("Guidance End", c.get("end"))]
        fields.append((f"ControlNet {i}", '"' + ", ".join(f"{k}: {v}" for k, v in unit if v is not None) + '"'))
    if params.get("refiner"):
        fields += [("Refiner", params["refiner"]), ("Refiner switch at", params.get("refiner_switch"))]
    lines = [params.get("prompt", "")]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def keeps_result(store: ResultStore | None, job: str, live: bool) -> bool:
    """Whether a finished job's result is stored for ``fetch``: a store, a storable id and not a live frame."""
    return store is not None and store.valid_id(job) and not live


@dataclass
class StoredResult:
    job: str
    folder: Path
    created: float
    meta: dict[str, Any]  # the result message without attachments


class ResultStore:
    """Thread-safe store of finished results on disk."""

    def __init__(self, folder: Path, max_count: int = 200, max_age_s: float = 7 * 24 * 3600):
        self.folder = Path(folder)
        self.max_count, self.max_age_s = max_count, max_age_s
        self._lock = threading.Lock()
        self._items: dict[str, StoredResult] = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load_existing()

    @staticmethod
    def valid_id(job: str) -> bool:
        """Job ids become folder names: only letters, digits, ``_ . -`` (no path traversal)."""
        return bool(_SAFE_ID.match(job)) and job not in (".", "..")

    def save(self, job: str, meta: dict[str, Any], layers: list[np.ndarray]) -> StoredResult:
        """Write images + metadata (atomically, via a temporary folder), then apply retention."""
        if not self.valid_id(job):
            raise ValueError(f"job id {job!r} is not storable")
        tmp = self.folder / f".{job}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        params = meta.get("parameters", {})
        for i, (rgba, info) in enumerate(zip(layers, meta.get("images", []), strict=True)):
            png = PngInfo()
            png.add_text("parameters", parameters_text(params, info["seed"], info["width"], info["height"]))
            PILImage.fromarray(rgba, "RGBA").save(tmp / f"image-{i}.png", pnginfo=png, compress_level=1)
        (tmp / "result.json").write_text(json.dumps(meta, indent=1))
        final = self.folder / job
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        item = StoredResult(job, final, time.time(), meta)
        with self._lock:
            self._items[job] = item
        self.prune()
        return item

    def get(self, job: str) -> tuple[dict[str, Any], list[np.ndarray]] | None:
        with self._lock:
            item = self._items.get(job)
        if item is None:
            return None
        layers = [np.asarray(PILImage.open(item.folder / f"image-{i}.png").convert("RGBA"))
                  for i in range(len(item.meta.get("images", [])))]
        return item.meta, layers

    def ack(self, job: str) -> bool:
        with self._lock:
            item = self._items.pop(job, None)
        if item is not None:
            shutil.rmtree(item.folder, ignore_errors=True)
        return item is not None

    def jobs(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent results, newest first: job, time and parameters."""
        with self._lock:
            items = sorted(self._items.values(), key=lambda i: i.created, reverse=True)[:limit]
        return [{"job": i.job, "created": i.created, "parameters": i.meta.get("parameters", {}),
                 "images": i.meta.get("images", [])} for i in items]

    def prune(self) -> None:
        now = time.time()
        with self._lock:
            items = sorted(self._items.values(), key=lambda i: i.created)
            doomed = [i for i in items if now - i.created > self.max_age_s]
            alive = [i for i in items if i not in doomed]
            doomed += alive[: max(0, len(alive) - self.max_count)]
            for item in doomed:
                self._items.pop(item.job, None)
        for item in doomed:
            shutil.rmtree(item.folder, ignore_errors=True)

    def _load_existing(self) -> None:
        for meta_path in self.folder.glob("*/result.json"):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            job = meta_path.parent.name
            self._items[job] = StoredResult(job, meta_path.parent, meta_path.stat().st_mtime, meta)
        self.prune()
