"""One self-contained HTML report: tables with CIs, training curves, plots and a per-sample gallery.

Written by `python result_statistic.py ... --html --test_data test.json`, or re-rendered from a finished
evaluation (no metric is recomputed) with this module:

examples:
  python -m eval.report --metrics result/evaluation_metrics.json --test_data eval_data/test.json
  python -m eval.report --metrics result/evaluation_metrics.json --test_data eval_data/test.json \\
      --runs outputs/qwen2vl2b --out result/report.html --max_samples 300

What is in it: the headline metric of every category with its 95% CI, every comparison table
(eval/tables.py, same cells as model_comparison_tables.md), the training curves of each stage read from the
TensorBoard event files (eval/curves.py; found through the evaluated adapters' run_summary.json, or --runs),
the bar charts (eval/plots.py), and a gallery: image, question, reference, each model's answer marked right or
wrong, reference boxes (meta.boxes, original pixels) and each model's boxes (parsed in its family's format by
medvl.families.parse_boxes) drawn on the image, with filters by category, dataset and correctness.

Right / wrong per sample, per model: closed questions by closed accuracy; open questions and captions by exact
match (token F1 shown beside it); grounding by IoU > 0.5 of the first box (a missing box is wrong).
The pieces: eval/gallery.py (per-sample data, thumbnails, boxes), eval/report_html.py (the page),
eval/report_assets.py (CSS, script, CSP). An evaluation_metrics.json written before token_f1 was named so (word_f1)
renders the same (eval/old_results.py).
Self-contained: images are JPEG thumbnails and plots PNGs, both base64 inline; CSS and the filter script are
inline; a Content-Security-Policy forbids loading anything else and allows only that script and style (by
sha256: an injected inline script, event handler or style attribute does not run). Written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping

from medvl.jsonio import DataError, atomic_write_text, read_json, read_records
from eval.compare import compare_models
from eval.curves import find_runs, runs_from_results
from eval.gallery import gallery_samples
from eval.leakage_notes import leakage_warnings
from eval.old_results import upgrade_comparisons, upgrade_results
from eval.protocol_tables import read_detail
from eval.report_html import render_html


def write_report(results: Mapping[str, dict], comparisons: dict | None, out_path: str | os.PathLike, *,
                 test_data: str | os.PathLike, runs=None, image_root: str | None = None,
                 allow_outside_root: bool = False, max_samples: int | None = 1000,
                 seed: int = 0, thumb_side: int = 224, metrics_json: Path | None = None, progress: bool = True,
                 plots: list | None = None, protocols: Mapping[str, dict] | None = None,
                 warnings: list[str] | None = None) -> Path:
    """Render and atomically write the report; returns its path.

    runs: eval.curves.TrainingRun list; None finds them through the models' run_info.json (eval.curves).
    plots: eval.plots.render_plots(results, runs) when the caller has them already (rendered here otherwise).
    protocols: eval.protocol_tables.score_protocols(...) (None: protocols_detail.json next to metrics_json, if any).
    warnings: lines at the top of the page (eval.leakage_notes.leakage_warnings; None: the categories.json beside
    test_data, if it records a leakage audit)."""
    from eval.plots import render_plots  # matplotlib: loaded only when plots are rendered here

    results = upgrade_results(results)
    comparisons = upgrade_comparisons(comparisons) if comparisons is not None else None
    if comparisons is None:
        comparisons = compare_models(results) if len(results) > 1 else {}
    if runs is None:
        runs = runs_from_results(results)
    records = read_records(test_data)
    samples, images, info = gallery_samples(results, records, metrics_json=metrics_json, image_root=image_root,
                                            allow_outside_root=allow_outside_root,
                                            max_samples=max_samples, seed=seed, thumb_side=thumb_side,
                                            progress=progress)
    if plots is None:
        plots = render_plots(results, runs)
    if protocols is None and metrics_json is not None:
        protocols = read_detail(metrics_json)
    if warnings is None:
        warnings = leakage_warnings(test_data)
    page = render_html(results, comparisons, samples, images, info, plots, runs, protocols=protocols,
                       warnings=warnings)
    out_path = Path(out_path)
    atomic_write_text(out_path, page)
    for key, what in (("missing_from_test_data", "predicted ids not in the test data"),
                      ("unreadable_images", "unreadable images"), ("boxes_not_parsed", "grounding answers not drawn")):
        if info[key]:
            print(f"report: {len(info[key])} {what} (marked in the report)", file=sys.stderr)
    return out_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, type=Path, help="evaluation_metrics.json written by result_statistic.py")
    p.add_argument("--test_data", required=True, type=Path, help="the test.json the predictions were made from")
    p.add_argument("--out", type=Path, default=None, help="default: report.html next to --metrics")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="training output folders (run_summary.json / TensorBoard events); default: the evaluated "
                        "adapters' folders")
    p.add_argument("--image_root", default=None, help="folder that relative image paths in --test_data start from")
    p.add_argument("--allow_outside_root", action="store_true",
                   help="embed images whose relative path resolves outside --image_root (refused by default, as in "
                        "validation: the page is meant to be sent)")
    p.add_argument("--max_samples", type=int, default=1000, help="gallery size; above it a seeded random subset")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        data = read_json(a.metrics)
        if not isinstance(data, dict) or "results" not in data:
            raise DataError(f"{a.metrics}: not an evaluation_metrics.json (no 'results')")
        runs = find_runs(a.runs) if a.runs else None
        out = write_report(data["results"], data.get("comparisons") or {}, a.out or a.metrics.parent / "report.html",
                           test_data=a.test_data, runs=runs, image_root=a.image_root,
                           allow_outside_root=a.allow_outside_root, max_samples=a.max_samples,
                           seed=a.seed, metrics_json=a.metrics, warnings=data.get("leakage_warnings"))
    except ValueError as e:  # DataError: bad input, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"html: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
