"""Every entry point answers --help with exit status 0 and shows at least one example invocation.

Entry points are found, not listed: every module under data_process/, train/, eval/, bench/ with a
`if __name__ == "__main__":` block, plus result_statistic.py, so a new one is checked the day it lands.
They run in-process (runpy, as `python -m` does) so torch/transformers are imported once for all of them.
"""
from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_process", "train", "eval", "bench")


def entry_points() -> list[str]:
    mods = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), flags=re.M):
                mods.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return mods + ["result_statistic.py"]


def run_help(target: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [target, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules" for imported modules
            try:
                if target.endswith(".py"):
                    runpy.run_path(str(ROOT / target), run_name="__main__")
                else:
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue()


def test_entry_points_found():
    found = entry_points()
    for mod in ("data_process.convert", "data_process.validate", "data_process.data_trans", "train.finetune",
                "train.merge_lora", "eval.generate", "eval.perplexity", "eval.report", "eval.report_check",
                "result_statistic.py"):
        assert mod in found


@pytest.mark.parametrize("target", entry_points())
def test_help_exits_0_with_an_example(target):
    code, text = run_help(target)
    assert code == 0, text[-2000:]
    assert "usage:" in text
    name = re.escape(target if target.endswith(".py") else target)
    invocation = re.compile(rf"^\s*(python3?|torchrun|deepspeed)\b.*(-m\s+{name}\b|\s{name}\b)" if not
                            target.endswith(".py") else rf"^\s*python3?\s+{name}\b")
    examples = [line for line in text.splitlines() if invocation.search(line)]
    assert examples, f"--help of {target} shows no example invocation:\n{text[:3000]}"
