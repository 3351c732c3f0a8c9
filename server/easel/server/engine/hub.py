"""Hugging Face hub models: download what a diffusers pipeline needs into the normal HF cache.

Only the pipeline's component folders are fetched (safetensors preferred over .bin, the fp16 variant
when the model runs in float16 or when it is the only one), never extra single-file checkpoints or
the safety checker. A repository of one model (a ControlNet, a preprocessor's depth or segmentation
model: a ``config.json`` and its weights at the top) is fetched the same way, as that one folder; of
lllyasviel/Annotators only the files the server's annotators load (preprocess/annotators.py). Offline (``HF_HUB_OFFLINE=1``) or unreachable, the cached snapshot is used.
Byte progress is reported through ``huggingface_hub``'s ``tqdm_class`` hook.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.auto import tqdm

from ...client.codes import ErrorCode
from ..hf_cache import cached_snapshot
from ..traits import read_json
from .types import CancelledFn, EngineError, JobCancelled

WEIGHT_EXTS = (".safetensors", ".bin")
CONFIG_EXTS = (".json", ".txt", ".model")  # configs, tokenizer vocabularies and merges, sentencepiece models
STANDARD_WEIGHTS = ("diffusion_pytorch_model", "model", "pytorch_model")  # diffusers' and transformers' names
SKIP_COMPONENTS = {"safety_checker", "image_encoder"}
ByteReport = Callable[[int, int], None]  # (done, total) bytes


def fetch(repo: str, want_fp16: bool, report: ByteReport, cancelled: CancelledFn, to: str | None = None) -> str:
    """Local snapshot folder of ``repo``, downloading missing files; EngineError with the fix on failure.

    ``to``: a folder to download into (``easel download --to``) instead of the HF cache; there, no
    network is an error rather than a fall-back to the cache. Interrupted downloads resume."""
    try:
        if constants.HF_HUB_OFFLINE:
            if to is not None:
                raise EngineError("HF_HUB_OFFLINE is set; unset it to download", field="model",
                                  code=ErrorCode.MODEL_LOAD_FAILED)
            return _cached(repo, "HF_HUB_OFFLINE is set")
        where = {"local_dir": to} if to is not None else {}
        files = HfApi().list_repo_files(repo)
        if "model_index.json" not in files and "config.json" in files:  # one model, not a pipeline
            patterns = select_folder_files(files, "", want_fp16)
            return snapshot_download(repo, allow_patterns=patterns, tqdm_class=reporting_tqdm(report, cancelled),
                                     **where)
        from ..preprocess.annotators import REPO, files_needed  # here: preprocess imports the engine

        if repo == REPO:  # loose .pth files of many annotators: only those the server's annotators load
            return snapshot_download(repo, allow_patterns=files_needed(), tqdm_class=reporting_tqdm(report, cancelled),
                                     **where)
        index_path = hf_hub_download(repo, "model_index.json", **where)
    except GatedRepoError:
        raise EngineError(f"model {repo!r} is gated: accept its licence on huggingface.co and log in with "
                          "`hf auth login`", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise EngineError(f"model {repo!r} does not exist on the Hugging Face hub (or is private: log in with "
                          "`hf auth login`); check the id", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None
    except EntryNotFoundError as exc:
        if isinstance(exc, LocalEntryNotFoundError):  # the hub could not be reached (a subclass!)
            return _unreachable(repo, exc, to)
        raise EngineError(f"model {repo!r} has neither a model_index.json (a diffusers pipeline) nor a config.json "
                          "(one model, such as a ControlNet); download its .safetensors file and serve that file "
                          "instead", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None
    except EngineError:
        raise
    except Exception as exc:  # connection trouble: fall back to the cache
        return _unreachable(repo, exc, to)
    patterns = select_files(read_json(index_path) or {}, files, want_fp16)
    return snapshot_download(repo, allow_patterns=patterns, tqdm_class=reporting_tqdm(report, cancelled), **where)


def kind_of(folder: str) -> str:
    """What a downloaded folder holds: "pipeline" (model_index.json), "controlnet", "tiny_vae" (a TAESD
    decoder, engine/tiny_vae.py) or "model" (another)."""
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        return "pipeline"
    name = str((read_json(os.path.join(folder, "config.json")) or {}).get("_class_name", ""))
    return "controlnet" if name.startswith("ControlNet") else "tiny_vae" if name == "AutoencoderTiny" else "model"


def _unreachable(repo: str, exc: Exception, to: str | None) -> str:
    """No hub: the cached snapshot (serving), or an error that says to try again (``easel download``)."""
    if to is not None:
        raise EngineError(f"cannot reach the Hugging Face hub ({type(exc).__name__}: {str(exc)[:200]}); check the "
                          "connection and run the command again (finished files are kept)", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED) from None
    return _cached(repo, f"{type(exc).__name__}: {exc}")


def config_files(repo: str) -> str:
    """A local folder with ``repo``'s json/txt files only (a single file's ``#config=`` hub id)."""
    patterns = ["*.json", "*/*.json", "*/*.txt"]
    try:
        if not constants.HF_HUB_OFFLINE:
            try:
                return snapshot_download(repo, allow_patterns=patterns)
            except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
                raise
            except Exception:  # connection trouble: the cache may still have it
                pass
        return snapshot_download(repo, allow_patterns=patterns, local_files_only=True)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as exc:
        raise EngineError(f"its configs are neither in the Hugging Face cache nor reachable ({type(exc).__name__}); "
                          f"run `hf download {repo} --include '*.json' '*.txt'` once, or give a local diffusers "
                          "folder", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None


def _cached(repo: str, why: str) -> str:
    folder = cached_snapshot(repo)
    if folder is None:
        raise EngineError(
            f"model {repo!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub cannot be "
            f"reached ({why}); connect once so it downloads, or fetch it with `hf download {repo}`",
            field="model", code=ErrorCode.MODEL_LOAD_FAILED)
    return folder


def select_files(index: dict, files: list[str], want_fp16: bool) -> list[str]:
    """Exact repo paths (usable as allow_patterns) of the files a diffusers pipeline needs."""
    keep = ["model_index.json"]
    components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, (list, tuple))
                  and len(v) == 2 and v[0] is not None and k not in SKIP_COMPONENTS]
    for comp in components:
        keep += select_folder_files(files, comp + "/", want_fp16)
    return keep


