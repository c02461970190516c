"""Deterministic synthetic "medical-like" VQA + grounding data for the demo and the tests.

The project ships no third-party data. This module draws procedural images of three "modalities"
(CT-like, MRI-like, X-ray-like) that differ globally in layout, brightness and colour tint, half of them with
a bright disc ("lesion") placed wholly inside one quadrant, and writes them with records in the one schema
(medvl/schema.py):

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
    python -m data_process.synth --out data/synth --n_train 400 --n_val 40 --n_test 100 --size 112 --seed 0
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medvl.jsonio import DataError, atomic_write_text, write_json
from medvl.schema import make_record, record_problems

MODALITIES = ("CT", "MRI", "X-ray")
QUADRANTS = (("upper", "left"), ("upper", "right"), ("lower", "left"), ("lower", "right"))
SPLITS = ("train", "val", "test")
DATASET = "synth"
MIN_SIZE = 32
BACKGROUND_MAX = 212   # every non-lesion pixel has all channels <= this
LESION_MIN = 235       # every lesion pixel has all channels >= this
# Per-modality channel gains (R, G, B), applied to the background only: CT neutral, MRI warm, X-ray cool.
TINT = {"CT": (1.0, 1.0, 1.0), "MRI": (1.0, 0.86, 0.66), "X-ray": (0.60, 0.82, 1.0)}

Q_YES_NO = "Is there a lesion?"
Q_MODALITY = "What is the imaging modality?"
Q_POSITION = "Is the lesion on the left or the right?"
Q_OPEN = "Describe the finding."
Q_GROUND = "Locate the lesion."
Q_CAPTION = "Describe the image."


# ----------------------------------------------------------------------------------------------------------- images
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the image centre, in units of the image size (-0.5 .. 0.5)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    return np.meshgrid(c, c)  # u (x, columns), v (y, rows)


def _ct(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Axial body cross-section: black surround, grey ellipse with a bright rim, dark 'lungs', a 'spine'."""
    u, v = _grid(size)
    cu, cv = rng.uniform(-0.02, 0.02, 2)
    a, b = rng.uniform(0.44, 0.46), rng.uniform(0.37, 0.40)
    rho = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    img = np.zeros((size, size))
    img[rho <= 1.0] = rng.uniform(105, 115)
    img[(rho > 0.90) & (rho <= 1.0)] = rng.uniform(180, 195)
    for side in (-1, 1):  # lungs
        lu, lv = cu + side * rng.uniform(0.17, 0.22), cv + rng.uniform(-0.08, 0.0)
        la, lb = rng.uniform(0.11, 0.13), rng.uniform(0.18, 0.21)
        img[((u - lu) / la) ** 2 + ((v - lv) / lb) ** 2 <= 1.0] = rng.uniform(25, 45)
    sr = rng.uniform(0.05, 0.07)  # vertebral body
    img[(u - cu) ** 2 + (v - cv - 0.27) ** 2 <= sr ** 2] = rng.uniform(170, 190)
    return img


