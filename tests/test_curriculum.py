"""Curriculum: phases from meta, the sampler's order per scope, sharding over ranks, resume, the finetune option."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from train.curriculum import CurriculumSampler, build_plan, consumed_samples, group_records, parse_key

ROOT = Path(__file__).resolve().parents[1]


def _rec(i, answer="a finding", **meta):
    return {"id": f"r{i}", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": answer}],
            "meta": meta}


def _mixed(n=30):  # every third record closed
    return [_rec(i, answer_type="closed" if i % 3 == 0 else "open") for i in range(n)]


def _kind(recs, i):
    return recs[i]["meta"]["answer_type"]


def test_phases_from_meta_keys():
    recs = [_rec(0, answer_type="open"), _rec(1, answer="yes"), _rec(2, answer="the liver"),  # 1, 2: rule fallback
            _rec(3, task="grounding", answer_type="open"), _rec(4, answer_type="closed", difficulty=10),
            _rec(5, answer_type="closed", difficulty=2)]
    plan = build_plan(recs, "open_then_closed")
    assert [(p.name, p.indices) for p in plan.phases] == [("answer_type=open", [0, 2, 3]), ("answer_type=closed", [1, 4, 5])]
    assert [p.name for p in build_plan(recs, "closed_then_open").phases] == ["answer_type=closed", "answer_type=open"]
    phases = group_records(recs, parse_key("task=grounding|vqa,answer_type=open|closed"))
    assert [p.name for p in phases] == ["task=grounding,answer_type=open", "task=vqa,answer_type=open",
                                        "task=vqa,answer_type=closed"]
    # unlisted values sorted (numbers numerically), a record lacking the field last
    assert [p.indices for p in group_records(recs, parse_key("difficulty"))] == [[5], [4], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="needs --curriculum_key"):
        build_plan(recs, "custom")
    with pytest.raises(ValueError, match="fixes the key"):
        build_plan(recs, "open_then_closed", key="task")
    with pytest.raises(ValueError, match="must be one of"):
        build_plan(recs, "hardest_first")
    assert build_plan(recs, "none") is None


def test_epoch_scope_is_phase_major_and_deterministic():
    recs = _mixed()
    s = CurriculumSampler(build_plan(recs, "open_then_closed", scope="epoch"), seed=3)
    orders = []
    for e in range(3):
        s.set_epoch(e)
        o = list(s)
        assert sorted(o) == list(range(30))
        assert [_kind(recs, i) for i in o] == ["open"] * 20 + ["closed"] * 10
        orders.append(o)
    assert orders[0] != orders[1] and orders[0] == CurriculumSampler(s.plan, seed=3).epoch_order(0).tolist()
    assert orders[0] != CurriculumSampler(s.plan, seed=4).epoch_order(0).tolist()


def test_run_scope_spans_the_run_and_ends_on_the_last_step():
    recs = _mixed()
    s = CurriculumSampler(build_plan(recs, "open_then_closed"), seed=0)
    # 3 epochs of 8 steps, cut after 3 steps (12 positions) of the third: 72 positions consumed
    assert consumed_samples(num_epochs=3, num_update_steps_per_epoch=8, max_steps=19, total_batch=4, n=30) == 72
    s.plan_run(3, 72)
    stream = [i for e in range(3) for i in s.epoch_order(e).tolist()]
    assert len(stream) == 90
    kinds = [_kind(recs, i) for i in stream[:72]]
    n_open = round(72 * 20 / 30)
    assert kinds == ["open"] * n_open + ["closed"] * (72 - n_open)  # open first, closed up to the last step
    seen = Counter(stream[:n_open])
    assert set(seen) == {i for i in range(30) if i % 3} and max(seen.values()) - min(seen.values()) <= 1
    assert s.describe()["phases"][1]["run_positions"] == [n_open, 72]


def test_mixed_spreads_closed_evenly():
    recs = _mixed(60)
    o = CurriculumSampler(build_plan(recs, "mixed"), seed=0).epoch_order(0).tolist()
    assert sorted(o) == list(range(60))
    for start in range(0, 60, 6):  # every stretch of 6 holds 2 closed, like the data
        assert sum(_kind(recs, i) == "closed" for i in o[start:start + 6]) == 2


def test_accelerate_shards_the_order_by_batches():
    """What the Trainer's accelerator.prepare does to our sampler with 2 processes, per rank, on CPU."""
    from accelerate.data_loader import prepare_data_loader, skip_first_batches

    recs = _mixed(26)  # 13 batches of 2: not a multiple of 2 ranks, so accelerate pads the last round
    s = CurriculumSampler(build_plan(recs, "open_then_closed", scope="epoch"), seed=0)
    want = s.epoch_order(1).tolist()
    ranks = []
    for r in range(2):
        dl = prepare_data_loader(torch.utils.data.DataLoader(list(range(26)), batch_size=2, sampler=s),
                                 num_processes=2, process_index=r, put_on_device=False)
        dl.set_epoch(1)  # what the Trainer does at each epoch; it reaches the sampler through the shard wrapper
        ranks.append([b.tolist() for b in dl])
        resumed = skip_first_batches(dl, 3)
        s.set_epoch(0)
        resumed.set_epoch(1)  # ... but not through the skip wrapper of a resumed run:
        assert s.epoch == 0
        s.set_epoch(1)  # CurriculumCallback.on_epoch_begin sets it (from state.epoch)
        assert [b.tolist() for b in resumed] == ranks[r][3:]  # resume: the same tail
    interleaved = [i for pair in zip(*ranks) for batch in pair for i in batch]
    assert interleaved[:26] == want and interleaved[26:] == want[:2]  # padding from the epoch's start


