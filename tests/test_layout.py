"""The package's architecture, checked from its source: every import runs down the floors
(core -> pipelines -> report -> validation -> cli), no module is over ~500 lines and no function over
~80, except where the module's docstring says why."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wsca_jax")
FLOORS = {  # top-level part of wsca_jax -> floor
    **dict.fromkeys(["__init__", "errors", "config", "checks", "io", "progress", "sharding", "tasks", "wsc", "stats",
                     "metrics", "probes", "lazy", "use", "use_resampling"], 0),
    **dict.fromkeys(["analysis", "training", "ifa", "mitigation"], 1),
    "report": 2, "validation": 3, "cli": 4,
}
MAX_MODULE, MAX_FUNCTION = 500, 80


def _modules():
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield rel, path


def _part(module: str) -> str:
    return module.split(".")[0]


def _imports(rel: str, tree: ast.AST) -> set[str]:
    """Top-level parts of wsca_jax that module ``rel`` imports (anywhere in it, functions included)."""
    pkg = rel.split(".")[:-1] if not rel.endswith("__init__") else rel.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    out.add(target[0])
                else:                                           # from . import x (at the top level)
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("wsca_jax."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("wsca_jax."))
    return out


def test_every_import_runs_down_the_floors():
    up = []
    for rel, path in _modules():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        mine = FLOORS[_part(rel)]
        for target in _imports(rel, tree):
            if target in FLOORS and FLOORS[target] > mine and _part(rel) != "__init__":
                up.append(f"{rel} (floor {mine}) imports {target} (floor {FLOORS[target]})")
    assert not up, "\n".join(up)


def test_modules_and_functions_are_small_or_say_why():
    long = []
    for rel, path in _modules():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree) or ""
        n = len(text.splitlines())
        if n > MAX_MODULE and "lines because" not in doc:
            long.append(f"{rel}: {n} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION and f"{node.name} is long because" not in doc:
                    long.append(f"{rel}.{node.name}: {length} lines")
    assert not long, "\n".join(long)


def test_the_checks_can_fail(tmp_path):
    """The import walker sees relative, absolute and function-level imports."""
    tree = ast.parse("from ..report import x\nimport wsca_jax.cli.common\ndef f():\n    from .stages import y\n")
    assert _imports("analysis.pipeline", tree) == {"report", "cli", "analysis"}
    assert _imports("wsc", ast.parse("from . import sharding\nfrom .probes import z\n")) == {"sharding", "probes"}
    with pytest.raises(KeyError):
        FLOORS["nonexistent"]


def test_the_cli_parser_does_not_import_what_analyze_does_not_need():
    """Building ``wsca``'s parser imports neither Flax nor scikit-learn, pandas or SciPy (the package
    faces load their modules on first use): every command starts in about a second."""
    import subprocess
    import sys
    code = ("import sys\nfrom wsca_jax.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('flax', 'optax', 'orbax', 'sklearn', 'pandas', 'scipy', 'matplotlib',"
            " 'tensorflow_datasets') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
