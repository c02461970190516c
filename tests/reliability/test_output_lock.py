"""#17.6: one process at a time writes into a model's output folder. A second generation exits at once naming the
holder (pid, host, start time); the lock goes with its process, a kill included."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medvl.jsonio import write_json
from tests.conftest import qa_record, write_image

ROOT = Path(__file__).resolve().parents[2]


def _cmd(tiny_models, tmp_path, name="m"):
    recs = [qa_record(f"r{i}", write_image(tmp_path / f"i{i}.png", seed=i)) for i in range(6)]
    write_json(tmp_path / "test.json", recs)
    return [sys.executable, "-m", "eval.generate", "--model", f"{name}={tiny_models['qwen2_vl']}", "--test_data",
            str(tmp_path / "test.json"), "--out_dir", str(tmp_path / "out"), "--max_new_tokens", "4", "--dtype",
            "float32", "--device", "cpu", "--num_workers", "0"]


def _ids(tmp_path):
    return [json.loads(line)["id"] for line in open(tmp_path / "out" / "m" / "predictions.jsonl")]


def test_two_generations_into_one_folder_write_each_id_once(tiny_models, tmp_path):
    cmd = _cmd(tiny_models, tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    ids = _ids(tmp_path)
    assert sorted(ids) == [f"r{i}" for i in range(6)] and len(ids) == len(set(ids)), ids
    assert codes == [0, 1], outs
    refused = outs[[p.returncode for p in procs].index(1)][1]
    assert "is in use by pid" in refused and "--out_dir" in refused, refused


def test_second_process_names_the_holder_and_a_killed_holder_frees_the_folder(tiny_models, tmp_path):
    cmd = _cmd(tiny_models, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from eval.output_dir import lock_folder; "
        "lock_folder(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)"), str(tmp_path / "out" / "m")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and f"in use by pid {holder.pid} on " in second.stderr, second.stderr
        assert time.time() - t0 < 60 and not (tmp_path / "out" / "m" / "predictions.jsonl").exists()
        assert second.stderr.strip().count("\n") == 0, second.stderr  # one line, no traceback
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    after = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr[-2000:]
    assert sorted(_ids(tmp_path)) == [f"r{i}" for i in range(6)]
