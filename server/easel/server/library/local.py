"""``easel models --local``: what is on disk, with no server running: the built-in demo model, the
models folders' entries and the diffusers pipelines in the Hugging Face cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..demo import DEMO_ID, WEIGHTS_DIR
from .scan import Library


def builtin_demo() -> dict[str, Any]:
    """The built-in demo model, always there and usable offline (docs/demo-model.md)."""
    weights, config = WEIGHTS_DIR / f"{DEMO_ID}.safetensors", WEIGHTS_DIR / f"{DEMO_ID}.json"
    try:
        native, size = json.loads(config.read_text())["native"], weights.stat().st_size
    except (OSError, ValueError, KeyError) as exc:
        native, size, problem = None, 0, f"its files in {WEIGHTS_DIR} are missing or damaged ({exc}); reinstall Easel"
    else:
        problem = None
    return {"id": DEMO_ID, "name": DEMO_ID, "kind": "checkpoint", "label": "built-in demo (toy)", "path": str(weights),
            "size": size, "native": native, "problem": problem, "format": "builtin",
            "note": f"built in, works offline: easel serve --model {DEMO_ID}"}


def hub_pipelines() -> list[dict[str, Any]]:
    """Diffusers pipelines in the Hugging Face cache (a snapshot holding model_index.json)."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:  # pragma: no cover
        return []
    try:
        info = scan_cache_dir()
    except (CacheNotFound, OSError):
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snapshots = [s for s in repo.revisions if any(f.file_name == "model_index.json" and
                                                       f.file_path.parent == s.snapshot_path for f in s.files)]
        if snapshots:
            newest = max(snapshots, key=lambda s: s.last_modified)
            out.append({"id": repo.repo_id, "name": repo.repo_id, "kind": "checkpoint", "label": "hub cache",
                        "path": str(newest.snapshot_path), "size": repo.size_on_disk, "problem": None,
                        "format": "hub"})
    return out


def local_models(folders: Sequence[str], hub: bool = True, builtin: bool = True) -> list[dict[str, Any]]:
    """With ``builtin`` the demo model, then every entry of ``folders`` (see Library) and, with ``hub``,
    the cached hub pipelines."""
    rows = [e.to_dict() for e in Library(folders).scan()] if folders else []
    return ([builtin_demo()] if builtin else []) + rows + (hub_pipelines() if hub else [])


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain table: kind, id, what it is, native size, size on disk; then its path, note or problem
    (no rows: no lines; ``counts`` says what was found)."""
    lines = []
    width = max((len(r["id"]) for r in rows), default=0)
    for r in rows:
        native = f"{r['native']}px" if r.get("native") else ""
        size = f"{r['size'] / 2**30:.2f} GiB" if r.get("size", 0) >= 2**30 else f"{r.get('size', 0) / 2**20:.0f} MiB"
        lines.append(f"{r['kind']:<11} {r['id']:<{width}}  {r['label']:<22} {native:>7} {size:>10}")
        where = f"problem: {r['problem']}" if r.get("problem") else r.get("note") or r["path"]
        lines.append(f"{'':<11} {where}")
    return "\n".join(lines)


def counts(rows: list[dict[str, Any]]) -> str:
    """One summary line: how many of each kind were found on disk (the built-in model apart)."""
    found = [r for r in rows if r.get("format") != "builtin"]
    builtin = ", ".join(r["id"] for r in rows if r.get("format") == "builtin")
    kinds: dict[str, int] = {}
    for r in found:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    broken = sum(1 for r in found if r.get("problem"))
    text = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in kinds.items())
    text = text + (f"; {broken} cannot be used (see 'problem')" if broken else "") if text else \
        "nothing found in the models folders or the Hugging Face cache"
    return text + (f"; built in: {builtin}" if builtin else "")


