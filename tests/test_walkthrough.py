"""The README's walk-through, run verbatim from a folder outside the repository: the real VQA-RAD files, a SLAKE
release made from the shared sample, a tiny checkpoint standing in for the downloaded one. Only the block's first
line (the user's own paths) is replaced; every command after it runs as written."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def walkthrough_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)\n```", text, re.S)
    assert block, "README.md has no walk-through block"
    lines = block.group(1).splitlines()
    assert lines[0].startswith("export "), "the block's first line sets the user's paths"
    return lines[1:]


def slake_release(sample: Path, out: Path) -> Path:
    """train / validate / test files as SLAKE 1.0 ships them, split by image from the 24-image sample."""
    rows = json.loads((sample / "train.json").read_text(encoding="utf-8"))
    images = sorted({r["img_name"] for r in rows})
    out.mkdir()
    (out / "imgs").symlink_to(sample / "imgs")
    for name, keep in {"train": images[:16], "validate": images[16:20], "test": images[20:]}.items():
        (out / f"{name}.json").write_text(json.dumps([r for r in rows if r["img_name"] in keep]))
    return out


@pytest.mark.slow
def test_readme_walkthrough_from_a_user_folder(shared_data, tiny_models, tmp_path):
    user = tmp_path / "me"
    user.mkdir()
    shim = tmp_path / "bin"  # `python` is the interpreter running the tests
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no help from the repo's path
    env.update(PATH=f"{shim}{os.pathsep}{env['PATH']}", MEDVL=str(ROOT), MODEL=str(tiny_models["qwen2_vl"]),
               VQARAD=str(shared_data / "vqa_rad"), SLAKE=str(slake_release(shared_data / "slake_sample",
                                                                           tmp_path / "Slake1.0")),
               STAGE1_ARGS="--max_steps 2", STAGE2_ARGS="--max_steps 2", LIMIT="16", OMP_NUM_THREADS="2")
    script = "set -euo pipefail\n" + "\n".join(walkthrough_lines()) + "\n"
    r = subprocess.run(["bash", "-c", script], cwd=user, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]

    walk = user / "walk"
    for rel in ["data/vqa_rad_train.json", "data/vqa_rad_train.report.json", "data/slake_test.json",
                "data/vqa_rad_tr.json", "data/vqa_rad_val.json", "data/captions.json",
                "data/vqa_rad_tr.clean.json", "data/vqa_rad_tr.clean.report.json", "data/eval/test.json",
                "data/eval/type_mapping.json", "outputs/run/stage1/adapter_config.json",
                "outputs/run/stage1_merged/merge_report.json", "outputs/run/stage2/adapter_config.json",
                "outputs/run/stage2/run_summary.json", "result/model_comparison_tables.md", "result/report.html"]:
        assert (walk / rel).exists(), rel  # where the user stands, not in the repository
    assert not (ROOT / "walk").exists() and not (ROOT / "outputs" / "run" / "stage2").exists()
    # what the user reads along the way
    assert re.search(r"warning: \d+ of \d+ test records overlap training data .*vqa_rad_tr\.json", out)
    assert f"Stage-2 adapter : {walk / 'outputs/run/stage2'}" in out
    assert "validated before" in out  # training reused step 3's verdict instead of validating again
    summary = json.loads((walk / "outputs/run/stage2/run_summary.json").read_text())
    assert summary["validation_reports"]["train"]["reused_from"]
    assert "partial" in (walk / "result/model_comparison_tables.md").read_text().lower()  # LIMIT=16 says so
    noise = ["Failed to load CPU gemm_4bit_forward", "Setting accelerator to CPU", "AutoProcessor unavailable",
             "FutureWarning"]
    assert not [n for n in noise if n in out], [n for n in noise if n in out]
