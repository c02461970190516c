"""The two-stage pipeline: Stage 1 (merger LoRA) -> verified merge -> Stage 2 (LLM LoRA), resumable; with STAGE3_DATA
a third: Stage 2 merged -> Stage 3 (GRPO LoRA, train/grpo.py).

    export MODEL=Qwen/Qwen2-VL-2B-Instruct STAGE1_DATA=captions.json TRAIN_DATA=train.json EVAL_DATA=val.json
    python -m train.pipeline --num_gpus 1       # scripts/finetune_lora_single_gpu.sh; OUTPUT_DIR default outputs/run
    NUM_GPUS=4 ZERO=2 MODEL=... python -m train.pipeline --num_gpus auto      # scripts/finetune_lora_mult_gpu.sh

Each stage runs `python -m train.finetune train/recipes/stage<N>.yaml train/recipes/<gpu|cpu>.yaml --flags`; the
command is printed, and the recipes hold every default. A stage whose output holds STAGE_DONE is skipped, so rerunning
the same command resumes where it stopped (a stage cut mid-way resumes from its last checkpoint: resume: true). Each
stage records what it is made from in <stage>/stage_args.txt (train/stage_record.py); a rerun whose arguments, data or
base differ is refused. REDO_CHANGED=1 moves the changed stage (and what was made from it) aside to
<stage>.replaced-<time> and trains it again. Paths resolve against the directory you run from.

Environment (all optional except MODEL, STAGE1_DATA, TRAIN_DATA):
  MODEL          base checkpoint dir or hub id            STAGE1_DATA  caption/alignment records (Stage 1)
  TRAIN_DATA     instruction records (Stage 2)            EVAL_DATA    validation records (eval loss, gen. metrics)
  OUTPUT_DIR     default outputs/run                      NUM_GPUS     default 1 (processes per node)
  ZERO           none | 2 | 3 | 3_offload (default none for 1 GPU, 2 for several)
  STAGE3_DATA    records for Stage 3 (GRPO with verifiable rewards, on the merged Stage 2); unset: no Stage 3
  STAGE1_ARGS / STAGE2_ARGS / STAGE3_ARGS / COMMON_ARGS  extra arguments for python -m train.finetune (they win)
  SKIP_STAGE1=1  Stage 2 straight on MODEL (e.g. a model already aligned)
  SPEED_ARGS     replaces gpu.yaml's speed options (packing, chunked_loss; off under ZeRO-3); NUM_WORKERS (default 8)
  EVAL_STEPS     validation interval (default: stage2.yaml's)   MERGE_WAIT_S  how long other nodes wait (default 7200)
Several nodes, torchrun: run the same command on every node with
  NNODES  node count    NODE_RANK  0..NNODES-1    MASTER_ADDR / MASTER_PORT  node 0's address (default 127.0.0.1:29511)
  RDZV=c10d  dynamic rendezvous at MASTER_ADDR:MASTER_PORT (RDZV_ID names the job; still give each node its NODE_RANK:
             node 0 is the one that merges Stage 1)
Several nodes, DeepSpeed launcher: run on node 0 only; it starts every host of the hostfile over ssh/pdsh
  HOSTFILE  lines "hostname slots=GPUS"    DS_NO_SSH=1  run the same command on every node with its NODE_RANK
Several nodes need OUTPUT_DIR (and the data) on a filesystem every node sees: node 0 merges Stage 1, others wait.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from train.stage_record import StageChanged, decide, move_aside, stage_record, write_record

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
ZEROS = ("none", "2", "3", "3_offload")
MERGE_REPORT = "merge_report.json"


@dataclass(frozen=True)
class Settings:
    """The pipeline's inputs, read once from the environment (paths already resolved against the caller's cwd)."""
    model: str
    train_data: str
    stage1_data: str | None
    eval_data: str | None
    output_dir: Path
    num_gpus: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: str = "29511"
    zero: str = "none"
    world: int = 1
    hostfile: str | None = None
    ds_no_ssh: bool = False
    rdzv: str = "static"
    rdzv_id: str = "medvl"
    skip_stage1: bool = False
    common_args: tuple = ()
    stage1_args: tuple = ()
    stage2_args: tuple = ()
    stage3_data: str | None = None
    stage3_args: tuple = ()
    speed_args: tuple | None = None  # None: gpu.yaml's
    num_workers: str | None = None
    eval_steps: str | None = None
    redo_changed: bool = False
    merge_wait_s: int = 7200


def count_gpus() -> int:
    """GPUs nvidia-smi lists (0 without the tool or a driver). Not torch: the launcher must not initialise CUDA."""
    if not shutil.which("nvidia-smi"):
        return 0
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU") for line in r.stdout.splitlines()) if r.returncode == 0 else 0


def resolve(path: str | None, cwd: Path, keep_missing: bool = False) -> str | None:
    """A user path against the caller's cwd; comma-separated lists part by part. keep_missing: a name that is no
    path here stays as given (a hub id)."""
    if not path:
        return None
    parts = []
    for p in path.split(","):
        q = Path(p).expanduser()
        q = q if q.is_absolute() else cwd / q
        parts.append(p if keep_missing and not q.exists() else str(q))
    return ",".join(parts)


def hostfile_slots(hostfile: str) -> int:
    return sum(int(n) for n in re.findall(r"slots=(\d+)", Path(hostfile).read_text()))


def settings_from_env(env: Mapping[str, str], cwd: Path, num_gpus: int | None = None) -> Settings:
    """num_gpus: processes per node; None: NUM_GPUS or 1."""
    def need(name, why):
        if not env.get(name):
            raise SystemExit(f"set {name} ({why})")
        return env[name]

    model = resolve(need("MODEL", "checkpoint dir or hub id"), cwd, keep_missing=True)
    train_data = resolve(need("TRAIN_DATA", "Stage-2 records"), cwd)
    skip1 = bool(env.get("SKIP_STAGE1"))
    stage1_data = None if skip1 else resolve(need("STAGE1_DATA", "caption records) or SKIP_STAGE1=1 (no Stage 1"), cwd)
    n = num_gpus if num_gpus is not None else int(env.get("NUM_GPUS") or 1)
    nnodes, node_rank = int(env.get("NNODES") or 1), int(env.get("NODE_RANK") or 0)
    hostfile = resolve(env.get("HOSTFILE"), cwd)
    ds_no_ssh = bool(env.get("DS_NO_SSH"))
    world = n * nnodes
    if hostfile:
        world = hostfile_slots(hostfile)
        node_rank = node_rank if ds_no_ssh else 0  # with ssh the DeepSpeed launcher runs on node 0 only
    zero = env.get("ZERO") or ("2" if world > 1 else "none")
    if zero not in ZEROS:
        raise SystemExit(f"ZERO={zero}: expected one of {' | '.join(ZEROS)}")
    if hostfile and zero == "none":
        raise SystemExit("HOSTFILE runs through DeepSpeed: set ZERO=2 or 3")
    return Settings(
        model=model, train_data=train_data, stage1_data=stage1_data, eval_data=resolve(env.get("EVAL_DATA"), cwd),
        output_dir=Path(resolve(env.get("OUTPUT_DIR") or "outputs/run", cwd)), num_gpus=n, nnodes=nnodes,
        node_rank=node_rank, master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=env.get("MASTER_PORT") or "29511", zero=zero, world=world, hostfile=hostfile, ds_no_ssh=ds_no_ssh,
        rdzv=env.get("RDZV") or "static", rdzv_id=env.get("RDZV_ID") or "medvl", skip_stage1=skip1,
        common_args=tuple(env.get("COMMON_ARGS", "").split()), stage1_args=tuple(env.get("STAGE1_ARGS", "").split()),
        stage2_args=tuple(env.get("STAGE2_ARGS", "").split()),
        stage3_data=resolve(env.get("STAGE3_DATA"), cwd), stage3_args=tuple(env.get("STAGE3_ARGS", "").split()),
        speed_args=tuple(env["SPEED_ARGS"].split()) if "SPEED_ARGS" in env else None,
        num_workers=env.get("NUM_WORKERS") or None, eval_steps=env.get("EVAL_STEPS") or None,
        redo_changed=bool(env.get("REDO_CHANGED")), merge_wait_s=int(env.get("MERGE_WAIT_S") or 7200))


def launcher(s: Settings, python: str = sys.executable) -> list[str]:
    """python (one process) | torchrun (several, static or c10d rendezvous) | the DeepSpeed runner (a hostfile)."""
    if s.hostfile:
        return [python, "-m", "deepspeed.launcher.runner", "--hostfile", s.hostfile, "--master_addr", s.master_addr,
                "--master_port", s.master_port,
                *(["--no_ssh", "--node_rank", str(s.node_rank)] if s.ds_no_ssh else []), "--module", "train.finetune"]
    if s.world > 1:
        if s.rdzv == "c10d":
            rdzv = ["--nnodes", str(s.nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint",
                    f"{s.master_addr}:{s.master_port}", "--rdzv_id", s.rdzv_id]
        else:
            rdzv = ["--nnodes", str(s.nnodes), "--node_rank", str(s.node_rank), "--master_addr", s.master_addr,
                    "--master_port", s.master_port]
        return [python, "-m", "torch.distributed.run", "--nproc_per_node", str(s.num_gpus), *rdzv,
                "-m", "train.finetune"]
    return [python, "-m", "train.finetune"]


def device_args(s: Settings, has_gpu: bool) -> tuple[list[str], list[str]]:
    """(device profile recipe, flags the topology decides)."""
    flags: list[str] = []
    if not has_gpu:
        profile = "cpu.yaml"
        if s.world > 1:
            flags += ["--ddp_backend", "gloo"]  # CPU processes talk over gloo
    else:
        profile = "gpu.yaml"
        if s.num_workers:
            flags += ["--dataloader_num_workers", s.num_workers]
        if s.zero in ("3", "3_offload"):  # the chunked loss would run the partitioned LM head outside the engine
            flags += ["--packing", "false", "--chunked_loss", "false"]
        elif s.speed_args is not None:
            flags += ["--packing", "false", "--chunked_loss", "false", *s.speed_args]
    if s.zero != "none":
        flags += ["--deepspeed", str(REPO / "ds_configs" / f"zero{s.zero}.json")]
    return [str(RECIPES / profile)], flags


def stage_args(s: Settings, stage: int, model: str, data: str, out: Path, has_gpu: bool) -> list[str]:
    """train.finetune's arguments for one stage: recipes first, then what this run sets, then the user's flags."""
    profile, flags = device_args(s, has_gpu)
    args = [str(RECIPES / f"stage{stage}.yaml"), *profile, "--model_name_or_path", model, "--train_data", data,
            "--output_dir", str(out), *flags, *s.common_args]
    if stage == 1:
        return args + list(s.stage1_args)
    if stage == 3:  # EVAL_DATA: the held-out reward at the start and end of the stage (no in-loop validation)
        return args + (["--eval_data", s.eval_data] if s.eval_data else []) + list(s.stage3_args)
    if s.eval_data:
        args += ["--eval_data", s.eval_data, "--eval_strategy", "steps"]
        args += ["--eval_steps", s.eval_steps] if s.eval_steps else []
    return args + list(s.stage2_args)


def child_env(s: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The training processes' environment: the repo importable from any cwd; one GPU per process."""
    out = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    if s.num_gpus == 1:
        out.setdefault("CUDA_VISIBLE_DEVICES", "0")  # several visible GPUs would make the Trainer use DataParallel
    return out


