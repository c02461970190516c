"""#17.8: every checkpoint save writes a manifest (sha256 of each file); --resume refuses, before DeepSpeed or the
Trainer reads anything, a checkpoint with a file planted, changed or missing, or without a manifest (unless
--trust_checkpoint), with one line naming the file. An untouched checkpoint resumes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.checkpoints import MANIFEST, UntrustedCheckpoint, last_complete_checkpoint, verify_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# unpickling this file would run its payload: it writes a marker file (proof the code ran)
PAYLOAD = "import pickle, os\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"


def _finetune(args: list, nproc: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                 "--master_port", str(21000 + os.getpid() % 5000)] if nproc > 1 else [sys.executable])
    return subprocess.run(launcher + ["-m", "train.finetune", *map(str, args)], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=400)


def _pickle_bomb(path: Path, marker: Path) -> None:
    code = PAYLOAD.format(marker=marker) + f"pickle.dump(P(), open({str(path)!r}, 'wb'))\n"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def zero2_run(tiny_models, tmp_path_factory):
    """A 2-process DeepSpeed ZeRO-2 run of 4 steps, checkpoints at 2 and 4 (each with DeepSpeed's pickled shards)."""
    from data_process.synth import generate
    tmp = tmp_path_factory.mktemp("manifest")
    data = generate(tmp / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)
    args = ["--model_name_or_path", tiny_models["qwen2_vl"], "--train_data", data["train"], "--stage", 2, "--use_cpu",
            "--deepspeed", ROOT / "ds_configs" / "zero2.json", "--ddp_backend", "gloo",
            "--per_device_train_batch_size", 2, "--save_strategy", "steps", "--save_steps", 2, "--logging_steps", 1,
            "--report_to", "none", "--dataloader_num_workers", 0, "--seed", 0, "--output_dir", tmp / "run"]
    r = _finetune(args + ["--max_steps", 4], nproc=2)
    assert r.returncode == 0, r.stderr[-4000:]
    return tmp, args


@pytest.mark.slow
def test_save_writes_a_manifest_of_every_file(zero2_run):
    tmp, _ = zero2_run
    ckpt = tmp / "run" / "checkpoint-4"
    listed = json.loads((ckpt / MANIFEST).read_text())["sha256"]
    on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(listed) == on_disk
    assert any(k.endswith("optim_states.pt") for k in listed) and "trainer_state.json" in listed
    verify_checkpoint(ckpt)  # untouched: accepted


def _copy_run(tmp: Path, name: str) -> Path:
    import shutil
    out = tmp / name
    shutil.copytree(tmp / "run", out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["modified_optim_states", "planted_file"])
def test_resume_refuses_a_tampered_checkpoint_before_unpickling(attack, zero2_run):
    tmp, args = zero2_run
    out = _copy_run(tmp, attack)
    ckpt = out / "checkpoint-4"
    marker = tmp / f"{attack}.ran"
    if attack == "modified_optim_states":
        target = next(ckpt.glob("global_step*/*optim_states.pt"))
    else:
        target = ckpt / "global_step4" / "zero_pp_rank_2_mp_rank_00_optim_states.pt"
    _pickle_bomb(target, marker)
    rel = target.relative_to(ckpt).as_posix()
    with pytest.raises(UntrustedCheckpoint, match=rel.replace(".", r"\.")):
        verify_checkpoint(ckpt)
    r = _finetune([a if a != tmp / "run" else out for a in args] + ["--max_steps", 6, "--resume", True], nproc=2)
    assert r.returncode != 0 and not marker.exists(), "the planted pickle ran"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: refusing to resume")]
    assert errors and rel in errors[0] and "--trust_checkpoint" in errors[0], r.stderr[-3000:]


def test_no_manifest_is_refused_unless_trusted(tmp_path):
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    assert last_complete_checkpoint(tmp_path) == str(ckpt)  # complete, but from elsewhere / an older version
    with pytest.raises(UntrustedCheckpoint, match=f"no {MANIFEST}.*--trust_checkpoint"):
        verify_checkpoint(ckpt)
    verify_checkpoint(ckpt, trust=True)  # accepted explicitly (a warning in the log)


@pytest.mark.slow
def test_a_save_cut_while_hashing_falls_back_to_the_previous_checkpoint(zero2_run):
    """trainer_state.json written, manifest not yet: where the run writes manifests, that one is incomplete."""
    tmp, _ = zero2_run
    out = _copy_run(tmp, "cut_manifest")
    (out / "checkpoint-4" / MANIFEST).unlink()
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")


@pytest.mark.slow
def test_untouched_checkpoint_resumes(zero2_run):
    tmp, args = zero2_run
    out = _copy_run(tmp, "resumed")
    r = _finetune([a if a != tmp / "run" else out for a in args] + ["--max_steps", 6, "--resume", True], nproc=2)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "checkpoint-4")
    verify_checkpoint(out / "checkpoint-6")
