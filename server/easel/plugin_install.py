r"""Install or package the editor plugins with the shared client bundled in.

The client side lives once, in the ``easel.client`` package; installing copies that package whole
into the plugin as its ``shared`` package, next to a pure-Python copy of ``websockets`` in ``vendor/``.

    Krita: <pykrita>/easel_krita.desktop + <pykrita>/easel_krita/{plugin…, shared/, vendor/}; enabled in kritarc
    GIMP:  <plug-ins>/easel_gimp/{easel_gimp.py (executable), …, shared/, vendor/}

Where each editor reads user plugins is a pure function of (platform, environment, home)
(``plugin_dir``, ``kritarc_path``), so every platform is testable anywhere:

    Krita 5.1–5.3  Linux  $XDG_DATA_HOME/krita/pykrita (default ~/.local/share)
                   Win    %APPDATA%\krita\pykrita
                   macOS  ~/Library/Application Support/krita/pykrita
           kritarc Linux  $XDG_CONFIG_HOME/kritarc (default ~/.config); Win %LOCALAPPDATA%\kritarc;
                   macOS  ~/Library/Preferences/kritarc
    GIMP 3.x       Linux  $XDG_CONFIG_HOME/GIMP/3.x/plug-ins (default ~/.config)
                   Win    %APPDATA%\GIMP\3.x\plug-ins
                   macOS  ~/Library/Application Support/GIMP/3.x/plug-ins
                   any    $GIMP3_DIRECTORY/plug-ins when that is set (a relative one is under home)

GIMP keeps one profile per minor version (3.0 and 3.2 apart), so by default the plug-in goes into
every GIMP 3.x profile that exists, and into 3.0's when none does (a later 3.x copies 3.0's
profile when it first starts); ``gimp_version`` picks one version, or "all". An empty environment
variable counts as unset, and so does a relative XDG or AppData one (the XDG spec calls it invalid).

The plugin sources come from the installed wheel (``easel/plugins/<editor>``, put there by setup.py)
or, in a checkout or editable install, from the repository's ``plugin_krita/`` and ``plugin_gimp/``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from .plugin_settings import record_server, set_in_kritarc

PACKAGE = Path(__file__).resolve().parent
CLIENT = PACKAGE / "client"
EDITORS = ("krita", "gimp")
PLUGIN_PACKAGE = {"krita": "easel_krita", "gimp": "easel_gimp"}
KRITA_VERSIONS = ("5.1", "5.2", "5.3")
GIMP_VERSIONS = ("3.0", "3.2")
DEFAULT_GIMP_VERSION = "3.0"
_GIMP_VERSION = re.compile(r"3\.(\d|[1-8]\d|9[0-8])")  # 3.0 … 3.98; 3.99 is GIMP 4's development series
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


# -- where the editors look (pure: platform, environment and home in, a path out) ----------------
def _flavour(platform: str) -> type[PurePath]:
    return PureWindowsPath if platform == "win32" else PurePosixPath


def _env_dir(env: Mapping[str, str], name: str, platform: str) -> PurePath | None:
    """``$name`` as an absolute folder; None when unset, empty or relative."""
    value = env.get(name, "")
    path = _flavour(platform)(value) if value else None
    return path if path is not None and path.is_absolute() else None


def _config_home(platform: str, env: Mapping[str, str], home: str | PurePath) -> PurePath:
    """The folder GIMP keeps its profiles in: XDG config (Linux), roaming AppData, Application Support."""
    h = _flavour(platform)(home)
    if platform == "win32":
        return _env_dir(env, "APPDATA", platform) or h / "AppData" / "Roaming"
    if platform == "darwin":
        return h / "Library" / "Application Support"
    return _env_dir(env, "XDG_CONFIG_HOME", platform) or h / ".config"


def check_version(editor: str, version: str) -> str:
    """``version`` if Easel supports that editor version, else ValueError saying which are."""
    if editor == "krita":
        if version not in KRITA_VERSIONS:
            raise ValueError(f"Krita {version} is not supported: the plugin is made for Krita "
                             f"{', '.join(KRITA_VERSIONS)}")
        return version
    if not _GIMP_VERSION.fullmatch(version):
        raise ValueError(f"GIMP version {version!r} is not supported: Easel needs GIMP 3 "
                         f"(--gimp-version {', '.join(GIMP_VERSIONS)}, a later 3.x, or all)")
    return version


def plugin_dir(editor: str, platform: str, env: Mapping[str, str], home: str | PurePath,
               version: str | None = None) -> PurePath:
    """The folder ``editor`` (``version``: Krita 5.1–5.3, the same folder; GIMP default 3.0) reads user
    plugins from on ``platform`` (a ``sys.platform`` value; anything not Windows or macOS is XDG)."""
    h = _flavour(platform)(home)
    if editor == "krita":
        check_version("krita", version or KRITA_VERSIONS[-1])
        if platform == "win32":
            data = _env_dir(env, "APPDATA", platform) or h / "AppData" / "Roaming"
        elif platform == "darwin":
            data = h / "Library" / "Application Support"
        else:
            data = _env_dir(env, "XDG_DATA_HOME", platform) or h / ".local" / "share"
        return data / "krita" / "pykrita"
    if editor != "gimp":
        raise ValueError(f"unknown editor {editor!r}: choose one of {', '.join(EDITORS)}")
    version = check_version("gimp", version or DEFAULT_GIMP_VERSION)
    override = env.get("GIMP3_DIRECTORY", "")
    if override:
        profile = _flavour(platform)(override)
        return (profile if profile.is_absolute() else h / profile) / "plug-ins"
    return _config_home(platform, env, home) / "GIMP" / version / "plug-ins"


def kritarc_path(platform: str, env: Mapping[str, str], home: str | PurePath) -> PurePath:
    """Krita's settings file (the same for Krita 5.1–5.3)."""
    h = _flavour(platform)(home)
    if platform == "win32":
        return (_env_dir(env, "LOCALAPPDATA", platform) or h / "AppData" / "Local") / "kritarc"
    if platform == "darwin":
        return h / "Library" / "Preferences" / "kritarc"
    return (_env_dir(env, "XDG_CONFIG_HOME", platform) or h / ".config") / "kritarc"


