"""Long run in bounded memory: a synthetic LLaVA-Med-style file of N records (a JSON list, as the release ships
`llava_med_alignment_500k.json`) -> `data_process.convert llava_med` -> `data_process.validate`, each step in its
own process, its peak RSS read from the kernel (the child's VmHWM). For scale, the peak RSS of loading the same file
whole (`python -m json.tool`, json.load + dump: what the converter's json.load did before it streamed, and more).

1% of the rows name a missing image, 1% have an empty answer, 1% repeat an earlier row: the report must account for
every row (read = converted + rejected) and validation for every record (input = kept + rejected).

    python -m bench.stream_convert_validate --n 200000                       # ~1-2 min on 2 CPU cores
    python -m bench.stream_convert_validate --n 20000 --processor_model /tmp/tiny   # + validation through the
                                                                             # real processor (image decode, template)
Results: bench/results/stream_<n>.json (with --save) and docs/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 2000  # distinct image names (hard links to one small JPEG): the converter stats each one
WORDS = ("the chest x ray shows a right lower lobe opacity consistent with pneumonia there is no pleural effusion "
         "the cardiac silhouette is normal in size ct of the abdomen demonstrates a hypodense hepatic lesion "
         "histology shows atypical cells with enlarged nuclei what does the image show describe the findings").split()


def write_dataset(path: Path, image_dir: Path, n: int, seed: int = 0) -> dict:
    """Stream n LLaVA-Med instruct rows into a JSON list; returns the expected rejections."""
    from PIL import Image

    image_dir.mkdir(parents=True, exist_ok=True)
    first = image_dir / "img0.jpg"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(first)
    for i in range(1, N_IMAGES):
        os.link(first, image_dir / f"img{i}.jpg")
    rng = random.Random(seed)
    expect = {"image_not_found": 0, "empty_answer": 0, "duplicate_row": 0}
    prev = None
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(n):
            kind = rng.random()
            if kind < 0.01 and prev is not None:  # a good row again (a bad one would be rejected for its fault)
                row, expect["duplicate_row"] = prev, expect["duplicate_row"] + 1
            else:
                turns = []
                for t in range(rng.choice((2, 4, 6))):
                    text = " ".join(rng.choices(WORDS, k=rng.randint(8, 60)))
                    turns.append({"from": "human" if t % 2 == 0 else "gpt", "value": text})
                turns[0]["value"] = "<image>\n" + turns[0]["value"]
                image = f"img{i % N_IMAGES}.jpg"
                if kind < 0.02:
                    image, expect["image_not_found"] = f"missing{i}.jpg", expect["image_not_found"] + 1
                elif kind < 0.03:
                    turns[-1]["value"], expect["empty_answer"] = "  ", expect["empty_answer"] + 1
                row = {"id": f"PMC{1000000 + i}_fig{i % 7}", "image": image, "conversations": turns,
                       "domain": {"chest_xray": kind < 0.5, "mri": False, "ct_scan": kind >= 0.5, "histology": False}}
            f.write(("\n" if i == 0 else ",\n") + json.dumps(row))
            if kind >= 0.03:
                prev = row
        f.write("\n]\n")
    return expect


_MEASURE = """
import runpy, sys
module, out = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code or 0
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
open(out, "w").write(hwm.split()[1])
sys.exit(code)
"""


def run_measured(module: str, args: list[str], workdir: Path) -> tuple[float, float, str]:
    """(peak RSS in MiB, seconds, output) of `python -m module args` in a child process. The peak is the child's
    own VmHWM: its rusage ru_maxrss would also count the parent's pages at fork (hundreds of MiB under pytest)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    hwm = workdir / f".{module}.hwm"
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", _MEASURE, module, str(hwm), *args], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({r.returncode}):\n{out[-3000:]}")
    return int(hwm.read_text()) / 1024, time.time() - t0, out  # VmHWM is in kB


def run(n: int, workdir: Path, processor_model: str | None = None, whole_load: bool = True) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    data, images = workdir / "llava_med_instruct_synthetic.json", workdir / "images"
    expect = write_dataset(data, images, n)
    res = {"n": n, "input_mib": round(data.stat().st_size / 2 ** 20, 1), "expected_rejections": expect}
    if whole_load:
        rss, sec, _ = run_measured("json.tool", [str(data), os.devnull], workdir)
        res["json_load_whole_file"] = {"peak_rss_mib": round(rss, 1), "seconds": round(sec, 2)}
    conv = workdir / "converted.jsonl"
    rss, sec, _ = run_measured("data_process.convert", ["llava_med", "--input", str(data), "--image_root", str(images),
                                                        "--out", str(conv), "--kind", "instruct", "--no_progress"], workdir)
    rep = json.loads((workdir / "converted.report.json").read_text())
    res["convert"] = {"peak_rss_mib": round(rss, 1), "seconds": round(sec, 2), "read": rep["read"],
                      "converted": rep["converted"], "rejected": {k: len(v) for k, v in rep["rejected"].items()}}
    clean = workdir / "clean.jsonl"
    rss, sec, _ = run_measured("data_process.validate", ["--schema_only", "--data", str(conv), "--out", str(clean),
                                                         "--no_progress"], workdir)
    vrep = json.loads((workdir / "clean.report.json").read_text())
    res["validate_schema_only"] = {"peak_rss_mib": round(rss, 1), "seconds": round(sec, 2), "input": vrep["input"],
                                   "kept": vrep["kept"], "rejected": vrep["rejected"]}
    if processor_model:
        rss, sec, _ = run_measured("data_process.validate", ["--model", processor_model, "--data", str(conv), "--out",
                                                             str(workdir / "clean_proc.jsonl"), "--no_progress"], workdir)
        prep = json.loads((workdir / "clean_proc.report.json").read_text())
        res["validate_processor"] = {"peak_rss_mib": round(rss, 1), "seconds": round(sec, 2), "input": prep["input"],
                                     "kept": prep["kept"], "rejected": prep["rejected"],
                                     "records_per_s": round(prep["input"] / sec, 1)}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--workdir", default=None, help="default: a temp dir, removed afterwards")
    p.add_argument("--processor_model", default=None, help="also validate through this checkpoint's processor")
    p.add_argument("--save", action="store_true", help="write bench/results/stream_<n>.json")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(a.n, Path(a.workdir or tmp), a.processor_model)
    print(json.dumps(res, indent=2))
    if a.save:
        out = ROOT / "bench" / "results" / f"stream_{a.n}.json"
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
