"""Headline table of the curriculum ablation (scripts/curriculum_ablation.sh) from the eval pipeline's
evaluation_metrics.json and each Stage-2 run's run_summary.json.

    python -m bench.curriculum_summary --result ablation_out/result --out summary.md \\
        --runs ablation_out/run/closed_only_s0 ablation_out/run/open_then_closed_s0 ablation_out/run/mixed_s0
    python -m bench.curriculum_summary --seeds ablation_out/result ablation_out/result_s1 --out seeds.md
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


AGG_ROWS = [("closed", "closed_accuracy", "closed accuracy"), ("closed/yes_no", "closed_accuracy", "yes/no accuracy"),
            ("closed/position", "closed_accuracy", "position accuracy"), ("open", "word_f1", "open: token F1"),
            ("grounding", "mean_iou", "grounding: mean IoU")]


def seeds_table(result_dirs: list[Path]) -> str:
    """One row per (metric, variant), one column per seed, over several ablation result folders; model names are
    `<variant>` (seed 0) or `<variant>_s<seed>`."""
    import re
    import statistics

    from eval.evaluate import compare_models

    scores: dict[tuple[str, str], dict[int, float]] = {}
    per_seed: dict[int, dict[str, dict]] = {}  # seed -> variant -> that model's evaluation result
    for d in result_dirs:
        res = json.loads((d / "evaluation_metrics.json").read_text())
        for model in res["models"]:
            m = re.fullmatch(r"(.+?)(?:_s(\d+))?", model)
            variant, seed = m.group(1), int(m.group(2) or 0)
            per_seed.setdefault(seed, {})[variant] = res["results"][model]
            for cat, metric, label in AGG_ROWS:
                score, _ = _score(res, model, cat, metric)
                if score is not None:
                    scores.setdefault((label, variant), {})[seed] = score
    seeds = sorted({s for v in scores.values() for s in v})
    lines = ["| metric | variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | min - max |",
             "|---|---|" + "---|" * (len(seeds) + 2)]
    variants = list(dict.fromkeys(v for _, v in scores))
    for label, variant in sorted(scores, key=lambda k: ([r[2] for r in AGG_ROWS].index(k[0]), variants.index(k[1]))):
        by_seed = scores[(label, variant)]
        vals = [by_seed[s] for s in seeds if s in by_seed]
        lines.append(f"| {label} | {variant} | " + " | ".join(f"{by_seed[s]:.3f}" if s in by_seed else "-" for s in seeds)
                     + f" | {statistics.mean(vals):.3f} | {min(vals):.3f} - {max(vals):.3f} |")
    # paired tests within each seed, against that seed's first variant (the same test set, the same sample ids)
    base = next(iter(per_seed[seeds[0]]))
    lines += ["", f"Paired difference vs {base} of the same seed (exact McNemar for accuracies, paired bootstrap for "
              "token F1; uncorrected p):", "",
              "| category | variant | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|---|" + "---|" * len(seeds)]
    for cat in ("closed", "closed/yes_no", "open"):
        for variant in [v for v in variants if v != base]:
            cells = []
            for s in seeds:
                models = per_seed.get(s, {})
                if base not in models or variant not in models:
                    cells.append("-")
                    continue
                t = compare_models({base: models[base], variant: models[variant]})["by_model"][variant].get(cat, {})
                cells.append(f"{t['mean_diff']:+.3f} (p={t['p_value']:.2g})" if "p_value" in t else "-")
            lines.append(f"| {cat} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--result", type=Path, help="RESULT_DIR of scripts/run_eval.sh")
    p.add_argument("--runs", type=Path, nargs="+", help="the Stage-2 run folders")
    p.add_argument("--seeds", type=Path, nargs="+", help="instead: result folders of several seeds -> one table")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.seeds:
        text = seeds_table(a.seeds)
    elif a.result and a.runs:
        text = summary(a.result, a.runs)
    else:
        p.error("give --result and --runs, or --seeds")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