def choose_gimp_versions(requested: str | None, existing: list[str]) -> list[str]:
    """Which GIMP profiles to install into: ``requested`` ("3.2", or "all" = 3.0, 3.2 and any other
    existing 3.x); by default every existing 3.x profile, or 3.0 when there is none."""
    key = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    found = sorted({v for v in existing if _GIMP_VERSION.fullmatch(v)}, key=key)
    if requested is None:
        return found or [DEFAULT_GIMP_VERSION]
    if requested == "all":
        return sorted(set(GIMP_VERSIONS) | set(found), key=key)
    return [check_version("gimp", requested)]


def gimp_profile_versions(platform: str, env: Mapping[str, str], home: str | PurePath) -> list[str]:
    """The GIMP 3.x profiles that exist on this machine (folder names under ``…/GIMP``)."""
    root = Path(str(_config_home(platform, env, home) / "GIMP"))
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if p.is_dir() and _GIMP_VERSION.fullmatch(p.name)]


# -- leftovers of installs from before the rename (pykrita/easel, plug-ins/easel) ----------------
def _says(path: Path, *needles: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return all(n in text for n in needles)


def easel_leftovers(editor: str, folder: Path) -> list[Path]:
    """What an Easel install from before the plugins were renamed left in ``folder``: only files that
    are clearly Easel's (the desktop file names library ``easel`` and Name=Easel; the package is the
    Easel plugin), so a second copy does not load next to the new one."""
    package = folder / "easel"
    if editor == "krita":
        desktop = folder / "easel.desktop"
        entries = {}
        if desktop.is_file():
            for line in desktop.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition("=")
                entries[key.strip()] = value.strip()
        desktop_ours = (entries.get("X-KDE-Library"), entries.get("Name")) == ("easel", "Easel") \
            and "Krita/PythonPlugin" in entries.get("ServiceTypes", "")
        package_ours = _says(package / "__init__.py", "Easel for Krita")
        if (desktop.exists() and not desktop_ours) or (package.exists() and not package_ours):
            return []  # a plugin of someone else's called "easel": leave both alone
        return [p for p in (desktop, package) if p.exists()]
    return [package] if _says(package / "easel.py", '"easel-generate"', "Gimp.PlugIn") else []


def remove_leftovers(editor: str, folder: Path) -> list[Path]:
    """Delete ``easel_leftovers``; returns what was removed."""
    found = easel_leftovers(editor, folder)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return found


# -- installing -----------------------------------------------------------------------------------
def bundle_shared(package_dir: Path) -> None:
    """Copy the ``easel.client`` package whole into ``package_dir/shared`` and websockets into ``vendor``."""
    shared = package_dir / "shared"
    shutil.rmtree(shared, ignore_errors=True)
    shutil.copytree(CLIENT, shared, ignore=_IGNORE)
    import websockets

    vendor = package_dir / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    shutil.copytree(Path(websockets.__file__).parent, vendor / "websockets", ignore=_IGNORE)


@dataclass
class Installed:
    """What ``install`` did: the plugin folders written, old copies removed, and notes for the user."""

    editor: str
    targets: list[Path]
    removed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # where the server command was recorded

    def lines(self) -> list[str]:
        what = "plugin" if self.editor == "krita" else "plug-in"
        return ([f"installed the Easel {self.editor} {what} in {t}" for t in self.targets]
                + [f"removed an older Easel copy that would load twice: {p}" for p in self.removed]
                + self.recorded + self.notes)


def install(editor: str, dest: Path | None = None, kritarc: Path | None = None, *, gimp_version: str | None = None,
            enable: bool = True, platform: str | None = None, env: Mapping[str, str] | None = None,
            home: Path | None = None, record: bool = True, serve_args: str | None = None) -> Installed:
    """Install the plugin for ``editor`` into ``dest``, or where the editor looks (GIMP: see the module
    docstring for which versions); removes leftovers of older installs there. ``platform``, ``env``
    and ``home`` default to this machine's. ``record``: write the command that starts this
    installation's server (and ``serve_args``, its extra arguments) into the plugin's settings
    (``easel.plugin_settings``)."""
    if editor not in EDITORS:
        raise ValueError(f"unknown editor {editor!r}: choose one of {', '.join(EDITORS)}")
    if gimp_version and editor != "gimp":
        raise ValueError("--gimp-version is for GIMP; Krita 5.1–5.3 all read the same pykrita folder")
    if gimp_version and dest:
        raise ValueError("--dest and --gimp-version both choose the folder: give one of them")
    if gimp_version and gimp_version != "all":
        check_version("gimp", gimp_version)
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home = home or Path.home()
    notes: list[str] = []
    if dest:
        folders = [Path(dest)]
    elif editor == "krita" or env.get("GIMP3_DIRECTORY"):
        folders = [Path(str(plugin_dir(editor, platform, env, home)))]
    else:
        existing = gimp_profile_versions(platform, env, home)
        versions = choose_gimp_versions(gimp_version, existing)
        folders = [Path(str(plugin_dir("gimp", platform, env, home, v))) for v in versions]
        if not existing and gimp_version is None:
            notes.append(f"no GIMP 3 profile found yet, so this is GIMP {DEFAULT_GIMP_VERSION}'s folder; with "
                         "GIMP 3.2 or later start it once, then run this again (or pass --gimp-version 3.2)")
    report = Installed(editor, [], notes=notes)
    for folder in folders:
        report.targets.append(_install_into(editor, folder))
        report.removed += remove_leftovers(editor, folder)
    rc = Path(kritarc) if kritarc else Path(str(kritarc_path(platform, env, home)))
    if editor == "krita" and enable:
        enable_in_kritarc(rc)
    if record:
        report.recorded = record_server(editor, report.targets, rc if editor == "krita" else None, serve_args)
    return report


def install_plugin(editor: str, dest: Path | None = None, kritarc: Path | None = None,
                   enable: bool = True, gimp_version: str | None = None, record: bool = False) -> Path:
    """``install``, returning the (first) plugin folder written; records no server command unless asked."""
    return install(editor, dest, kritarc, gimp_version=gimp_version, enable=enable, record=record).targets[0]


def _install_into(editor: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    source, name = plugin_source(editor), PLUGIN_PACKAGE[editor]
    target = dest / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source / name, target, ignore=_IGNORE)
    bundle_shared(target)
    if editor == "krita":
        shutil.copy2(source / f"{name}.desktop", dest / f"{name}.desktop")
    else:
        main = target / f"{name}.py"
        main.chmod(main.stat().st_mode | 0o755)
    return target


def enable_in_kritarc(path: Path) -> None:
    """Set ``enable_easel_krita=true`` in kritarc's ``[python]`` group, leaving every other line as it was."""
    set_in_kritarc(path, "python", {"enable_easel_krita": "true"})


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
