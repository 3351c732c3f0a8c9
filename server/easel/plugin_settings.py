"""Writing the plugins' settings at install time: Krita's kritarc (a line edit) and GIMP's
``easel-gimp.json``, and recording there how to start this installation's server.

What is recorded (keys of ``easel.client.editing.server_command``): ``server_command``, the command
that starts the server of the Easel running ``install-plugin`` (its interpreter, ``-m easel serve``),
and, when ``--serve-args`` is given, ``server_args``. "Start a local server when needed"
(``server_autostart``) is left as the painter set it (on when never set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .client.editing.server_command import ARGS_KEY, COMMAND_KEY, recorded_command

GIMP_SETTINGS = "easel-gimp.json"  # the plug-in's settings file in a GIMP profile (easel_gimp/easel_jobs.py)
KRITA_GROUP = "easel"  # kritarc group of the Krita plugin's settings (easel_krita/controller.py)


def kconfig_escape(value: str) -> str:
    """A value as KConfig (kritarc) reads it back unchanged: backslashes (Windows paths), line breaks
    and blanks at either end escaped."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\s" + out[1:]
    if out.endswith(" ") and len(out) > 1:
        out = out[:-1] + "\\s"
    return out


def set_in_kritarc(path: Path, group: str, values: dict[str, str]) -> None:
    """Set ``key=value`` (escaped) in kritarc's ``[group]``, leaving every other line as it was.

    A line edit, not configparser: Krita writes keys before the first ``[group]`` header, which
    configparser rejects, and rewriting would reorder or drop what Krita wrote.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for key, value in values.items():
        _set_line(lines, group, key, kconfig_escape(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _set_line(lines: list[str], group: str, key: str, value: str) -> None:
    section = None
    insert_at = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == group and insert_at is None:
                insert_at = i
            section = stripped[1:-1]
            continue
        if section == group and stripped.split("=", 1)[0].strip() == key:
            lines[i] = f"{key}={value}"
            return
    if section == group and insert_at is None:
        insert_at = len(lines)
    if insert_at is None:
        lines += ([""] if lines and lines[-1].strip() else []) + [f"[{group}]", f"{key}={value}"]
        return
    while insert_at > 0 and not lines[insert_at - 1].strip():
        insert_at -= 1
    lines.insert(insert_at, f"{key}={value}")


def update_gimp_settings(profile: Path, values: dict[str, str]) -> Path:
    """Merge ``values`` into ``profile/easel-gimp.json`` (kept readable by this user only: it may
    hold server tokens); other keys stay."""
    path = profile / GIMP_SETTINGS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = {**(data if isinstance(data, dict) else {}), **values}
    profile.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    os.chmod(path, 0o600)
    return path


def server_values(serve_args: str | None, executable: str | None = None) -> dict[str, str]:
    """What to record: the command (always) and the extra arguments (when given)."""
    values = {COMMAND_KEY: recorded_command(executable)}
    if serve_args is not None:
        values[ARGS_KEY] = serve_args.strip()
    return values


def record_server(editor: str, targets: list[Path], kritarc: Path | None, serve_args: str | None,
                  executable: str | None = None) -> list[str]:
    """Record the server command in the editor's settings; lines saying where (or why not)."""
    values = server_values(serve_args, executable)
    what = f"the server command ({values[COMMAND_KEY]}" + (f" {values[ARGS_KEY]}" if values.get(ARGS_KEY) else "") + ")"
    if editor == "krita":
        if kritarc is None:
            return []
        set_in_kritarc(kritarc, KRITA_GROUP, values)
        return [f"recorded {what} in {kritarc}"]
    lines = []
    for target in targets:  # <profile>/plug-ins/easel_gimp
        if target.parent.name != "plug-ins":
            lines.append(f"not recording the server command: {target.parent} is not a GIMP profile's plug-ins "
                         "folder; set it in the Local server part of the Easel dialog")
            continue
        lines.append(f"recorded {what} in {update_gimp_settings(target.parent.parent, values)}")
    return lines