def select_folder_files(files: list[str], folder: str, want_fp16: bool) -> list[str]:
    """The files of one model folder (``folder``: "unet/", or "" for a repository's top): its configs and
    one set of weights (safetensors over .bin; the fp16 variant when wanted or the only one)."""
    inside = [f for f in files if f.startswith(folder) and f.count("/") == folder.count("/")]
    keep = [f for f in inside if f.endswith(CONFIG_EXTS)]
    weights = [f for f in inside if f.endswith(".safetensors")] or [f for f in inside if f.endswith(".bin")]
    fp16 = [f for f in weights if ".fp16" in f.split("/")[-1]]
    plain = [f for f in weights if "." not in f.split("/")[-1].rsplit(".", 1)[0]]
    chosen = fp16 if (want_fp16 and fp16) or not plain else plain
    # the library's own file name when it is there: not a repository's extra variants (…_promax.safetensors);
    # otherwise every file chosen (the shards of a sharded model)
    standard = [f for f in chosen if f.split("/")[-1].split(".")[0] in STANDARD_WEIGHTS]
    return keep + (standard or chosen)


def reporting_tqdm(report: ByteReport, cancelled: CancelledFn) -> type:
    """A silent tqdm class that forwards byte counts (throttled) and raises JobCancelled when asked."""
    state = {"done": 0, "total": 0, "last": 0.0}

    class _Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            self._is_bytes = kwargs.get("unit") == "B"
            super().__init__(*args, **kwargs)
            self._count = kwargs.get("initial") or 0

        def update(self, n: float | None = 1) -> bool | None:
            if cancelled():
                raise JobCancelled()
            if self._is_bytes:
                self._count += n or 0
                state["done"] = max(state["done"], int(self._count))
                state["total"] = max(state["total"], int(self.total or 0))
                now = time.monotonic()
                if now - state["last"] > 0.25 or state["done"] >= state["total"] > 0:
                    state["last"] = now
                    report(state["done"], state["total"])
            return None

    return _Reporting