def merged_base(s: Settings, stage: int) -> tuple[str, str]:
    """(the base of the stage after `stage`, what to do for it): 'full' (that stage trained weights in full: its
    output is a checkpoint), 'merged' (done before), 'merge' (node 0), 'wait' (other nodes: node 0 merges)."""
    out, merged = s.output_dir / f"stage{stage}", s.output_dir / f"stage{stage}_merged"
    if not (out / "adapter_config.json").is_file():
        return str(out), "full"
    if (merged / MERGE_REPORT).is_file():
        return str(merged), "merged"
    return str(merged), "merge" if s.node_rank == 0 else "wait"


def stage2_base(s: Settings) -> tuple[str, str]:
    """Stage 2's base: MODEL without Stage 1 ('model'), else Stage 1 merged into it (merged_base)."""
    return (s.model, "model") if s.skip_stage1 else merged_base(s, 1)


def stage3_base(s: Settings) -> tuple[str, str]:
    """Stage 3's base: Stage 2's adapter merged into Stage 2's base."""
    return merged_base(s, 2)


class Pipeline:
    def __init__(self, s: Settings, env: Mapping[str, str], cwd: Path, has_gpu: bool):
        self.s, self.env, self.cwd, self.has_gpu = s, child_env(s, env), cwd, has_gpu

    def call(self, cmd: list[str]) -> None:
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, env=self.env, cwd=self.cwd).returncode
        if rc:
            raise SystemExit(rc)

    def stage(self, stage: int, model: str, data: str) -> None:
        s = self.s
        out = s.output_dir / f"stage{stage}"
        args = stage_args(s, stage, model, data, out, self.has_gpu)
        want = stage_record(str(out), args)
        try:
            action = decide(stage, out, want, s.redo_changed, s.nnodes)
        except StageChanged as e:
            raise SystemExit(str(e)) from None
        if action == "skip":
            print(f"stage {stage} already done: {out}")
            return
        if action == "redo":
            move_aside(out)
            if stage in (1, 2):
                move_aside(s.output_dir / f"stage{stage}_merged")  # merged from the old stage
        write_record(out, want, s.node_rank)
        self.call(launcher(s) + args)

    def merge(self, base: str, how: str, model: str | None = None, adapter: str = "stage1") -> None:
        s = self.s
        if how == "merge":
            self.call([sys.executable, "-m", "train.merge_lora", "--model_name_or_path", model or s.model, "--adapter",
                       str(s.output_dir / adapter), "--output_dir", base,
                       *(["--probe_data", s.eval_data] if s.eval_data else [])])
        elif how == "wait":
            print(f"node {s.node_rank}: waiting for node 0 to merge {adapter} into {base}", flush=True)
            deadline = time.monotonic() + s.merge_wait_s
            while not (Path(base) / MERGE_REPORT).is_file() and time.monotonic() < deadline:
                time.sleep(1)
            if not (Path(base) / MERGE_REPORT).is_file():
                raise SystemExit(f"no {base}/{MERGE_REPORT}: is OUTPUT_DIR shared?")

    def run(self) -> dict:
        s = self.s
        if not s.skip_stage1:
            self.stage(1, s.model, s.stage1_data)
        base, how = stage2_base(s)
        self.merge(base, how)
        self.stage(2, base, s.train_data)
        base3 = None
        if s.stage3_data:
            base3, how3 = stage3_base(s)
            self.merge(base3, how3, model=base, adapter="stage2")
            self.stage(3, base3, s.stage3_data)
        return {"model": s.model, "output_dir": str(s.output_dir), "stage2_base": base,
                "stage1": None if s.skip_stage1 else str(s.output_dir / "stage1"),
                "stage2": str(s.output_dir / "stage2"), "stage3_base": base3,
                "stage3": str(s.output_dir / "stage3") if s.stage3_data else None}


