"""Deterministic synthetic "medical-like" VQA + grounding data for the demo and the tests.

The project ships no third-party data. This module draws procedural images of three "modalities"
(CT-like, MRI-like, X-ray-like) that differ globally in layout, brightness and colour tint, half of them with
a bright disc ("lesion") placed wholly inside one quadrant, and writes them with records in the one schema
(medvl/schema.py). The pictures are drawn in data_process/synth_images.py, the records and README text
written in data_process/synth_records.py; this module lays them out on disk:

    DIR/images/synth-<split>-<idx>.png   RGB PNG, size x size
    DIR/stage1_captions.json             one caption record per *train* image (Stage 1, concept alignment)
    DIR/train.json, val.json, test.json  Stage 2 single-turn questions (closed, open, grounding)
    DIR/README.txt                       what the data is

Stage-1 captions are made for the train images only, so the held-out val/test images are never seen in training.

Guarantees (tested in tests/test_synth.py):
  * byte-identical output for the same arguments (and output directory); different seeds give different data;
  * exactly balanced lesion yes/no per split (one extra "yes" when n is odd), modalities and quadrants balanced;
  * the lesion is the only place where any pixel has every channel >= LESION_MIN; every other pixel has every
    channel <= BACKGROUND_MAX, so lesion presence and side are learnable from the pixels;
  * meta.boxes holds the tight box of the lesion pixels, xyxy in absolute pixels (x2, y2 exclusive edges);
  * the per-image mean colour separates the modalities perfectly.

"left"/"right"/"upper"/"lower" are sides of the image as displayed (viewer's side), not the patient's side.

Example:
    python -m data_process.synth --output_dir data/synth --n_train 400 --n_val 40 --n_test 100 --size 112 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_process.synth_images import MIN_SIZE, png_bytes, render
from data_process.synth_records import DATASET, SPLITS, conditions, image_records, readme_text
from medvl.jsonio import DataError, atomic_write_text, write_json
from medvl.schema import record_problems


def _write_bytes(path: Path, data: bytes) -> None:
    """Temp file + rename: a crash never leaves a half-written PNG under the final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _generate(out_dir, n_train: int, n_val: int, n_test: int, size: int = 112, seed: int = 0) -> tuple[dict, dict]:
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise DataError(f"synth: {name} must be a non-negative integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise DataError(f"synth: size must be an integer >= {MIN_SIZE}, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise DataError(f"synth: seed must be an integer in [0, 2**32), got {seed!r}")
    size, seed = int(size), int(seed)
    out = Path(out_dir).expanduser().resolve()
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)

    written: set[str] = set()
    stage1: list[dict] = []
    per_split: dict[str, list[dict]] = {}
    for s_idx, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        layout_rng = np.random.RandomState(np.random.SeedSequence([seed, s_idx, 0]).generate_state(1)[0])
        recs: list[dict] = []
        for i, (modality, quadrant) in enumerate(conditions(n, layout_rng)):
            rng = np.random.RandomState(np.random.SeedSequence([seed, s_idx, 1, i]).generate_state(1)[0])
            arr, box = render(rng, size, modality, quadrant)
            rid = f"{DATASET}-{split}-{i:05d}"
            path = img_dir / f"{rid}.png"
            _write_bytes(path, png_bytes(arr))
            written.add(path.name)
            cap, qs = image_records(rid, str(path), split, modality, quadrant, box, size)
            if split == "train":
                stage1.append(cap)
            recs.extend(qs)
        per_split[split] = recs
    for rec in stage1 + [r for recs in per_split.values() for r in recs]:
        problems = record_problems(rec)
        if problems:  # a bug here, never bad input: fail loudly
            raise DataError(f"synth: record {rec.get('id')!r} is malformed: {'; '.join(problems)}")
    # images of an earlier, larger run into the same folder would be orphans: remove only our own names
    for p in img_dir.glob(f"{DATASET}-*.png"):
        if p.name not in written:
            p.unlink()

    paths = {"out_dir": str(out), "images": str(img_dir), "stage1_captions": str(out / "stage1_captions.json"),
             "train": str(out / "train.json"), "val": str(out / "val.json"), "test": str(out / "test.json"),
             "readme": str(out / "README.txt")}
    write_json(paths["stage1_captions"], stage1)
    for split in SPLITS:
        write_json(paths[split], per_split[split])
    counts = {"images": len(written), "stage1_captions": len(stage1),
              **{f"{s}_records": len(per_split[s]) for s in SPLITS}}
    args = {"output_dir": str(out), "n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size, "seed": seed}
    atomic_write_text(paths["readme"], readme_text(args, counts))
    return paths, counts


def generate(out_dir, n_train: int, n_val: int, n_test: int, size: int = 112, seed: int = 0) -> dict:
    """Write the dataset under out_dir; return {'out_dir', 'images', 'stage1_captions', 'train', 'val', 'test',
    'readme'} as absolute path strings. Deterministic in (out_dir, n_*, size, seed)."""
    return _generate(out_dir, n_train, n_val, n_test, size=size, seed=seed)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_process.synth",
        description="Write a deterministic synthetic 'medical-like' VQA + grounding dataset (CT/MRI/X-ray-like images,"
                    " half with a lesion): images/*.png, stage1_captions.json, train/val/test.json, README.txt.",
        epilog="example:\n  python -m data_process.synth --output_dir data/synth --n_train 400 --n_val 40 --n_test 100"
               " --size 112 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output_dir", "--out", "--out_dir", dest="output_dir", required=True, metavar="DIR",
                    help="output directory (created; our own files in it are overwritten); --out is the old name")
    ap.add_argument("--n_train", type=int, default=400, help="train images (default 400)")
    ap.add_argument("--n_val", type=int, default=40, help="validation images (default 40)")
    ap.add_argument("--n_test", type=int, default=100, help="test images (default 100)")
    ap.add_argument("--size", type=int, default=112, help=f"image side in pixels, >= {MIN_SIZE} (default 112)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        paths, counts = _generate(a.output_dir, a.n_train, a.n_val, a.n_test, size=a.size, seed=a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"paths": paths, "counts": counts, "seconds": round(time.perf_counter() - t0, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
