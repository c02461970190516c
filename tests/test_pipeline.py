"""The two-stage pipeline's decisions (train/pipeline.py, train/stage_record.py), without training anything:
the commands planned for a given environment / GPU count / node layout, which stages are skipped, refused or redone,
and which base Stage 2 trains on. The real runs: test_rerun_fingerprint, test_multinode, test_demo."""
from pathlib import Path

import pytest

from train.config import parse_args
from train.pipeline import (REPO, Pipeline, child_env, launcher, settings_from_env, stage2_base, stage3_base,
                            stage_args)
from train.stage_record import NO_RECORD, StageChanged, decide, option_lines, record_diff, stage_record

BASE_ENV = {"MODEL": "Qwen/Qwen2-VL-2B-Instruct", "STAGE1_DATA": "caps.json", "TRAIN_DATA": "train.json"}


def _settings(tmp_path, num_gpus=None, **env):
    return settings_from_env({**BASE_ENV, **env}, tmp_path, num_gpus)


def test_one_process_runs_python_with_the_stage_and_device_recipes(tmp_path):
    s = _settings(tmp_path, EVAL_DATA="val.json", COMMON_ARGS="--seed 3", STAGE2_ARGS="--max_steps 5")
    assert s.world == 1 and s.zero == "none"
    assert launcher(s, python="py") == ["py", "-m", "train.finetune"]
    args = stage_args(s, 2, "base", s.train_data, s.output_dir / "stage2", has_gpu=True)
    assert args[:2] == [str(REPO / "train/recipes/stage2.yaml"), str(REPO / "train/recipes/gpu.yaml")]
    # the user's paths resolve against the caller's cwd, hub ids stay as they are
    assert s.train_data == str(tmp_path / "train.json") and s.model == "Qwen/Qwen2-VL-2B-Instruct"
    assert s.output_dir == tmp_path / "outputs/run"
    # validation on with EVAL_DATA (interval from the recipe), user flags last so they win
    assert args[-8:] == ["--seed", "3", "--eval_data", str(tmp_path / "val.json"), "--eval_strategy", "steps",
                         "--max_steps", "5"]
    stage1 = stage_args(s, 1, s.model, s.stage1_data, s.output_dir / "stage1", has_gpu=True)
    assert "--eval_data" not in stage1 and "--max_steps" not in stage1
    assert child_env(s, {})["CUDA_VISIBLE_DEVICES"] == "0"  # one process must see one GPU
    assert child_env(s, {"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] == "3"


def test_the_planned_command_parses_to_the_launch_scripts_defaults(tmp_path):
    """python -m train.finetune RECIPE... is what the pipeline runs: the recipes carry its defaults."""
    s = _settings(tmp_path, EVAL_DATA="val.json")
    args = stage_args(s, 2, "base", s.train_data, s.output_dir / "stage2", has_gpu=False)
    margs, dargs, sargs, targs, fargs = parse_args(args)
    assert sargs.stage == 2 and sargs.resume and targs.report_to == ["tensorboard"] and targs.use_cpu
    assert targs.eval_strategy == "steps" and targs.eval_steps == 200 and not fargs.packing
    gpu_recipes = stage_args(s, 1, "base", s.train_data, s.output_dir / "stage1", has_gpu=True)[:2]
    margs, dargs, sargs, targs, fargs = parse_args(gpu_recipes + ["--model_name_or_path", "m", "--train_data", "t",
                                                                  "--output_dir", str(tmp_path), "--bf16", "false"])
    assert sargs.stage == 1 and fargs.packing and fargs.chunked_loss and targs.dataloader_num_workers == 8


@pytest.mark.parametrize("env,gpu,want", [
    ({"ZERO": "3"}, True, ["--packing", "false", "--chunked_loss", "false"]),          # not under ZeRO-3
    ({"SPEED_ARGS": ""}, True, ["--packing", "false", "--chunked_loss", "false"]),     # SPEED_ARGS="" turns them off
    ({"SPEED_ARGS": "--packing --vision_cache"}, True,
     ["--packing", "false", "--chunked_loss", "false", "--packing", "--vision_cache"]),
    ({"NUM_WORKERS": "2"}, True, ["--dataloader_num_workers", "2"]),
    ({"SPEED_ARGS": "", "NUM_WORKERS": "2"}, False, []),                                 # CPU: none of them
])
def test_speed_and_worker_overrides(tmp_path, env, gpu, want):
    s = _settings(tmp_path, **env)
    args = stage_args(s, 1, s.model, s.stage1_data, s.output_dir / "stage1", has_gpu=gpu)
    flags = args[args.index("--output_dir") + 2:]
    assert [f for f in flags if f != "--deepspeed" and not f.endswith(".json")] == want


def test_several_gpus_torchrun_zero2_and_cpu_gloo(tmp_path):
    s = _settings(tmp_path, num_gpus=4)
    assert s.world == 4 and s.zero == "2"
    assert launcher(s, python="py") == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "1",
                                        "--node_rank", "0", "--master_addr", "127.0.0.1", "--master_port", "29511",
                                        "-m", "train.finetune"]
    gpu = stage_args(s, 2, "b", "d", tmp_path / "o", has_gpu=True)
    assert gpu[gpu.index("--deepspeed") + 1] == str(REPO / "ds_configs/zero2.json") and "--ddp_backend" not in gpu
    cpu = stage_args(s, 2, "b", "d", tmp_path / "o", has_gpu=False)
    assert cpu[cpu.index("--ddp_backend") + 1] == "gloo" and cpu[1].endswith("cpu.yaml")
    assert "CUDA_VISIBLE_DEVICES" not in child_env(s, {})
    assert _settings(tmp_path, num_gpus=4, ZERO="none").zero == "none"
    with pytest.raises(SystemExit, match="ZERO=4"):
        _settings(tmp_path, ZERO="4")


def test_multinode_rendezvous_and_hostfile(tmp_path):
    c10d = _settings(tmp_path, num_gpus=8, NNODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.1", RDZV="c10d")
    assert c10d.world == 16
    assert launcher(c10d, python="py")[5:] == ["--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                                               "10.0.0.1:29511", "--rdzv_id", "medvl", "-m", "train.finetune"]
    (tmp_path / "hosts").write_text("a slots=4\nb slots=2\n")
    ds = _settings(tmp_path, num_gpus=1, HOSTFILE="hosts", NODE_RANK="1", ZERO="3")
    assert ds.world == 6 and ds.node_rank == 0  # with ssh the launcher runs on node 0 only
    assert launcher(ds, python="py") == ["py", "-m", "deepspeed.launcher.runner", "--hostfile", str(tmp_path / "hosts"),
                                         "--master_addr", "127.0.0.1", "--master_port", "29511", "--module",
                                         "train.finetune"]
    no_ssh = _settings(tmp_path, num_gpus=1, HOSTFILE="hosts", NODE_RANK="1", DS_NO_SSH="1")
    assert no_ssh.zero == "2" and no_ssh.node_rank == 1
    assert launcher(no_ssh, python="py")[9:13] == ["--no_ssh", "--node_rank", "1", "--module"]
    with pytest.raises(SystemExit, match="HOSTFILE runs through DeepSpeed"):
        _settings(tmp_path, num_gpus=2, HOSTFILE="hosts", ZERO="none")


def test_required_variables_are_named(tmp_path):
    with pytest.raises(SystemExit, match="set MODEL"):
        settings_from_env({"TRAIN_DATA": "t"}, tmp_path)
    with pytest.raises(SystemExit, match="set STAGE1_DATA .* or SKIP_STAGE1=1"):
        settings_from_env({"MODEL": "m", "TRAIN_DATA": "t"}, tmp_path)
    assert settings_from_env({"MODEL": "m", "TRAIN_DATA": "t", "SKIP_STAGE1": "1"}, tmp_path).stage1_data is None


def test_stage2_base_adapter_vs_checkpoint_and_who_merges(tmp_path):
    s = _settings(tmp_path, OUTPUT_DIR="run")
    run = tmp_path / "run"
    (run / "stage1").mkdir(parents=True)
    assert stage2_base(s) == (str(run / "stage1"), "full")  # no adapter: Stage 1 is a checkpoint
    (run / "stage1" / "adapter_config.json").write_text("{}")
    assert stage2_base(s) == (str(run / "stage1_merged"), "merge")
    assert stage2_base(_settings(tmp_path, OUTPUT_DIR="run", NODE_RANK="1", NNODES="2")) == \
        (str(run / "stage1_merged"), "wait")  # other nodes wait for node 0's merge
    (run / "stage1_merged").mkdir()
    (run / "stage1_merged" / "merge_report.json").write_text("{}")
    assert stage2_base(s) == (str(run / "stage1_merged"), "merged")
    assert stage2_base(_settings(tmp_path, SKIP_STAGE1="1")) == (s.model, "model")


def test_record_holds_arguments_and_the_content_they_name(tmp_path):
    data, base, out = tmp_path / "d.json", tmp_path / "base", tmp_path / "out"
    data.write_text("[]")
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"x" * 10)
    out.mkdir()
    (out / "config.json").write_text("{}")  # the output itself is not part of what the stage is made from
    args = ["r.yaml", "--train_data", str(data), "--model_name_or_path", str(base), "--output_dir", str(out),
            "--report_to", "a", "b", "--resume"]
    assert option_lines(args) == ["r.yaml", f"--train_data {data}", f"--model_name_or_path {base}",
                                  f"--output_dir {out}", "--report_to a b", "--resume"]
    rec = stage_record(str(out), args)
    assert "sha256 4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945 " + str(data) in rec
    assert f"{base}/config.json" in rec and "weights 10 " in rec and str(out / "config.json") not in rec
    data.write_text("[{}]")
    assert stage_record(str(out), args) != rec  # other data, other record


def test_skip_resume_refuse_and_redo(tmp_path):
    out = tmp_path / "stage2"
    assert decide(2, out, "a", False, 1) == "run"  # nothing there
    out.mkdir()
    (out / "stage_args.txt").write_text("--max_steps 1\n")
    assert decide(2, out, "--max_steps 1", False, 1) == "run"  # same record, not done: resume
    (out / "STAGE_DONE").write_text("stage 2\n")
    assert decide(2, out, "--max_steps 1", False, 1) == "skip"
    with pytest.raises(StageChanged, match=r"was: --max_steps 1; now: --max_steps 2\): REDO_CHANGED=1"):
        decide(2, out, "--max_steps 2", False, 1)
    assert decide(2, out, "--max_steps 2", True, 1) == "redo"
    with pytest.raises(StageChanged, match="one node only"):
        decide(2, out, "--max_steps 2", True, 2)  # several nodes share the dir: never moved by one of them
    (out / "stage_args.txt").unlink()  # finished before records existed
    with pytest.raises(StageChanged, match=r"was: \(no record"):
        decide(2, out, "--max_steps 1", False, 1)
    assert NO_RECORD.startswith("(no record")


def test_record_diff_names_each_changed_line():
    assert record_diff("a\nb\nc", "a\nB\nc\nd") == "was: b; now: B; now: d"
    assert record_diff("x", "x") == ""


def test_stage3_runs_on_the_merged_stage2_only_with_stage3_data(tmp_path, monkeypatch):
    """STAGE3_DATA adds Stage 3 (train/recipes/stage3.yaml) on Stage 2 merged into Stage 2's base; EVAL_DATA gives
    it the held-out reward, not in-loop validation; without STAGE3_DATA the pipeline stops after Stage 2."""
    s = _settings(tmp_path, OUTPUT_DIR="run", EVAL_DATA="val.json", STAGE3_DATA="rl.json", STAGE3_ARGS="--beta 0")
    args = stage_args(s, 3, "b", s.stage3_data, s.output_dir / "stage3", has_gpu=False)
    assert args[:2] == [str(REPO / "train/recipes/stage3.yaml"), str(REPO / "train/recipes/cpu.yaml")]
    assert args[-4:] == ["--eval_data", str(tmp_path / "val.json"), "--beta", "0"] and "--eval_strategy" not in args
    margs, dargs, sargs, targs, fargs = parse_args(args)
    assert sargs.stage == 3 and sargs.beta == 0 and sargs.modes["llm"] == "lora" and sargs.resume
    assert sargs.reward_weights == {"closed": 1.0, "open_f1": 0.5, "iou": 1.0} and targs.report_to == ["tensorboard"]

    calls = []

    def fake_call(self, cmd):  # what each command would leave behind: adapters, merge reports
        calls.append(cmd)
        out = Path(cmd[cmd.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if "train.merge_lora" in cmd:
            (out / "merge_report.json").write_text("{}")
        else:
            (out / "adapter_config.json").write_text("{}")
            (out / "STAGE_DONE").write_text("done\n")
    monkeypatch.setattr(Pipeline, "call", fake_call)
    r = Pipeline(s, {}, tmp_path, has_gpu=False).run()
    run = tmp_path / "run"
    kinds = [("merge" if "train.merge_lora" in c else c[c.index("train.finetune") + 1].rsplit("/", 1)[-1]) for c in calls]
    assert kinds == ["stage1.yaml", "merge", "stage2.yaml", "merge", "stage3.yaml"]
    merge2 = calls[3]
    assert merge2[merge2.index("--model_name_or_path") + 1] == str(run / "stage1_merged")
    assert merge2[merge2.index("--adapter") + 1] == str(run / "stage2")
    assert calls[4][calls[4].index("--model_name_or_path") + 1] == str(run / "stage2_merged")
    assert r["stage3"] == str(run / "stage3") and r["stage3_base"] == str(run / "stage2_merged")
    assert stage3_base(s) == (str(run / "stage2_merged"), "merged")
    calls.clear()
    r = Pipeline(s, {}, tmp_path, has_gpu=False).run()  # rerun: every stage done, nothing runs again
    assert calls == [] and r["stage3"]
    no3 = _settings(tmp_path, OUTPUT_DIR="other")
    r = Pipeline(no3, {}, tmp_path, has_gpu=False).run()
    assert r["stage3"] is None and not any("stage3.yaml" in " ".join(c) for c in calls)