def run_pipeline(env: Mapping[str, str] | None = None, cwd: Path | None = None, num_gpus: int | str | None = None,
                 ) -> dict:
    env = dict(os.environ if env is None else env)
    cwd = Path.cwd() if cwd is None else cwd
    gpus = count_gpus()
    if num_gpus == "auto":  # NUM_GPUS, else every GPU here, else 2 CPU processes (how CI tests the wiring)
        num_gpus = int(env["NUM_GPUS"]) if env.get("NUM_GPUS", "").isdigit() and int(env["NUM_GPUS"]) > 0 else gpus or 2
    s = settings_from_env(env, cwd, None if num_gpus is None else int(num_gpus))
    return Pipeline(s, env, cwd, has_gpu=gpus > 0).run()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_gpus", default=None, help="processes per node: N, or auto (NUM_GPUS, else the GPUs here, "
                                                    "else 2 CPU processes); default NUM_GPUS or 1")
    a = p.parse_args(argv)
    if a.num_gpus not in (None, "auto") and not a.num_gpus.isdigit():
        p.error(f"--num_gpus must be a number or auto, got {a.num_gpus!r}")
    r = run_pipeline(num_gpus=a.num_gpus)
    skipped = "(skipped)" if r["stage1"] is None else None
    out = r["output_dir"]
    print()
    print(f"Stage-1 adapter : {skipped or r['stage1']}")
    print(f"Stage-1 merged  : {skipped or out + '/stage1_merged'}")
    print(f"Stage-2 adapter : {r['stage2']}   (base for it: {r['stage2_base']})")
    if r["stage3"]:
        print(f"Stage-3 adapter : {r['stage3']}   (base for it: {r['stage3_base']})")
    print(f"TensorBoard     : tensorboard --logdir {out}")
    stage3 = f" stage3={r['stage3_base']}+{r['stage3']}" if r["stage3"] else ""
    print(f"Evaluate        : MODELS=\"base={r['model']} stage2={r['stage2_base']}+{r['stage2']}{stage3}\" "
          f"TEST_DATA=test.json TYPE_MAPPING=type_mapping.json bash {REPO / 'scripts/run_eval.sh'}   "
          "(both from python -m data_process.data_trans)")


if __name__ == "__main__":
    main()
