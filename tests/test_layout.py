"""The package layout's rules: the client side stands alone, imports go one way, plugins bundle it whole."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import easel
from easel.plugin_install import CLIENT, install_plugin

PACKAGE = Path(easel.__file__).resolve().parent


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) for every import statement in a file; level 0 = absolute."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
    return out


def test_client_imports_only_stdlib_websockets_and_itself():
    """easel.client is copied under another name into the plugins: only relative imports inside it,
    the standard library and websockets; never easel.server."""
    allowed = set(sys.stdlib_module_names) | {"websockets", "__future__"}
    for path in CLIENT.rglob("*.py"):
        depth = len(path.relative_to(CLIENT).parts) - 1  # how many ".." stay inside the package
        for level, module in _imports(path):
            where = f"{path.relative_to(PACKAGE)}: import {'.' * level}{module}"
            if level == 0:
                assert module.split(".")[0] in allowed, where
            else:
                assert level - 1 <= depth, f"{where} leaves easel.client"


def test_server_side_never_imported_by_client_at_runtime():
    import subprocess

    code = "import sys, easel.client.editing, easel.client.connection; print(sorted(m for m in sys.modules if m.startswith('easel.server')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plugins_bundle_the_whole_client_package(tmp_path):
    """Every file of easel.client lands in each plugin's shared/, byte for byte: no hand-kept list."""
    want = {p.relative_to(CLIENT): p.read_bytes() for p in CLIENT.rglob("*.py")}
    for editor, name in (("krita", "easel_krita"), ("gimp", "easel_gimp")):
        target = install_plugin(editor, tmp_path / editor, kritarc=tmp_path / "kritarc")
        shared = target / "shared"
        got = {p.relative_to(shared): p.read_bytes() for p in shared.rglob("*.py")}
        assert got == want, editor
        assert target.name == name


def test_repository_keeps_no_second_copy_of_the_client():
    repo = PACKAGE.parent.parent
    for folder in ("plugin_krita", "plugin_gimp"):
        assert not list((repo / folder).rglob("shared")), f"{folder} must not hold a copy of easel.client"
        assert not list((repo / folder).rglob("protocol.py"))


def _module_graph() -> dict[str, set[str]]:
    """easel's modules and the easel modules each one imports (top-level and inside functions)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        mods[".".join(parts)] = (path, path.name == "__init__.py")
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        pkg = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" for a in node.names] + [module]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # a package's __init__ and its own submodules are one unit
                if t and t != name and not t.startswith(name + ".") and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def test_imports_go_one_way():
    """No import cycles between easel's modules, counting imports hidden inside functions."""
    graph = _module_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_library_never_imports_the_engine():
    """The models library (file headers, configs) stands below the engine: the engine asks it, never the
    other way round. What both need, the family type and a model's traits, imports neither."""
    graph = _module_graph()
    library = {m: deps for m, deps in graph.items() if m.startswith("easel.server.library")}
    assert library, "no library modules found"
    for module, deps in library.items():
        assert not [d for d in deps if d.startswith("easel.server.engine")], f"{module} imports the engine"
    shared = ("easel.server.families", "easel.server.family_specs", "easel.server.traits", "easel.server.builtin_models")
    for module in shared:
        assert graph[module] <= set(shared[:3]), f"{module} imports {graph[module]}"


def test_builtin_models_register_without_torch():
    """Importing the demo package registers the demo as a built-in model, and pulls in neither torch nor the
    engine (the library and the CLI import it for ``DEMO_ID``); the engine finds it through the registry."""
    import subprocess

    code = ("import sys, easel.server.demo as d, easel.server.library.local; "
            "from easel.server import builtin_models as b; "
            "print(b.find(d.DEMO_ID) is d.DEMO, b.fallback().id, sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'diffusers') or m.startswith('easel.server.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "easel-demo", "[]"]
    engine = [d for m, deps in _module_graph().items() if m.startswith("easel.server.engine") for d in deps]
    assert not [d for d in engine if d.startswith("easel.server.demo.")], "the engine imports a demo module"
    for path in (PACKAGE / "server" / "engine").rglob("*.py"):  # nor reaches one by an import string
        assert "easel.server.demo" not in path.read_text(encoding="utf-8"), path.name


TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers (and the editors' own helper folders), never in a test module."""
    offenders = []
    for path in list(TESTS.glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(TESTS)} imports {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert offenders == []


def test_the_test_map_in_tests_readme_is_current():
    """Fails when a test module was added, removed or redescribed: run `cd tests && python -m helpers.readme`."""
    from helpers.readme import BEGIN, END, table

    text = (TESTS / "README.md").read_text(encoding="utf-8")
    assert text.split(BEGIN + "\n", 1)[1].split(END, 1)[0] == table(), "tests/README.md's map is stale"
