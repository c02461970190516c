"""The layering of docs/architecture.md, read from the source (ast), so that it stays true.

    medvl          the core: imports none of the stage folders
    data_process   imports medvl
    train, eval    import medvl and data_process, never each other
    bench, scripts, tests, result_statistic.py   on top

Imports inside functions count as much as those at module top (that is how circles used to hide)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERED = ("medvl", "data_process", "train", "eval")
ALLOWED = {
    "medvl": set(),
    "data_process": {"medvl"},
    "train": {"medvl", "data_process"},
    "eval": {"medvl", "data_process"},
}
TOP = ("bench", "scripts", "tests", "result_statistic", "docs")


def _package_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, top-level package of a repo import, inside a function?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name.split(".")[0], in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.lineno, child.module.split(".")[0], in_function))
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                found.append((child.lineno, "<relative>", in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _violations(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, target, _ in _package_imports(path):
            rel = path.relative_to(ROOT)
            if target == "<relative>":
                out.append(f"{rel}:{line}: relative import (the repo imports by absolute module path)")
            elif (target in LAYERED or target in TOP) and target != package and target not in ALLOWED[package]:
                out.append(f"{rel}:{line}: {package} imports {target}")
    return out


@pytest.mark.parametrize("package", LAYERED)
def test_each_layer_imports_only_downwards(package):
    assert _violations(package) == []


def test_the_checker_sees_a_hidden_upward_import(tmp_path):
    """The rule could fail: an import tucked inside a function is found, and so is one at the top."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom medvl.schema import x\n\ndef f():\n    from train.finetune import main\n")
    assert _package_imports(f) == [(1, "os", False), (2, "medvl", False), (5, "train", True)]


def test_the_core_needs_no_stage_folder_to_import():
    """medvl is importable with the stage folders absent from the path: nothing in it reaches up at run time."""
    import subprocess
    import sys

    code = ("import sys, importlib, pkgutil, medvl\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('train', 'eval', 'data_process', 'bench'):\n"
            "            raise ImportError('medvl reached up to ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "for m in pkgutil.walk_packages(medvl.__path__, 'medvl.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
