"""Install or package the editor plugins with the shared client bundled in.

The client side lives once, in the ``easel.client`` package; installing copies that package whole
into the plugin as its ``shared`` package, next to a pure-Python copy of ``websockets`` in ``vendor/``.

    Krita: <pykrita>/easel_krita.desktop + <pykrita>/easel_krita/{plugin…, shared/, vendor/}; enabled in kritarc
    GIMP:  <plug-ins>/easel_gimp/{easel_gimp.py (executable), …, shared/, vendor/}

The plugin sources come from the installed wheel (``easel/plugins/<editor>``, put there by setup.py)
or, in a checkout or editable install, from the repository's ``plugin_krita/`` and ``plugin_gimp/``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CLIENT = PACKAGE / "client"
EDITORS = ("krita", "gimp")
PLUGIN_PACKAGE = {"krita": "easel_krita", "gimp": "easel_gimp"}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.pyd", "shared", "vendor")


def plugin_source(editor: str) -> Path:
    """The folder holding ``editor``'s plugin: inside the installed wheel, else the checkout's."""
    packaged = PACKAGE / "plugins" / editor
    if packaged.is_dir():
        return packaged
    checkout = PACKAGE.parent.parent / f"plugin_{editor}"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the {editor} plugin is missing from this Easel installation ({packaged}); "
                            "reinstall Easel from its wheel")


def default_dest(editor: str) -> Path:
    """Where the editor looks for user plugins on this platform."""
    home = Path.home()
    if editor == "krita":
        if sys.platform == "win32":
            return Path(os.environ.get("APPDATA", home)) / "krita" / "pykrita"
        if sys.platform == "darwin":
            return home / "Library" / "Application Support" / "krita" / "pykrita"
        return Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "krita" / "pykrita"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home)) / "GIMP" / "3.0" / "plug-ins"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"
    return Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "GIMP" / "3.0" / "plug-ins"


def default_kritarc() -> Path:
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home)) / "kritarc"
    if sys.platform == "darwin":
        return home / "Library" / "Preferences" / "kritarc"
    return Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "kritarc"


def bundle_shared(package_dir: Path) -> None:
    """Copy the ``easel.client`` package whole into ``package_dir/shared`` and websockets into ``vendor``."""
    shared = package_dir / "shared"
    shutil.rmtree(shared, ignore_errors=True)
    shutil.copytree(CLIENT, shared, ignore=_IGNORE)
    import websockets

    vendor = package_dir / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    shutil.copytree(Path(websockets.__file__).parent, vendor / "websockets", ignore=_IGNORE)


def install_plugin(editor: str, dest: Path | None = None, kritarc: Path | None = None,
                   enable: bool = True) -> Path:
    """Install the plugin for ``editor`` into ``dest`` (default: the editor's user folder)."""
    if editor not in EDITORS:
        raise ValueError(f"unknown editor {editor!r}: choose one of {', '.join(EDITORS)}")
    dest = Path(dest) if dest else default_dest(editor)
    dest.mkdir(parents=True, exist_ok=True)
    source, name = plugin_source(editor), PLUGIN_PACKAGE[editor]
    target = dest / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source / name, target, ignore=_IGNORE)
    bundle_shared(target)
    if editor == "krita":
        shutil.copy2(source / f"{name}.desktop", dest / f"{name}.desktop")
        if enable:
            enable_in_kritarc(kritarc or default_kritarc())
        return target
    main = target / f"{name}.py"
    main.chmod(main.stat().st_mode | 0o755)
    return target


def enable_in_kritarc(path: Path) -> None:
    """Set ``enable_easel_krita=true`` in kritarc's ``[python]`` group, leaving every other line as it was.

    A line edit, not configparser: Krita writes keys before the first ``[group]`` header, which
    configparser rejects, and rewriting would reorder or drop what Krita wrote.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    section = None
    insert_at = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "python" and insert_at is None:
                insert_at = i
            section = stripped[1:-1]
            continue
        if section == "python" and stripped.split("=", 1)[0].strip() == "enable_easel_krita":
            lines[i] = "enable_easel_krita=true"
            break
    else:
        if section == "python" and insert_at is None:
            insert_at = len(lines)
        if insert_at is None:
            lines += ([""] if lines and lines[-1].strip() else []) + ["[python]", "enable_easel_krita=true"]
        else:
            while insert_at > 0 and not lines[insert_at - 1].strip():
                insert_at -= 1
            lines.insert(insert_at, "enable_easel_krita=true")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def package_plugin(editor: str, out: Path | None = None) -> Path:
    """Write a zip: for Krita, the layout Tools > Scripts > Import Python Plugin from File expects."""
    out = Path(out) if out else Path.cwd() / f"easel-{editor}-plugin.zip"
    with tempfile.TemporaryDirectory() as tmp:
        install_plugin(editor, Path(tmp), enable=False)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return out
