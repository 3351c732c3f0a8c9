"""ComfyUI, timed over its HTTP/websocket API, for `make bench-full`.

``find()``: the install named by ``EASEL_BENCH_COMFYUI`` (a ComfyUI folder), else None; its python is
``$EASEL_BENCH_COMFYUI_PYTHON``, ``<folder>/venv/bin/python`` or ``<folder>/../venv/bin/python``.
``serve()`` runs it headless with ``--cpu`` on 127.0.0.1 with a temporary ``--base-directory``
(models, output, user files, database: the install is not touched). ``ComfyServer.txt2img`` posts an
API-format workflow and waits on the websocket. ComfyUI caches node outputs: a call whose sampler
would come from the cache (same seed and settings as the previous job) raises, so each timed call
samples and decodes; an unchanged prompt's text encodings do come from the cache, as for a ComfyUI
user. The first call loads the checkpoint: warm up before timing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLIP_VOCAB = 49408  # ComfyUI tokenizes with the real CLIP vocabulary


def find() -> Path | None:
    """The ComfyUI folder named by ``EASEL_BENCH_COMFYUI``, or None when it is unset."""
    value = os.environ.get("EASEL_BENCH_COMFYUI")
    if not value:
        return None
    folder = Path(value).expanduser()
    if not (folder / "main.py").is_file():
        raise FileNotFoundError(f"EASEL_BENCH_COMFYUI={value}: no ComfyUI main.py there")
    return folder


def python(folder: Path) -> Path:
    """The interpreter that runs the ComfyUI in ``folder``."""
    if os.environ.get("EASEL_BENCH_COMFYUI_PYTHON"):
        return Path(os.environ["EASEL_BENCH_COMFYUI_PYTHON"])
    for candidate in (folder / "venv/bin/python", folder.parent / "venv/bin/python"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no python for ComfyUI in {folder}: set EASEL_BENCH_COMFYUI_PYTHON")


def checkpoint(pipe_folder: Path, out: Path) -> Path:
    """``out``: the SD1.5 diffusers folder as one ldm-layout file (kept if it exists).

    The bench models' text encoder has the tests' small vocabulary; its token embedding is padded
    with random rows to CLIP's 49408 so that ComfyUI's tokenizer ids index it (same cost per token).
    """
    if out.exists():
        return out
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.tiny_single_file import write_single_file

    tmp = out.with_name(out.name + ".part")
    write_single_file(pipe_folder, tmp)
    state = load_file(tmp)
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    emb = state[key]
    if emb.shape[0] < CLIP_VOCAB:
        extra = torch.randn(CLIP_VOCAB - emb.shape[0], emb.shape[1], generator=torch.Generator().manual_seed(0))
        state[key] = torch.cat([emb, (extra * emb.float().std()).to(emb.dtype)])
    save_file(state, tmp)
    tmp.replace(out)
    return out


@dataclass
class ComfyServer:
    """A running ComfyUI: its URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    checkpoint_name: str
    deadline_s: float = 900.0

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def txt2img(self, prompt: str, seed: int, steps: int, cfg: float, size: int) -> tuple[float, np.ndarray]:
        """(seconds from POST to done, HxWx3 uint8 pixels) of one SD txt2img job (Euler, normal)."""
        from PIL import Image
        from websockets.sync.client import connect

        graph = _workflow(self.checkpoint_name, prompt, seed, steps, cfg, size)
        client = uuid.uuid4().hex
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={client}"
        with connect(ws_url, max_size=None) as ws:  # before the POST: no message is missed
            body = json.dumps({"prompt": graph, "client_id": client}).encode()
            request = urllib.request.Request(self.url + "/prompt", body, {"Content-Type": "application/json"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                prompt_id = json.load(response)["prompt_id"]
            end = started + self.deadline_s
            while True:
                message = ws.recv(timeout=max(0.0, end - time.perf_counter()))
                if isinstance(message, bytes):
                    continue  # preview frames
                event = json.loads(message)
                kind, data = event["type"], event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if kind == "execution_cached" and "sampler" in data.get("nodes", []):
                    raise RuntimeError("ComfyUI took the sampler from its cache: vary the seed")
                if kind in ("execution_error", "execution_interrupted"):
                    raise RuntimeError(f"ComfyUI {kind}: {data.get('exception_message', data)}")
                if kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                    seconds = time.perf_counter() - started
                    break
        image = json.loads(self._get(f"/history/{prompt_id}"))[prompt_id]["outputs"]["save"]["images"][0]
        png = self._get("/view?" + urllib.parse.urlencode(image))
        return seconds, np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def peak_rss(self) -> int:
        """The server process's peak resident memory so far, in bytes (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]

    def weight_dtype(self) -> str | None:
        """The UNet weight dtype ComfyUI logged on loading (e.g. ``torch.float32``), None before."""
        found = re.findall(r"model weight dtype (\S+),", self.log.read_text(errors="replace"))
        return found[-1] if found else None


def _workflow(ckpt: str, prompt: str, seed: int, steps: int, cfg: float, size: int) -> dict[str, Any]:
    clip, model = ["ckpt", 1], ["ckpt", 0]
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "easel"}},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: Path, checkpoint: Path, threads: int, start_deadline_s: float = 300.0) -> Iterator[ComfyServer]:
    """ComfyUI from ``folder`` on the CPU, serving ``checkpoint`` with ``threads`` torch threads."""
    tmp = Path(tempfile.mkdtemp(prefix="easel-comfyui-"))
    base = tmp / "base"
    (base / "models/checkpoints").mkdir(parents=True)
    (base / "models/checkpoints" / checkpoint.name).symlink_to(checkpoint.resolve())
    port = _free_port()
    cmd = [str(python(folder)), str(folder / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--database-url", f"sqlite:///{tmp}/comfyui.db",
           "--disable-auto-launch", "--disable-all-custom-nodes", "--disable-api-nodes",
           "--preview-method", "none", "--dont-print-server"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp / "comfyui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ComfyServer(f"http://127.0.0.1:{port}", process, log, checkpoint.name)
    try:
        end = time.monotonic() + start_deadline_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                server._get("/system_stats")
                break
            if time.monotonic() > end:
                raise TimeoutError(f"ComfyUI not listening after {start_deadline_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)  # poll interval
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(tmp, ignore_errors=True)
