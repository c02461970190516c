"""Headline table of the curriculum ablation (scripts/curriculum_ablation.sh) from the eval pipeline's
evaluation_metrics.json and each Stage-2 run's run_summary.json.

    python -m bench.curriculum_summary --result ablation_out/result --out summary.md \\
        --runs ablation_out/run/closed_only_s0 ablation_out/run/open_then_closed_s0 ablation_out/run/mixed_s0
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [("closed", "closed_accuracy", "closed accuracy"), ("closed/yes_no", "closed_accuracy", "yes/no accuracy"),
        ("closed/modality", "closed_accuracy", "modality accuracy"), ("closed/position", "closed_accuracy", "position accuracy"),
        ("open", "word_f1", "open: token F1"), ("open", "exact_match", "open: exact match"),
        ("grounding", "mean_iou", "grounding: mean IoU (missing = 0)"), ("grounding", "box_rate", "grounding: box rate")]


def _score(res: dict, model: str, cat: str, metric: str):
    m = res["results"][model]["categories"].get(cat, {}).get("metrics", {}).get(metric)
    if not m:
        return None, None
    return m["score"], m.get("ci")


def _paired(res: dict, model: str, cat: str, metric: str) -> str:
    t = res.get("comparisons", {}).get("by_model", {}).get(model, {}).get(cat)
    if not t or t.get("metric") != metric or "p_value" not in t:
        return ""
    return f" (Δ {t['mean_diff']:+.3f}, p={t['p_value']:.2g})"


def _last_loss(tb_dir: str | None) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir or not Path(tb_dir).is_dir():
        return "n/a"
    ea = EventAccumulator(tb_dir)
    ea.Reload()
    if "train/loss" not in ea.Tags()["scalars"]:
        return "n/a"
    last = ea.Scalars("train/loss")[-1]
    return f"{last.value:.4f} (step {last.step})"


def summary(result_dir: Path, runs: list[Path]) -> str:
    res = json.loads((result_dir / "evaluation_metrics.json").read_text())
    models = res["models"]
    base = res.get("base", models[0])
    lines = [f"| metric | {' | '.join(models)} |", "|---|" + "---|" * len(models)]
    for cat, metric, label in ROWS:
        cells = []
        for m in models:
            score, ci = _score(res, m, cat, metric)
            if score is None:
                cells.append("n/a")
                continue
            cell = f"{score:.3f}" + (f" [{ci['low']:.2f}, {ci['high']:.2f}]" if ci else "")
            cells.append(cell + ("" if m == base else _paired(res, m, cat, metric)))
        n = res["results"][models[0]]["categories"].get(cat, {}).get("n")
        lines.append(f"| {label} (n={n}) | " + " | ".join(cells) + " |")
    lines += ["", "Training (Stage 2):", "", "| run | records | curriculum | phases (positions in the run) | "
              "train loss, mean over the run | train loss, last logged |", "|---|---|---|---|---|---|"]
    for run in runs:
        s = json.loads((run / "run_summary.json").read_text())
        cur = s.get("curriculum") or {}
        phases = ", ".join(f"{p['name']} {p['n_records']}" + (f" @{p['run_positions']}" if "run_positions" in p else "")
                           for p in cur.get("phases", [])) or "-"
        n_rec = s.get("validation_reports", {}).get("train", {}).get("kept")
        mean_loss = s.get("train_metrics", {}).get("train_loss")
        lines.append(f"| {run.name} | {n_rec} | {cur.get('curriculum', 'none')} | {phases} | "
                     f"{mean_loss:.4f} | {_last_loss(s.get('tensorboard_dir'))} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--result", type=Path, required=True, help="RESULT_DIR of scripts/run_eval.sh")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="the Stage-2 run folders")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    text = summary(a.result, a.runs)
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