def _mri(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Head-like ellipse filled with smooth blobs and a fine gyral texture; near-black surround."""
    u, v = _grid(size)
    cu, cv = rng.uniform(-0.02, 0.02, 2)
    a, b = rng.uniform(0.44, 0.47), rng.uniform(0.46, 0.49)
    inside = ((u - cu) / a) ** 2 + ((v - cv) / b) ** 2 <= 1.0
    tissue = np.full((size, size), rng.uniform(160, 170))
    for k in range(6):  # alternating bright / dark blobs keep the mean stable
        bu, bv = rng.uniform(-0.3, 0.3, 2)
        sig, amp = rng.uniform(0.06, 0.12), (1.0 if k % 2 else -1.0) * rng.uniform(25, 40)
        tissue += amp * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sig * sig))
    fu, fv, ph = rng.uniform(5, 9), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
    tissue += 14 * np.sin(2 * np.pi * (fu * u + fv * v) + ph)
    img = np.full((size, size), 8.0)
    img[inside] = np.clip(tissue, 60, 205)[inside]
    return img


def _xray(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Projection film: dark graded background over the whole frame, bright vertical bone-like bars."""
    u, v = _grid(size)
    img = rng.uniform(84, 90) + rng.uniform(15, 25) * (v + 0.5) - 25 * (u ** 2 + v ** 2)
    centres = np.sort(rng.uniform(-0.42, 0.42, 3))
    for xc in centres:
        half_w = rng.uniform(0.04, 0.05)
        bone = np.clip(1.0 - np.abs(u - xc - 0.03 * np.sin(2 * np.pi * v)) / half_w, 0, 1) ** 0.5
        img = np.maximum(img, rng.uniform(170, 195) * bone)
    return img


_DRAW = {"CT": _ct, "MRI": _mri, "X-ray": _xray}


def render(rng: np.random.RandomState, size: int, modality: str, quadrant: tuple[str, str] | None
           ) -> tuple[np.ndarray, list[int] | None]:
    """One image (uint8 HxWx3) and the tight xyxy box of its lesion (None when there is none).

    The background is drawn before the lesion from the same generator, so the same seed with quadrant=None
    gives the same background: the two images differ only inside the box."""
    grey = _DRAW[modality](rng, size)
    grey = grey + rng.normal(0.0, 3.0, grey.shape)
    rgb = np.clip(grey, 0, BACKGROUND_MAX)[..., None] * np.asarray(TINT[modality])[None, None, :]
    if quadrant is None:
        return np.round(rgb).astype(np.uint8), None
    vert, horiz = quadrant
    r = max(2, int(round(size / 10 * rng.uniform(0.85, 1.15))))
    dx, dy = rng.uniform(r + 1.5, r + 1.5 + 0.07 * size, 2)
    cx = size / 2 + (dx if horiz == "right" else -dx)
    cy = size / 2 + (dy if vert == "lower" else -dy)
    xs = np.arange(size) + 0.5
    mask = (xs[None, :] - cx) ** 2 + (xs[:, None] - cy) ** 2 <= r * r
    val = np.clip(rng.normal(246.0, 3.0, (size, size)), LESION_MIN, 255)
    rgb[mask] = val[mask][:, None]
    ys, xs_ = np.nonzero(mask)
    box = [int(xs_.min()), int(ys.min()), int(xs_.max()) + 1, int(ys.max()) + 1]
    return np.round(rgb).astype(np.uint8), box


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


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


# ---------------------------------------------------------------------------------------------------------- records
def _conditions(n: int, rng: np.random.RandomState) -> list[tuple[str, tuple[str, str] | None]]:
    """n (modality, quadrant-or-None) pairs: lesion exactly balanced (extra 'yes' for odd n), modality balanced
    within lesion / no-lesion, quadrants balanced among lesion images; then shuffled."""
    n_yes = (n + 1) // 2
    conds = [(MODALITIES[k % 3], QUADRANTS[k % 4]) for k in range(n_yes)]  # k % 12 walks all 12 pairs
    conds += [(MODALITIES[k % 3], None) for k in range(n - n_yes)]
    order = rng.permutation(n)
    return [conds[i] for i in order]


def _article(modality: str) -> str:
    return "An" if modality[0] in "AEIMOUX" else "A"  # "An MRI", "An X-ray", "A CT"


def _records(rid: str, image: str, split: str, modality: str, quadrant, box, size: int) -> tuple[dict, list[dict]]:
    finding = f"lesion in the {quadrant[0]} {quadrant[1]}" if quadrant else "no lesion"
    boxes = [{"label": "lesion", "xyxy": box, "image_size": [size, size]}] if box else []

    def meta(answer_type: str, qtype: str, task: str = "vqa") -> dict:
        return {"dataset": DATASET, "split": split, "task": task, "answer_type": answer_type, "question_type": qtype,
                "modality": modality, "organ": "body", "boxes": [dict(b, xyxy=list(b["xyxy"])) for b in boxes]}

    caption = f"{_article(modality)} {modality} image with " + (f"a {finding}." if quadrant else "no lesion.")
    cap = make_record(f"{rid}-cap", image, Q_CAPTION, caption, meta("open", "caption", task="caption"))
    qs = [make_record(f"{rid}-q0", image, Q_YES_NO, "yes" if quadrant else "no", meta("closed", "yes_no")),
          make_record(f"{rid}-q1", image, Q_MODALITY, modality, meta("closed", "modality"))]
    if quadrant:
        qs.append(make_record(f"{rid}-q2", image, Q_POSITION, quadrant[1], meta("closed", "position")))
    qs.append(make_record(f"{rid}-q3", image, Q_OPEN, finding, meta("open", "open")))
    if quadrant:
        qs.append(make_record(f"{rid}-q4", image, Q_GROUND, "lesion", meta("open", "grounding", task="grounding")))
    return cap, qs


def _readme(args: dict, counts: dict) -> str:
    lines = [
        "Synthetic 'medical-like' VQA and grounding data, generated by data_process/synth.py.",
        "NOT medical data: procedural pictures with no patient or third-party content; for demos and tests only.",
        "",
        "Generated with: python -m data_process.synth " + " ".join(f"--{k} {v}" for k, v in args.items()),
        "The same arguments (and output directory) reproduce every file byte for byte.",
        "",
        "Images (images/synth-<split>-<idx>.png): RGB PNG, {s}x{s}. Three 'modalities':".format(s=args["size"]),
        "  CT    - grey elliptical body cross-section on black, bright rim, dark 'lungs', bright 'vertebra'; neutral grey",
        "  MRI   - head-like ellipse of smooth blobs with a fine wavy texture on near-black; warm (yellowish) tint",
        "  X-ray - whole-frame dark graded film with bright vertical bone-like bars; cool (bluish) tint",
        f"Half of the images have a 'lesion': a near-white disc (all channels >= {LESION_MIN}; nothing else in any image",
        f"exceeds {BACKGROUND_MAX}) of radius ~size/10, wholly inside one quadrant (upper/lower x left/right).",
        "left/right/upper/lower are sides of the image as displayed (viewer's side), not the patient's side.",
        "",
        "Records (LLaVA-style schema, medvl/schema.py; image paths are absolute):",
        "  stage1_captions.json - one caption per TRAIN image ('Describe the image.' -> 'A CT image with a lesion in the",
        "                         upper left.'); val/test images get no caption so they stay unseen in training.",
        "  train/val/test.json  - per image, single-turn questions with ids <image id>-q<k>:",
        "    q0 closed yes_no   'Is there a lesion?' -> yes | no   (exactly balanced per split)",
        "    q1 closed modality 'What is the imaging modality?' -> CT | MRI | X-ray",
        "    q2 closed position 'Is the lesion on the left or the right?' -> left | right   (lesion images only)",
        "    q3 open   open     'Describe the finding.' -> 'lesion in the upper left' | 'no lesion'",
        "    q4 grounding       'Locate the lesion.' -> answer 'lesion', target box in meta.boxes; meta.task='grounding'",
        "                       (lesion images only; box text is formatted per model family at collate time)",
        "  meta: dataset, split, task (caption|vqa|grounding), answer_type, question_type, modality, organ='body',",
        "        boxes = [{label: 'lesion', xyxy: [x1, y1, x2, y2], image_size: [w, h]}] on every record of a lesion image",
        "        (empty for others); xyxy is the tight box of the lesion pixels in absolute pixels, x2/y2 exclusive edges.",
        "",
        "Counts: " + ", ".join(f"{k}={v}" for k, v in counts.items()),
    ]
    return "\n".join(lines) + "\n"


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
        for i, (modality, quadrant) in enumerate(_conditions(n, layout_rng)):
            rng = np.random.RandomState(np.random.SeedSequence([seed, s_idx, 1, i]).generate_state(1)[0])
            arr, box = render(rng, size, modality, quadrant)
            rid = f"{DATASET}-{split}-{i:05d}"
            path = img_dir / f"{rid}.png"
            _write_bytes(path, _png_bytes(arr))
            written.add(path.name)
            cap, qs = _records(rid, str(path), split, modality, quadrant, box, size)
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
    args = {"out": str(out), "n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size, "seed": seed}
    atomic_write_text(paths["readme"], _readme(args, counts))
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
        epilog="example:\n  python -m data_process.synth --out data/synth --n_train 400 --n_val 40 --n_test 100"
               " --size 112 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created; our own files in it are overwritten)")
    ap.add_argument("--n_train", type=int, default=400, help="train images (default 400)")
    ap.add_argument("--n_val", type=int, default=40, help="validation images (default 40)")
    ap.add_argument("--n_test", type=int, default=100, help="test images (default 100)")
    ap.add_argument("--size", type=int, default=112, help=f"image side in pixels, >= {MIN_SIZE} (default 112)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        paths, counts = _generate(a.out, a.n_train, a.n_val, a.n_test, size=a.size, seed=a.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"paths": paths, "counts": counts, "seconds": round(time.perf_counter() - t0, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
