"""The package's modules: no import cycle, each importable on its own, none too long to read.

What the cycle check counts as an edge ``A -> B`` (read statically with :mod:`ast` from the source,
so a cycle that today's import order happens to survive is still caught):

* every ``import B`` / ``from B import x`` in ``A``, at any depth (module level, inside functions,
  under ``if TYPE_CHECKING``), relative imports resolved, where ``B`` is a module of ``qcamo_jax``;
  ``from P import x`` counts as ``P.x`` when ``P.x`` is a module;
* the packages ``B`` sits in, except those ``A`` sits in itself: importing ``qcamo_jax.p.m`` runs
  ``qcamo_jax/p/__init__.py`` first, while ``A``'s own parents are already imported before ``A`` runs.

Not counted: ``importlib.import_module`` with a computed name (``cli.py`` loads its subcommands so).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "qcamo_jax"
#: The longest a module of the package may be (lines): the project's "rooms a reader can find" rule (issue 15).
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module and package of qcamo_jax."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``name`` (at ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules)
    own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges = set()
    for target in found:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix not in own_parents and prefix != name:
                edges.add(prefix)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_edges_include_function_level_and_parent_package_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from qcamo_jax.pipeline import runner\n    from . import record\n")
    modules = _modules()
    edges = _imported("qcamo_jax.report", src, modules)
    assert {"qcamo_jax.pipeline", "qcamo_jax.pipeline.runner", "qcamo_jax.record"} <= edges
    assert "qcamo_jax" not in edges  # the importer's own package is already imported


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "qcamo_jax.record" in graph["qcamo_jax.report"]  # the graph sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _importable_modules() -> list[str]:
    """Every module of the package except ``qcamo_jax.__main__`` (importing it runs the command line)."""
    return [n for n in sorted(_modules()) if not n.endswith(".__main__")]


def _run_fresh_python(script: str) -> subprocess.CompletedProcess:
    """``script`` in a new interpreter at the repository root (nothing of this process imported)."""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_module_imports_on_its_own():
    """Each module imported first, with no other module of the package loaded (third-party ones stay).

    ``qcamo_jax.__main__`` is left out: importing it runs the command line.
    """
    names = _importable_modules()
    script = (
        "import importlib, sys, traceback\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for n in names:\n"
        "    for m in [m for m in sys.modules if m == 'qcamo_jax' or m.startswith('qcamo_jax.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{n}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = _run_fresh_python(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_longer_than_a_reader_can_hold(name):
    lines = _modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}): split it by concept"


def test_importing_the_package_and_parsing_the_cli_start_no_jax_backend():
    """A multi-host run must call ``jax.distributed.initialize`` before any backend starts; so importing
    every module and parsing ``qcamo attack`` (whose option rules import the JPEG package) must not start
    one (a module-level ``jnp`` computation would: that was the failure of tests/test_cli_multihost.py)."""
    names = _importable_modules()
    script = (
        "import importlib, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "from qcamo_jax import cli\n"
        "cli.build_parser().parse_args(['attack', 'examples', '--out', '/nonexistent/o', '--survive', 'common',\n"
        "                               '--max-l2', '5', '--min-psnr', '30'])\n"
        "from jax._src import xla_bridge\n"
        "started = sorted(xla_bridge._backends)\n"
        "print(started)\n"
        "sys.exit(1 if started else 0)\n"
    )
    proc = _run_fresh_python(script)
    assert proc.returncode == 0, "a JAX backend started at import/parse time: " + proc.stdout + proc.stderr[-3000:]
