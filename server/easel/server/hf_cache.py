"""Reading the Hugging Face cache offline: a repo's snapshot folder, also when only some of its files are there.

Used by the engine's offline fetch (engine/hub.py), the preprocessors' weights and ``--ip-adapter`` hub ids.
"""

from __future__ import annotations

import os

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError


def cached_snapshot(repo: str) -> str | None:
    """``repo``'s snapshot folder in the Hugging Face cache, or None when it is not there.

    Also when only some of its files were fetched, as ``easel download`` does (only what Easel loads):
    huggingface_hub 1.x+ refuses such a snapshot offline (``IncompleteSnapshotError``) once it has cached
    the repo's file list, so the folder is then read from the cache's documented layout
    (``refs/main`` -> ``snapshots/<commit>``); loading it says which file is missing, if any."""
    try:
        return snapshot_download(repo, local_files_only=True)
    except LocalEntryNotFoundError as exc:
        if type(exc).__name__ != "IncompleteSnapshotError":
            return None
    from huggingface_hub.file_download import repo_folder_name

    folder = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo, repo_type="model"))
    try:
        with open(os.path.join(folder, "refs", "main"), encoding="utf-8") as f:
            snapshot = os.path.join(folder, "snapshots", f.read().strip())
    except OSError:
        return None
    return snapshot if os.path.isdir(snapshot) else None
