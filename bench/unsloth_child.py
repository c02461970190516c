"""Child process of one Unsloth peer of bench/train_throughput.py (started by its child_command).

Unsloth patches transformers, peft and trl when it is imported, so it is imported here before
bench.train_throughput pulls those in. Where it cannot be imported (no CUDA GPU, the package set of
scripts/unsloth_wheels.sh not on PYTHONPATH), the run's JSON gets a one-line reason instead of a traceback.
Not run by hand; bench.train_throughput starts it as

    python -m bench.unsloth_child --config bench/configs/qwen2_vl_2b.json --variants unsloth \
        --_child /tmp/run_unsloth.json      # with PYTHONPATH=/tmp/site_unsloth first
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", action="append")
    p.add_argument("--_child", required=True)
    known, _ = p.parse_known_args(argv)
    variant = known.variants[-1][0]  # child_command appends this child's variant last
    try:
        import unsloth  # noqa: F401  heavy optional: only the Unsloth peers use it, before transformers
    except Exception as e:  # Unsloth raises NotImplementedError/ImportError/RuntimeError without a GPU
        first = (str(e).strip().splitlines() or [""])[0][:200]
        Path(known._child).write_text(json.dumps(
            {"variant": variant, "error": f"unsloth unavailable: {type(e).__name__}: {first}"}))
        return
    from bench.train_throughput import main as run  # after unsloth, on purpose

    run(argv)


if __name__ == "__main__":
    main()
