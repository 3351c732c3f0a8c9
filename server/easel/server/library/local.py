"""``easel models --local``: what is on disk, with no server running: the models folders' entries and
the diffusers pipelines in the Hugging Face cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .scan import Library


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


def local_models(folders: Sequence[str], hub: bool = True) -> list[dict[str, Any]]:
    """Every entry of ``folders`` (see Library) and, with ``hub``, the cached hub pipelines."""
    rows = [e.to_dict() for e in Library(folders).scan()] if folders else []
    return rows + (hub_pipelines() if hub else [])


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain table: kind, id, what it is, native size, size on disk; then its path or its problem."""
    if not rows:
        return "nothing found"
    lines = []
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        native = f"{r['native']}px" if r.get("native") else ""
        size = f"{r['size'] / 2**30:.2f} GiB" if r.get("size", 0) >= 2**30 else f"{r.get('size', 0) / 2**20:.0f} MiB"
        lines.append(f"{r['kind']:<11} {r['id']:<{width}}  {r['label']:<22} {native:>7} {size:>10}")
        where = f"problem: {r['problem']}" if r.get("problem") else r["path"]
        lines.append(f"{'':<11} {where}")
    return "\n".join(lines)


def counts(rows: list[dict[str, Any]]) -> str:
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    broken = sum(1 for r in rows if r.get("problem"))
    text = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in kinds.items())
    return text + (f"; {broken} cannot be used (see 'problem')" if broken else "") if text else "nothing found"


