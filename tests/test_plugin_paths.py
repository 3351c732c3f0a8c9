"""Where `easel install-plugin` puts the plugins: every platform and editor version, env quirks, old copies.

The path logic is a pure function of (platform, environment, home), so Windows and macOS are
checked here on any machine; installing itself is checked on this machine's filesystem.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from easel.plugin_install import (
    GIMP_VERSIONS,
    KRITA_VERSIONS,
    choose_gimp_versions,
    easel_leftovers,
    install,
    install_plugin,
    kritarc_path,
    plugin_dir,
)

WIN_HOME = PureWindowsPath(r"C:\Users\ann")
WIN_ENV = {"APPDATA": r"C:\Users\ann\AppData\Roaming", "LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}
MAC_HOME = PurePosixPath("/Users/ann")
LINUX_HOME = PurePosixPath("/home/ann")


# -- Krita 5.1–5.3 ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KRITA_VERSIONS)
@pytest.mark.parametrize("platform, env, home, pykrita, kritarc", [
    ("linux", {}, LINUX_HOME, "/home/ann/.local/share/krita/pykrita", "/home/ann/.config/kritarc"),
    ("linux", {"XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/conf"}, LINUX_HOME, "/data/krita/pykrita",
     "/conf/kritarc"),
    ("linux", {"XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}, LINUX_HOME, "/home/ann/.local/share/krita/pykrita",
     "/home/ann/.config/kritarc"),  # empty = unset
    ("linux", {"XDG_DATA_HOME": "rel/data", "XDG_CONFIG_HOME": "conf"}, LINUX_HOME,
     "/home/ann/.local/share/krita/pykrita", "/home/ann/.config/kritarc"),  # relative = invalid (XDG spec)
    ("freebsd14", {}, LINUX_HOME, "/home/ann/.local/share/krita/pykrita", "/home/ann/.config/kritarc"),
    ("darwin", {"XDG_DATA_HOME": "/ignored"}, MAC_HOME, "/Users/ann/Library/Application Support/krita/pykrita",
     "/Users/ann/Library/Preferences/kritarc"),
])
def test_krita_paths_on_unix_and_macos(platform, env, home, pykrita, kritarc, version):
    assert plugin_dir("krita", platform, env, home, version) == PurePosixPath(pykrita)
    assert kritarc_path(platform, env, home) == PurePosixPath(kritarc)


@pytest.mark.parametrize("version", KRITA_VERSIONS)
@pytest.mark.parametrize("env, pykrita, kritarc", [
    (WIN_ENV, r"C:\Users\ann\AppData\Roaming\krita\pykrita", r"C:\Users\ann\AppData\Local\kritarc"),
    ({"APPDATA": "D:\\Roam", "LOCALAPPDATA": "D:\\Loc"}, r"D:\Roam\krita\pykrita", r"D:\Loc\kritarc"),
    ({"APPDATA": "", "LOCALAPPDATA": ""}, r"C:\Users\ann\AppData\Roaming\krita\pykrita",
     r"C:\Users\ann\AppData\Local\kritarc"),
])
def test_krita_paths_on_windows(env, pykrita, kritarc, version):
    assert plugin_dir("krita", "win32", env, WIN_HOME, version) == PureWindowsPath(pykrita)
    assert kritarc_path("win32", env, WIN_HOME) == PureWindowsPath(kritarc)


# -- GIMP 3.0 and 3.2 ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", GIMP_VERSIONS)
@pytest.mark.parametrize("platform, env, home, base", [
    ("linux", {}, LINUX_HOME, PurePosixPath("/home/ann/.config/GIMP")),
    ("linux", {"XDG_CONFIG_HOME": "/conf"}, LINUX_HOME, PurePosixPath("/conf/GIMP")),
    ("linux", {"XDG_CONFIG_HOME": ""}, LINUX_HOME, PurePosixPath("/home/ann/.config/GIMP")),
    ("darwin", {}, MAC_HOME, PurePosixPath("/Users/ann/Library/Application Support/GIMP")),
    ("win32", WIN_ENV, WIN_HOME, PureWindowsPath(r"C:\Users\ann\AppData\Roaming\GIMP")),
    ("win32", {"APPDATA": ""}, WIN_HOME, PureWindowsPath(r"C:\Users\ann\AppData\Roaming\GIMP")),
])
def test_gimp_reads_plug_ins_from_its_minor_versions_profile(platform, env, home, base, version):
    assert plugin_dir("gimp", platform, env, home, version) == base / version / "plug-ins"


def test_gimp_default_version_is_3_0_and_gimp3_directory_wins():
    assert plugin_dir("gimp", "linux", {}, LINUX_HOME) == PurePosixPath("/home/ann/.config/GIMP/3.0/plug-ins")
    for version in GIMP_VERSIONS:
        assert plugin_dir("gimp", "linux", {"GIMP3_DIRECTORY": "/p"}, LINUX_HOME, version) == PurePosixPath("/p/plug-ins")
    assert plugin_dir("gimp", "linux", {"GIMP3_DIRECTORY": "prof"}, LINUX_HOME) == PurePosixPath("/home/ann/prof/plug-ins")
    assert plugin_dir("gimp", "win32", {**WIN_ENV, "GIMP3_DIRECTORY": "E:\\g"}, WIN_HOME) == PureWindowsPath(r"E:\g\plug-ins")
    assert plugin_dir("gimp", "linux", {"GIMP3_DIRECTORY": ""}, LINUX_HOME, "3.2") == \
        PurePosixPath("/home/ann/.config/GIMP/3.2/plug-ins")


@pytest.mark.parametrize("editor, version, words", [
    ("gimp", "2.10", "Easel needs GIMP 3"), ("gimp", "3.99", "Easel needs GIMP 3"), ("gimp", "3", "GIMP 3"),
    ("krita", "4.4", "Krita 5.1, 5.2, 5.3"), ("paint", None, "choose one of krita, gimp"),
])
def test_unsupported_versions_are_refused(editor, version, words):
    with pytest.raises(ValueError, match=words):
        plugin_dir(editor, "linux", {}, LINUX_HOME, version)


@pytest.mark.parametrize("requested, existing, chosen", [
    (None, [], ["3.0"]),                      # no profile yet: 3.0's (a later 3.x copies it on first start)
    (None, ["3.2"], ["3.2"]),
    (None, ["3.2", "3.0", "2.10", "3.99", "notes"], ["3.0", "3.2"]),
    (None, ["3.10", "3.4"], ["3.4", "3.10"]),  # numeric order
    ("3.2", ["3.0"], ["3.2"]),
    ("all", [], ["3.0", "3.2"]),
    ("all", ["3.4"], ["3.0", "3.2", "3.4"]),
])
def test_gimp_version_choice(requested, existing, chosen):
    assert choose_gimp_versions(requested, existing) == chosen


def test_gimp_version_choice_refuses_gimp_2():
    with pytest.raises(ValueError, match="--gimp-version 3.0, 3.2"):
        choose_gimp_versions("2.10", [])


# -- installing on this machine -----------------------------------------------------------------
def test_install_gimp_goes_into_every_existing_profile(tmp_path):
    config = tmp_path / "conf"
    for version in ("3.0", "3.2"):
        (config / "GIMP" / version).mkdir(parents=True)
    report = install("gimp", platform="linux", env={"XDG_CONFIG_HOME": str(config)}, home=tmp_path / "home")
    assert report.targets == [config / "GIMP" / v / "plug-ins" / "easel_gimp" for v in ("3.0", "3.2")]
    for target in report.targets:
        assert (target / "easel_gimp.py").stat().st_mode & 0o111 and (target / "shared" / "connection.py").is_file()
    assert not report.notes and len(report.lines()) == 4  # two folders, and the server command recorded in each profile
    assert [line.rsplit(" in ", 1)[1] for line in report.recorded] == \
        [str(config / "GIMP" / v / "easel-gimp.json") for v in ("3.0", "3.2")]


def test_install_gimp_without_profile_uses_3_0_and_says_so(tmp_path):
    """(`tests/test_cli.py` checks the command with an empty XDG_CONFIG_HOME from another cwd.)"""
    home = tmp_path / "home"
    report = install("gimp", platform="linux", env={"XDG_CONFIG_HOME": ""}, home=home)
    assert report.targets == [home / ".config" / "GIMP" / "3.0" / "plug-ins" / "easel_gimp"]
    assert "--gimp-version 3.2" in report.notes[0]
    only = install("gimp", platform="linux", env={}, home=home, gimp_version="3.2")
    assert only.targets == [home / ".config" / "GIMP" / "3.2" / "plug-ins" / "easel_gimp"] and not only.notes


def test_install_refuses_contradictory_choices(tmp_path):
    with pytest.raises(ValueError, match="--gimp-version is for GIMP"):
        install("krita", tmp_path, gimp_version="3.2")
    with pytest.raises(ValueError, match="give one of them"):
        install("gimp", tmp_path, gimp_version="3.2")


# -- leftovers of the plugins' old name ---------------------------------------------------------
OLD_DESKTOP = ("[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library=easel\n"
               "X-Python-2-Compatible=false\nName=Easel\nComment=Local AI painting\n")


def _old_krita(pykrita: Path, desktop: str = OLD_DESKTOP, init: str = '"""Easel for Krita: local AI painting."""\n') -> None:
    (pykrita / "easel" / "shared").mkdir(parents=True)
    (pykrita / "easel" / "__init__.py").write_text(init)
    (pykrita / "easel.desktop").write_text(desktop)


def test_old_krita_copy_is_removed_so_only_one_loads(tmp_path):
    pykrita = tmp_path / "pykrita"
    _old_krita(pykrita)
    (pykrita / "other.desktop").write_text("X-KDE-Library=other\n")
    report = install("krita", pykrita, tmp_path / "kritarc")
    assert sorted(report.removed) == [pykrita / "easel", pykrita / "easel.desktop"]
    assert sorted(p.name for p in pykrita.iterdir()) == ["easel_krita", "easel_krita.desktop", "other.desktop"]
    assert any("older Easel copy" in line for line in report.lines())


@pytest.mark.parametrize("desktop, init", [
    (OLD_DESKTOP.replace("Name=Easel", "Name=Easel Tools"), '"""Easel for Krita"""'),  # someone else's "easel"
    (OLD_DESKTOP.replace("X-KDE-Library=easel", "X-KDE-Library=easel2"), '"""Easel for Krita"""'),
    (OLD_DESKTOP, '"""A different plugin that happens to be called easel."""'),
])
def test_krita_files_that_are_not_clearly_easels_stay(tmp_path, desktop, init):
    """Both old files must be Easel's (or missing): half a match means someone else's plugin."""
    pykrita = tmp_path / "pykrita"
    _old_krita(pykrita, desktop, init)
    assert install("krita", pykrita, tmp_path / "kritarc").removed == []
    assert {"easel", "easel.desktop"} <= {p.name for p in pykrita.iterdir()}


def test_old_krita_package_without_its_desktop_file_is_removed(tmp_path):
    pykrita = tmp_path / "pykrita"
    _old_krita(pykrita)
    (pykrita / "easel.desktop").unlink()
    assert install("krita", pykrita, tmp_path / "kritarc").removed == [pykrita / "easel"]


def test_old_gimp_copy_is_removed_only_when_it_is_easels(tmp_path):
    plug_ins = tmp_path / "plug-ins"
    (plug_ins / "easel").mkdir(parents=True)
    (plug_ins / "easel" / "easel.py").write_text(
        'COMMANDS = {"easel-generate": 1}\nclass EaselPlugIn(Gimp.PlugIn):\n    pass\n')
    assert easel_leftovers("gimp", plug_ins) == [plug_ins / "easel"]
    report = install("gimp", plug_ins)
    assert report.removed == [plug_ins / "easel"] and not (plug_ins / "easel").exists()
    (plug_ins / "easel").mkdir()
    (plug_ins / "easel" / "easel.py").write_text("# an unrelated plug-in named easel\nclass P(Gimp.PlugIn): pass\n")
    assert install("gimp", plug_ins).removed == [] and (plug_ins / "easel" / "easel.py").exists()


def test_new_install_is_not_mistaken_for_a_leftover(tmp_path):
    install_plugin("krita", tmp_path / "pykrita", tmp_path / "kritarc")
    install_plugin("gimp", tmp_path / "plug-ins")
    assert easel_leftovers("krita", tmp_path / "pykrita") == []
    assert easel_leftovers("gimp", tmp_path / "plug-ins") == []
