"""The layout's promises, checked on the source: storage has no import cycle, no module uses another module's
`_private` name, every `noqa` says why.

Read with `ast` (nothing is executed) except the fresh-interpreter import of each storage module.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "pages", "storage", "v1core", "tests", "bench")
STORAGE_MODULES = sorted(p.stem for p in (ROOT / "storage").glob("*.py") if p.stem != "__init__")

# Private names that a module may still use from another one. Each entry: (user file, owning module, name).
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def _sources() -> list[Path]:
    files: list[Path] = []
    for pkg in PACKAGES:
        files += [p for p in sorted((ROOT / pkg).rglob("*.py")) if "migrations" not in p.parts]
    return files


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ImportFrom reads from (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES or module == "streamlit_app"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, assignments, attributes it sets, parameters."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
    return names


def _private_uses(extra: dict[Path, str] | None = None) -> list[tuple[str, str, str, int]]:
    """(file, owning module, name, line) for every use of another project module's `_private` name (in the
    project's sources plus `extra` {path: source})."""
    texts = {p: p.read_text(encoding="utf-8") for p in _sources()} | dict(extra or {})
    trees = {p: ast.parse(text) for p, text in texts.items()}
    owners: dict[str, set[str]] = {}  # private name → project modules defining it
    for path, tree in trees.items():
        for name in _defined_names(tree):
            if name.startswith("_") and not name.startswith("__"):
                owners.setdefault(name, set()).add(_module_name(path))
    found = []
    for path, tree in trees.items():
        module, rel = _module_name(path), str(path.relative_to(ROOT))
        own = _defined_names(tree)
        modules: dict[str, str] = {}  # local name bound to a project module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(module, node, path)
                if not _is_project(src):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and src != module:
                        found.append((rel, src, alias.name, node.lineno))
                    sub = f"{src}.{alias.name}"  # `from pkg import module`, else a class or function of src
                    modules[alias.asname or alias.name] = sub if _is_module(sub) else src
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_project(alias.name):
                        modules[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Name) and value.id in modules:  # module._name / ImportedClass._name
                found.append((rel, modules[value.id], node.attr, node.lineno))
            elif node.attr not in own and owners.get(node.attr, set()) - {module}:  # obj._name of another module
                found.append((rel, sorted(owners[node.attr])[0], node.attr, node.lineno))
    return found


def test_no_module_uses_another_modules_private_names():
    found = [(f, m, n, line) for f, m, n, line in _private_uses() if (f, m, n) not in ALLOWED_PRIVATE]
    assert not found, "private names used across modules (make them public or move them):\n" + "\n".join(
        f"{f}:{line}: {m}.{n}" for f, m, n, line in found)


def test_the_private_name_check_sees_reach_ins():
    """The scanner flags `from m import _x`, `m._x` and `obj._x` of another module (not only clean code)."""
    probe = ("from storage.store import _insert_ignore\nimport storage.codec as c\n"
             "def f(store):\n    c._F16_MIN_NORMAL\n    return store._visible_trace\n")
    uses = {(n, m) for f, m, n, _ in _private_uses({ROOT / "tests" / "probe.py": probe}) if f == "tests/probe.py"}
    assert ("_insert_ignore", "storage.store") in uses
    assert ("_F16_MIN_NORMAL", "storage.codec") in uses
    assert ("_visible_trace", "storage.store") in uses


def _storage_import_graph() -> dict[str, set[str]]:
    """storage module → the storage modules it imports at run time (anywhere in the file; not TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "storage").glob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                src = _resolve(module, node, path)
                targets = [src] + [f"{src}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t.startswith("storage.") and _is_module(t)}
        graph[module] = deps - {module}
    return graph


def test_storage_has_no_import_cycle():
    graph = _storage_import_graph()
    assert "storage.export" not in graph["storage.store"] and "storage.importer" not in graph["storage.store"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle in storage: " + " → ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("module", STORAGE_MODULES)
def test_each_storage_module_imports_alone(module):
    """In a fresh interpreter, importing any one storage module first works (no order-dependent imports)."""
    r = subprocess.run([sys.executable, "-c", f"import storage.{module}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")


def test_every_noqa_says_why():
    bare = []
    for path in _sources():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = NOQA.search(line)
            if m and not re.match(r":\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S", m.group("rest")):
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "noqa without a reason (write the codes, then ' - ' and why):\n" + "\n".join(bare)
