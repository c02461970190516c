"""Two "nodes" on one machine: two launches of the user's multi-GPU script, rendezvous on 127.0.0.1, gloo, CPU, one
process per node; through torchrun's c10d rendezvous (plain DDP) and through DeepSpeed's launcher with a hostfile
(--no_ssh, ZeRO-2). Stage 2 completes and both node ranks log the same (all-reduced) losses."""
import ast
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(log: str) -> list[float]:
    """The per-step training losses a node printed (PrinterCallback: one dict per log on each node's rank 0)."""
    out = []
    for line in log.splitlines():
        if line.startswith("{") and "'loss'" in line:
            out.append(float(ast.literal_eval(line)["loss"]))
    return out


@pytest.mark.parametrize("launcher", ["torchrun_c10d", "deepspeed_hostfile"])
def test_two_node_launch_runs_stage2_with_equal_losses(launcher, tiny_models, tmp_path):
    from data_process.synth import generate

    data = generate(tmp_path / "synth", n_train=8, n_val=2, n_test=2, size=64, seed=3)
    port = _free_port()
    if launcher == "torchrun_c10d":
        how = {"RDZV": "c10d", "ZERO": "none"}
    else:
        (tmp_path / "hostfile").write_text("node-a slots=1\nnode-b slots=1\n")
        how = {"HOSTFILE": str(tmp_path / "hostfile"), "DS_NO_SSH": "1", "ZERO": "2"}
    common = ("--per_device_train_batch_size 2 --max_steps 3 --logging_steps 1 --save_strategy no --seed 0 "
              "--dataloader_num_workers 0 --disable_tqdm true --llm_lr 1e-2")
    procs, logs = [], []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), NUM_GPUS="1", NNODES="2",
                   NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **how, SKIP_STAGE1="1", MODEL=str(tiny_models["qwen2_vl"]), TRAIN_DATA=str(data["train"]),
                   OUTPUT_DIR=str(tmp_path / "run"), COMMON_ARGS=common)
        logs.append(tmp_path / f"node{rank}.log")
        procs.append(subprocess.Popen(["bash", "scripts/finetune_lora_mult_gpu.sh"], cwd=ROOT, env=env,
                                      stdout=open(logs[-1], "w"), stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)
    summary = json.loads((tmp_path / "run" / "stage2" / "run_summary.json").read_text())
    assert summary["world_size"] == 2
    l0, l1 = _losses(texts[0]), _losses(texts[1])
    assert len(l0) == 3 and l0 == l1, (l0, l1)
    assert (tmp_path / "run" / "stage2" / "STAGE_DONE").exists()
