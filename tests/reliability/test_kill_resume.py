"""Kill-and-resume: a Stage-2 run SIGKILLed at a random step and resumed with --resume ends exactly where an
uninterrupted run with the same seed ends (adapter weights and the whole loss curve), also when the kill left a
half-written checkpoint behind. Single process, and 2-process DeepSpeed ZeRO-2 over gloo.

Tolerance: none. On CPU with one thread per process the resumed run is bit-identical (torch.equal on every adapter
tensor, == on every logged loss / grad norm / LR): the checkpoint restores weights, optimizer, scheduler, the data
order (the sampler's seed + skipped batches) and the RNG states (LoRA dropout).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.checkpoints import checkpoint_problem, last_complete_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 10


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


def _args(model, data, out, *extra):
    return ["--model_name_or_path", model, "--train_data", data, "--output_dir", out, "--stage", 2, "--use_cpu",
            "--max_steps", MAX_STEPS, "--save_strategy", "steps", "--save_steps", 2, "--logging_steps", 1,
            "--llm_lr", 1e-2, "--seed", 0, "--report_to", "none", "--disable_tqdm", True,
            "--dataloader_num_workers", 0, *extra]


def _launch(args, log: Path, nproc: int = 1, port: int = 0, pause_at: int | None = None) -> subprocess.Popen:
    """The training command in its own session (so a SIGKILL of its group takes every rank, as preemption does);
    with pause_at, it waits at the end of that step to be killed (pause_at_step.py)."""
    entry = ["-m", "train.finetune"] if pause_at is None else [str(ROOT / "tests/reliability/pause_at_step.py"),
                                                               str(pause_at)]
    if nproc == 1:
        cmd = [sys.executable, *entry]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
               *entry]
    f = open(log, "w")
    p = subprocess.Popen(cmd + [str(a) for a in args], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    p.log_file = f
    return p


def _process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc): torchrun starts each rank in a session of its own, so killing
    torchrun's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _finish(p: subprocess.Popen, kill: bool = False) -> int:
    """Copy the output to the log; with kill, SIGKILL every process of the job (launcher and ranks) at once, as a
    preemption does, once it has paused."""
    for line in p.stdout:
        p.log_file.write(line)
        if kill and line.startswith("PAUSED_AT_STEP"):
            tree = _process_tree(p.pid)
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=60)
            deadline = time.time() + 60
            while not all(_dead(pid) for pid in tree) and time.time() < deadline:
                time.sleep(0.1)
            assert all(_dead(pid) for pid in tree), "a rank survived SIGKILL"
            break
    p.wait(timeout=600)
    p.log_file.close()
    return p.returncode


def _log_history(out: Path) -> list[tuple]:
    state = json.loads((out / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [(h["step"], h["loss"], h["grad_norm"], h["learning_rate"]) for h in state["log_history"] if "loss" in h]


def _break_checkpoint(out: Path) -> Path:
    """What a kill in the middle of a save leaves: a newer checkpoint-N whose weights are cut and whose
    trainer_state.json (the Trainer's last file) was never written."""
    last = Path(last_complete_checkpoint(out))
    step = int(last.name.split("-")[1]) + 2
    broken = out / f"checkpoint-{step}"
    if broken.exists():  # the kill itself may have landed inside this save
        shutil.rmtree(broken)
    shutil.copytree(last, broken)
    (broken / "trainer_state.json").unlink()
    for f in broken.rglob("*"):
        if f.is_file() and f.suffix in (".safetensors", ".pt", ".pth", ".bin"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    return broken


def _assert_same_run(ref: Path, resumed: Path, what: str) -> None:
    a, b = _log_history(ref), _log_history(resumed)
    assert [s for s, *_ in a] == list(range(1, MAX_STEPS + 1)), a
    assert a == b, f"{what}: loss curves differ\nref     {a}\nresumed {b}"
    wa, wb = load_file(ref / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    diff = {k: (wa[k] - wb[k]).abs().max().item() for k in wa if not torch.equal(wa[k], wb[k])}
    assert not diff, f"{what}: adapter weights differ: {diff}"


def _kill_resume(tmp_path, args_for, nproc=1, port=0):
    """Reference and to-be-killed runs side by side, then the resume; returns (ref dir, resumed dir, kill step)."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    # a random step after the first checkpoint (2); the kill comes before that step's own checkpoint is written
    kill_step = random.randint(3, MAX_STEPS - 2)
    p_ref = _launch(args_for(ref), tmp_path / "ref.log", nproc, port)
    p_cut = _launch(args_for(cut), tmp_path / "cut.log", nproc, port + 1 if port else 0, pause_at=kill_step)
    rc_cut = _finish(p_cut, kill=True)
    assert _finish(p_ref) == 0, (tmp_path / "ref.log").read_text()[-4000:]
    assert rc_cut == -signal.SIGKILL, f"kill at step {kill_step}: rc {rc_cut}\n" + (tmp_path / "cut.log").read_text()[-3000:]
    assert not (cut / "STAGE_DONE").exists() and not (cut / "adapter_model.safetensors").exists()

    assert Path(last_complete_checkpoint(cut)).name == f"checkpoint-{(kill_step - 1) // 2 * 2}"
    broken = _break_checkpoint(cut)
    from transformers.trainer_utils import get_last_checkpoint
    assert get_last_checkpoint(str(cut)) == str(broken)  # what transformers would resume from: the broken one
    resume_from = last_complete_checkpoint(cut)
    assert resume_from != str(broken) and checkpoint_problem(broken)

    p_res = _launch(args_for(cut) + ["--resume", True], tmp_path / "resume.log", nproc, port + 2 if port else 0)
    assert _finish(p_res) == 0, (tmp_path / "resume.log").read_text()[-4000:]
    summary = json.loads((cut / "run_summary.json").read_text())
    assert summary["resumed_from"] == resume_from, (summary["resumed_from"], resume_from, kill_step)
    return ref, cut, kill_step


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from data_process.synth import generate
    return generate(tmp_path_factory.mktemp("synth"), n_train=16, n_val=2, n_test=2, size=64, seed=3)


def test_last_complete_checkpoint_skips_broken_ones(tmp_path):
    def ckpt(step, state):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    ckpt(2, json.dumps({"global_step": 2}))
    ckpt(4, json.dumps({"global_step": 4}))
    ckpt(6, None)                                   # killed before trainer_state.json
    ckpt(8, '{"global_step": 8, "log_hist')         # killed while writing it
    ckpt(10, json.dumps({"global_step": 6}))        # a copied / renamed directory
    (tmp_path / "checkpoint-12").write_text("a file, not a checkpoint")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "no trainer_state.json" in checkpoint_problem(tmp_path / "checkpoint-6")
    assert "cut short" in checkpoint_problem(tmp_path / "checkpoint-8")
    assert "step 6" in checkpoint_problem(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "nothing-here") is None


def test_sigkill_and_resume_matches_an_uninterrupted_run(tiny_models, synth, tmp_path):
    model = tiny_models["qwen2_vl"]
    ref, resumed, kill_step = _kill_resume(
        tmp_path, lambda out: _args(model, synth["train"], out, "--per_device_train_batch_size", 4))
    _assert_same_run(ref, resumed, f"single process, killed after step {kill_step}")


@pytest.mark.slow
def test_deepspeed_zero2_sigkill_and_resume_matches(tiny_models, synth, tmp_path):
    model = tiny_models["qwen2_vl"]
    common = ["--deepspeed", ROOT / "ds_configs" / "zero2.json", "--ddp_backend", "gloo",
              "--per_device_train_batch_size", 2]
    port = 20000 + os.getpid() % 5000 * 3
    ref, resumed, kill_step = _kill_resume(
        tmp_path, lambda out: _args(model, synth["train"], out, *common), nproc=2, port=port)
    assert any((resumed / f"checkpoint-{MAX_STEPS}").glob("global_step*/*optim_states.pt"))  # DeepSpeed's own shards
    _assert_same_run(ref, resumed, f"2-process ZeRO-2, killed after step {kill_step}")
