"""data_process/synth.py (+ synth_images.py, synth_records.py): determinism, counts, balance, boxes, schema validity,
learnability of every closed task."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_process import synth, synth_images
from data_process.synth_records import SPLITS
from medvl.jsonio import DataError
from medvl.schema import IMAGE_TAG, record_problems

N = {"n_train": 36, "n_val": 7, "n_test": 24}
SIZE = 112


def _gen(out: Path, seed: int = 0, **kw) -> dict:
    return synth.generate(out, **{**N, **kw}, size=SIZE, seed=seed)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> dict:
    return _gen(tmp_path_factory.mktemp("synth") / "ds")


def _load(paths: dict, name: str) -> list[dict]:
    return json.loads(Path(paths[name]).read_text())


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (SIZE, SIZE)
        return np.asarray(im)


def _images(paths: dict) -> dict[str, dict]:
    """image path -> {modality, box (or None), split} from the modality question of each image."""
    out = {}
    for split in SPLITS:
        for r in _load(paths, split):
            if r["meta"]["question_type"] == "modality":
                boxes = r["meta"]["boxes"]
                out[r["image"]] = {"modality": r["meta"]["modality"], "split": split,
                                   "box": boxes[0]["xyxy"] if boxes else None}
    return out


def _tree(paths: dict) -> dict[str, bytes]:
    root = Path(paths["out_dir"])
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical(ds, tmp_path):
    before = _tree(ds)
    again = _gen(Path(ds["out_dir"]))                      # same folder: every file, JSON included, byte-identical
    assert again == ds and _tree(again) == before
    other = _gen(tmp_path / "elsewhere")                   # other folder: images identical, JSON differs by the root only
    t = _tree(other)
    assert t.keys() == before.keys()
    for name, data in before.items():
        if name.endswith(".png"):
            assert t[name] == data, name
        else:
            assert t[name].decode().replace(other["out_dir"], "ROOT") == data.decode().replace(ds["out_dir"], "ROOT")


def test_different_seed_differs(ds, tmp_path):
    other = _gen(tmp_path / "s1", seed=1)
    a, b = _tree(ds), _tree(other)
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != b[k] for k in pngs)
    assert _load(ds, "train") != [json.loads(json.dumps(r).replace(other["out_dir"], ds["out_dir"]))
                                  for r in _load(other, "train")]


# -------------------------------------------------------------------------------------------------------- counts
def test_counts_ids_and_balance(ds):
    imgs = sorted(Path(ds["images"]).glob("*.png"))
    assert len(imgs) == sum(N.values())
    stage1 = _load(ds, "stage1_captions")
    assert len(stage1) == N["n_train"]                     # captions for train images only (no test leakage)
    assert {r["meta"]["split"] for r in stage1} == {"train"}
    all_ids = [r["id"] for r in stage1]
    for split in SPLITS:
        recs, n = _load(ds, split), N[f"n_{split}"]
        n_yes = (n + 1) // 2
        assert len(recs) == 3 * n + 2 * n_yes                # yes_no, modality, open (+ position, grounding)
        qt = Counter(r["meta"]["question_type"] for r in recs)
        assert qt == {"yes_no": n, "modality": n, "open": n, "position": n_yes, "grounding": n_yes}
        yn = Counter(r["conversations"][1]["value"] for r in recs if r["meta"]["question_type"] == "yes_no")
        assert yn == {"yes": n_yes, "no": n - n_yes}         # exactly balanced (odd n: one extra yes)
        mod = Counter(r["conversations"][1]["value"] for r in recs if r["meta"]["question_type"] == "modality")
        assert set(mod) == set(synth_images.MODALITIES) and max(mod.values()) - min(mod.values()) <= 2
        lr = Counter(r["conversations"][1]["value"] for r in recs if r["meta"]["question_type"] == "position")
        assert set(lr) <= {"left", "right"} and abs(lr["left"] - lr["right"]) <= 1
        assert {r["meta"]["split"] for r in recs} == {split}
        all_ids += [r["id"] for r in recs]
    assert len(all_ids) == len(set(all_ids))
    assert "synth-train-00012-q2" in all_ids or "synth-train-00012-q3" in all_ids


# -------------------------------------------------------------------------------------------------------- schema
def test_records_are_valid_and_short(ds):
    images = set(str(p) for p in Path(ds["images"]).glob("*.png"))
    answers = {"yes_no": {"yes", "no"}, "modality": set(synth_images.MODALITIES), "position": {"left", "right"},
               "grounding": {"lesion"}}
    for name in ("stage1_captions",) + SPLITS:
        for r in _load(ds, name):
            assert record_problems(r) == [], r["id"]
            assert Path(r["image"]).is_absolute() and r["image"] in images
            q, a = r["conversations"][0]["value"], r["conversations"][1]["value"]
            assert q.startswith(IMAGE_TAG + "\n") and q.count(IMAGE_TAG) == 1
            m = r["meta"]
            assert m["dataset"] == "synth" and m["organ"] == "body" and m["modality"] in synth_images.MODALITIES
            assert m["answer_type"] in ("closed", "open")
            if name == "stage1_captions":
                assert m["question_type"] == "caption" and m["answer_type"] == "open" and q.endswith("Describe the image.")
                assert a.split()[1] == m["modality"] and a.endswith(".")
                continue
            assert 1 <= len(a.split()) <= 5, a
            qt = m["question_type"]
            if qt in answers:
                assert a in answers[qt]
            assert (m["answer_type"] == "closed") == (qt in ("yes_no", "modality", "position"))
            assert (m.get("task") == "grounding") == (qt == "grounding")
            if qt == "grounding":
                assert len(m["boxes"]) == 1 and m["boxes"][0]["label"] == "lesion"
            if qt == "open":
                assert a == "no lesion" or a in {f"lesion in the {v} {h}" for v, h in synth_images.QUADRANTS}


# --------------------------------------------------------------------------------------------------------- boxes
def test_boxes_match_the_lesion(ds):
    """The lesion is the only near-white region; its pixels' bounding box IS meta.boxes; side answers match it."""
    recs = {r["id"]: r for s in SPLITS for r in _load(ds, s)}
    for img, info in _images(ds).items():
        px = _pixels(img)
        bright = px.min(axis=2) >= synth_images.LESION_MIN
        box = info["box"]
        if box is None:
            assert not bright.any() and px.max() <= synth_images.BACKGROUND_MAX
            continue
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        assert px[~bright].max() <= synth_images.BACKGROUND_MAX
        ys, xs = np.nonzero(bright)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box       # tight box of the lesion pixels
        assert SIZE / 12 <= (x2 - x1) / 2 <= SIZE / 7                         # radius ~ size/10
        # inside the box differs clearly from a ring of background around it
        inner = px[y1:y2, x1:x2].astype(float).mean()
        ring = np.zeros((SIZE, SIZE), bool)
        ring[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = True
        ring[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = False
        assert inner - px[ring].astype(float).mean() > 40
        # the lesion sits wholly in one half horizontally and vertically, matching the answers
        rid = Path(img).stem
        side = "left" if x2 <= SIZE / 2 else "right"
        vert = "upper" if y2 <= SIZE / 2 else "lower"
        assert (x2 <= SIZE / 2 or x1 >= SIZE / 2) and (y2 <= SIZE / 2 or y1 >= SIZE / 2)
        assert recs[f"{rid}-q2"]["conversations"][1]["value"] == side
        assert recs[f"{rid}-q3"]["conversations"][1]["value"] == f"lesion in the {vert} {side}"
        assert recs[f"{rid}-q0"]["conversations"][1]["value"] == "yes"


def test_lesion_changes_only_the_box():
    """Same generator state with and without a lesion: the images differ inside the box and nowhere else."""
    for modality in synth_images.MODALITIES:
        for quadrant in synth_images.QUADRANTS:
            with_l, box = synth_images.render(np.random.RandomState(7), SIZE, modality, quadrant)
            without, none = synth_images.render(np.random.RandomState(7), SIZE, modality, None)
            assert none is None
            diff = (with_l != without).any(axis=2)
            x1, y1, x2, y2 = box
            assert diff[y1:y2, x1:x2].mean() > 0.6                     # a disc fills ~pi/4 of its box
            diff[y1:y2, x1:x2] = False
            assert not diff.any()


# -------------------------------------------------------------------------------------------------- learnability
def test_trivial_statistics_solve_every_closed_task(ds):
    """Mean colour per channel separates modalities perfectly (nearest centroid fit on train, scored on val+test);
    the count / centroid of near-white pixels gives yes/no and left/right. So the tasks are learnable."""
    feats = {img: (info, _pixels(img)) for img, info in _images(ds).items()}
    train = [(i["modality"], p.reshape(-1, 3).mean(0)) for i, p in feats.values() if i["split"] == "train"]
    cents = {m: np.mean([f for mm, f in train if mm == m], axis=0) for m in synth_images.MODALITIES}
    held = [(i, p) for i, p in feats.values() if i["split"] != "train"]
    assert len(held) == N["n_val"] + N["n_test"]
    for info, px in held:
        f = px.reshape(-1, 3).mean(0)
        assert min(cents, key=lambda m: np.linalg.norm(f - cents[m])) == info["modality"]
    # a single scalar works too: R - B channel mean (CT ~0, MRI > 0, X-ray < 0) with wide margins
    rb = {m: [p[..., 0].mean() - p[..., 2].mean() for i, p in feats.values() if i["modality"] == m]
          for m in synth_images.MODALITIES}
    assert max(rb["X-ray"]) < -8 < min(rb["CT"]) <= max(rb["CT"]) < 8 < min(rb["MRI"])
    for info, px in feats.values():
        bright = px.min(axis=2) >= synth_images.LESION_MIN
        assert bright.any() == (info["box"] is not None)
        if bright.any():
            xc = np.nonzero(bright)[1].mean()
            assert (xc < SIZE / 2) == (info["box"][2] <= SIZE / 2)


# ---------------------------------------------------------------------------------------------------- CLI, errors
def test_cli_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synth.main(["--help"])
    assert e.value.code == 0 and "example" in capsys.readouterr().out
    assert synth.main(["--output_dir", str(tmp_path / "c"), "--n_train", "5", "--n_val", "1", "--n_test", "2",
                       "--size", "48", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["images"] == 8 and out["counts"]["stage1_captions"] == 5
    for key in ("stage1_captions", "train", "val", "test", "readme"):
        assert Path(out["paths"][key]).is_file()
    assert "NOT medical data" in Path(out["paths"]["readme"]).read_text()
    with Image.open(next(Path(out["paths"]["images"]).glob("*.png"))) as im:
        assert im.size == (48, 48) and im.mode == "RGB"
    assert synth.main(["--out", str(tmp_path / "bad"), "--size", "8"]) == 2
    assert "size" in capsys.readouterr().err


def test_bad_arguments_and_stale_images(tmp_path):
    with pytest.raises(DataError, match="n_train"):
        synth.generate(tmp_path / "x", -1, 1, 1)
    with pytest.raises(DataError, match="size"):
        synth.generate(tmp_path / "x", 1, 1, 1, size=16)
    big = synth.generate(tmp_path / "y", 6, 2, 2, size=40)
    assert len(list(Path(big["images"]).glob("*.png"))) == 10
    (Path(big["images"]) / "keep_me.png").write_bytes(b"not ours")
    small = synth.generate(tmp_path / "y", 3, 0, 1, size=40)     # a smaller rerun leaves no orphan images of ours
    names = sorted(p.name for p in Path(small["images"]).glob("*.png"))
    assert names == ["keep_me.png", "synth-test-00000.png"] + [f"synth-train-0000{i}.png" for i in range(3)]
    assert _load(small, "val") == []