@pytest.mark.slow
def test_two_processes_follow_the_order_and_resume_mid_epoch(tmp_path):
    """Real VLTrainer over gloo: rank r trains batches r, r+2, ...; a run resumed in epoch 1 replays epoch 1's order
    (accelerate's skip wrapper does not pass set_epoch on; CurriculumCallback.on_epoch_begin sets it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29600 + os.getpid() % 1000), str(ROOT / "tests" / "curriculum_worker.py"), str(tmp_path), "9"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    first = [x["first"] for x in runs]
    order = first[0]["order"]
    assert first[1]["order"] == order and len(order) == 2  # same plan on both ranks; 9 steps of 6 per epoch
    stream = order[0] + order[1]
    bs, steps = 2, 9
    trained = [first[k]["seen"][j * bs:(j + 1) * bs] for j in range(steps) for k in range(2)]
    assert [i for b in trained for i in b] == stream[:steps * bs * 2]  # the ranks together follow the order
    assert all(i % 3 for i in stream[:24]) and not any(i % 3 for i in stream[-12:])  # open first, closed last
    for k in range(2):  # resumed from checkpoint-8: step 9 gets the batch the uninterrupted run trained at step 9
        assert runs[k]["resume_at"] == 8
        assert runs[k]["resumed"]["seen"][:bs] == first[k]["seen"][8 * bs:9 * bs]
        assert runs[k]["resumed"]["seen"][:bs] != first[k]["seen"][2 * bs:3 * bs]  # not epoch 0's slot


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from data_process.synth import generate
    return generate(tmp_path_factory.mktemp("synth"), n_train=8, n_val=2, n_test=2, size=64, seed=3)


def test_finetune_trains_in_curriculum_order_and_records_it(tiny_models, synth, tmp_path, monkeypatch):
    from medvl.jsonio import read_records
    from train.data import VLDataset
    from train.finetune import parse_args, run

    seen = []
    encode = VLDataset.__getitem__

    def recording(self, i):  # instrumentation of our own dataset: which record the Trainer asked for, in order
        seen.append(int(i))
        return encode(self, i)

    monkeypatch.setattr(VLDataset, "__getitem__", recording)
    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(tiny_models["qwen2_vl"]), "--train_data", synth["train"], "--output_dir", str(out),
            "--stage", "2", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none",
            "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers", "0", "--max_steps", "4",
            "--curriculum", "open_then_closed", "--disable_tqdm", "true"]
    summary = run(*parse_args(argv))
    recs = read_records(synth["train"])
    cur = summary["curriculum"]
    assert cur["curriculum"] == "open_then_closed" and cur["scope"] == "run" and cur["consumed_samples"] == 16
    assert summary["args"]["data"]["curriculum"] == "open_then_closed"
    n_open = sum(1 for r in recs if r["meta"]["answer_type"] == "open")
    assert [p["n_records"] for p in cur["phases"]] == [n_open, len(recs) - n_open]
    order = json.loads((out / "curriculum_order.json").read_text())
    ids = [str(recs[i]["id"]) for i in seen[:16]]
    assert ids == order[0][:16] and cur["first_ids"] == order[0][:20]
    split = cur["phases"][0]["run_positions"][1]
    kinds = [recs[i]["meta"]["answer_type"] for i in seen[:16]]
    assert kinds == ["open"] * split + ["closed"] * (16 - split) and 0 < split < 16
    on_disk = json.loads((out / "run_summary.json").read_text())["curriculum"]
    assert on_disk["order_sha256"] == cur["order_sha256"]


def test_cli_preview_and_subset(tmp_path, capsys):
    from medvl.jsonio import read_records, write_json
    from train.curriculum import main

    write_json(tmp_path / "d.json", _mixed(9))
    assert main(["--data", str(tmp_path / "d.json"), "--curriculum", "closed_then_open"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in shown["phases"]] == ["answer_type=closed", "answer_type=open"] and len(shown["first_ids"]) == 9
    assert main(["--data", str(tmp_path / "d.json"), "--keep", "answer_type=closed", "--out", str(tmp_path / "c.json")]) == 0
    assert [r["id"] for r in read_records(tmp_path / "c.json")] == ["r0", "r3", "r6"]
