"""Evaluate every model's predictions and write comparison tables, a metrics JSON and plots.

Reads <pred_dir>/<model>/predictions.jsonl (from `python -m eval.generate`), run_info.json next to it (the model
family, which decides how boxes are parsed) and perplexity.json when present; categorises questions with
type_mapping.json (from `python -m data_process.data_trans`). Writes, atomically:
  <out_dir>/model_comparison_tables.md   one table per category, best per row in bold, CIs, paired tests, notes
  <out_dir>/model_comparison_tables.txt  the same as plain text (best marked with *)
  <out_dir>/evaluation_metrics.json      every number, per-sample scores, paired tests
  <out_dir>/protocols.json               {protocol: {model: {category: {metric: value}}}}: the same predictions
                                         scored under each --protocols convention (strict, llava_med, medevalkit,
                                         lmms_eval; medvl/metrics/protocols/); protocols_detail.json adds n, CIs,
                                         presets and rules; the tables get one table per protocol and the
                                         published baselines of the same protocol and dataset (eval/baselines.json)
  <out_dir>/plots/*.png                  bar charts per category group, headline.png (every category's headline
                                         metric), curves_<stage>.png (training curves), reliability.png and
                                         risk_coverage.png (calibration) (unless --no_plots)
  <out_dir>/report.html                  with --html: one self-contained page with the tables, curves, plots and
                                         a gallery of images, questions, answers and boxes (eval/report.py)

Calibration of closed yes/no answers (eval/calibration.py): when perplexity.json holds each yes/no record's p(yes)
and p(no) at the answer position (python -m eval.perplexity), evaluation_metrics.json gets per model "calibration"
(ece, n, bins, risk_coverage) and the tables and the report a calibration section with a reliability diagram and a
risk-coverage curve; without them the section says "no calibration data: rerun eval.perplexity".

Leakage: when the categories.json beside --test_data or --type_mapping records a leakage audit with overlaps
(data_process.data_trans --train_data), a warning line per overlapping training file heads the tables and the report.

Training curves are read from the TensorBoard events of the runs behind the evaluated adapters (their
run_summary.json), or of the folders given with --runs.

The first model is the base that the paired tests compare the others with: give the order with --models,
else the model directories are taken alphabetically with one named "base" first.

Every model must answer every id of type_mapping.json (the test set): a model whose predictions lack ids (listed
as failed in run_info.json, or missing, e.g. a file cut short) stops the run naming it with its counts;
--allow_partial scores every model on the ids all of them answered and names the short model in the notes.

A metric that cannot be computed (no Java for METEOR/BLEU/CIDEr, a BERTScore model that does not load) stops
the run with the reason; --allow_missing_metrics writes the tables anyway and shows the reason in place of
the number. It is never reported as 0.

examples:
  python result_statistic.py --pred_dir result/predictions --type_mapping data/type_mapping.json --out_dir result
  python result_statistic.py --pred_dir result/predictions --type_mapping data/type_mapping.json --out_dir result \\
      --models base stage1 stage2 --bertscore_model roberta-large
  python result_statistic.py --pred_dir result/predictions --type_mapping data/type_mapping.json --out_dir result \\
      --bertscore_model /models/minilm --bertscore_layers 6 --allow_missing_metrics --no_plots
  python result_statistic.py --pred_dir result/predictions --type_mapping data/type_mapping.json --out_dir result \
      --html --test_data data/test.json --runs outputs/qwen2vl2b
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medvl.jsonio import DataError
from medvl.metrics.errors import MetricUnavailable
from eval.calibration import attach_calibration
from eval.curves import find_runs, runs_from_results
from eval.leakage_notes import leakage_warnings
from medvl.metrics.protocols import parse_names
from eval.evaluate import compare_models, evaluate_models
from eval.protocol_tables import score_protocols, write_protocols
from eval.report import write_report
from eval.tables import compact_overall, write_tables


def discover_models(pred_dir: Path, wanted: list[str] | None) -> dict[str, Path]:
    """{model: predictions.jsonl} in comparison order (the first is the base)."""
    found = {p.parent.name: p for p in sorted(pred_dir.glob("*/predictions.jsonl"))}
    if wanted:
        missing = [m for m in wanted if m not in found]
        if missing:
            raise DataError(f"{pred_dir}: no predictions.jsonl for {missing}; found {sorted(found)}")
        return {m: found[m] for m in wanted}
    if not found:
        raise DataError(f"{pred_dir}: no <model>/predictions.jsonl found (run python -m eval.generate first)")
    names = sorted(found, key=lambda n: (n != "base", n))
    return {m: found[m] for m in names}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python result_statistic.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred_dir", required=True, type=Path, help="folder holding <model>/predictions.jsonl")
    p.add_argument("--type_mapping", required=True, type=Path, help="type_mapping.json from data_process.data_trans")
    p.add_argument("--output_dir", "--out_dir", dest="out_dir", required=True, type=Path,
                   help="where tables, JSON and plots are written")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help="model folders to compare, in order; the first is the base of the paired tests")
    p.add_argument("--family", default=None,
                   help="model family for box parsing of models whose run_info.json names none (qwen2_vl, "
                        "qwen2_5_vl, qwen3_vl); never overrides run_info.json")
    p.add_argument("--bertscore_model", default=None, metavar="PATH_OR_NAME",
                   help="BERTScore model: a bert-score/hub name or a local directory (offline: a local directory)")
    p.add_argument("--bertscore_layers", type=int, default=None, metavar="N",
                   help="hidden layer for BERTScore (needed for models bert-score does not know; default: its "
                        "tuned value, or the last layer of a local model)")
    p.add_argument("--allow_missing_metrics", action="store_true",
                   help="record a metric that cannot be computed with its reason instead of stopping")
    p.add_argument("--allow_partial", action="store_true",
                   help="score models whose predictions lack test ids (failed or missing; named with their counts "
                        "in the notes); every model is then scored on the ids all of them answered. Default: refuse")
    p.add_argument("--no_plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--html", action="store_true", help="also write <out_dir>/report.html (needs --test_data)")
    p.add_argument("--test_data", type=Path, default=None,
                   help="the test.json the predictions were made from (images and boxes of the report)")
    p.add_argument("--image_root", default=None, help="folder that relative image paths in --test_data start from")
    p.add_argument("--runs", nargs="+", type=Path, default=None, metavar="DIR",
                   help="training output folders whose TensorBoard curves to plot (default: the folders of the "
                        "evaluated adapters that hold a run_summary.json)")
    p.add_argument("--html_max_samples", type=int, default=1000, metavar="N",
                   help="gallery size of the report; above it a seeded random subset (default 1000)")
    p.add_argument("--protocols", default="all", metavar="NAMES",
                   help="scoring protocols for protocols.json and the protocol tables, comma-separated: strict, "
                        "llava_med, medevalkit, lmms_eval (default all; none: skip)")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstraps and paired tests (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.html and args.test_data is None:
        parser.error("--html needs --test_data (the test.json the predictions were made from: images and boxes)")
    try:
        paths = discover_models(args.pred_dir, args.models)
        print(f"models (first = base): {', '.join(paths)}", file=sys.stderr)
        results = evaluate_models(paths, args.type_mapping, default_family=args.family,
                                  bertscore_model=args.bertscore_model, bertscore_layers=args.bertscore_layers,
                                  allow_missing=args.allow_missing_metrics, allow_partial=args.allow_partial,
                                  n_boot=args.n_boot, seed=args.seed)
        attach_calibration(results)
        warnings = leakage_warnings(args.test_data, args.type_mapping)
        runs = find_runs(args.runs) if args.runs else None
        names = [] if args.protocols == "none" else parse_names(args.protocols)
        protocols = score_protocols(results, paths, args.type_mapping, names, n_boot=args.n_boot,
                                    seed=args.seed) if names else None
    except ValueError as e:  # DataError (bad input, named sample) or an unknown --family
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MetricUnavailable as e:
        print(f"error: {e}\n(pass --allow_missing_metrics to write the tables with this metric marked unavailable)",
              file=sys.stderr)
        return 3
    comparisons = compare_models(results, seed=args.seed) if len(results) > 1 else {}
    for line in warnings:
        print(line, file=sys.stderr)
    written = write_tables(results, args.out_dir, comparisons, protocols=protocols, warnings=warnings)
    if protocols:
        written.update(write_protocols(protocols, args.out_dir))
    for key in ("md", "txt", "json", "protocols"):
        if key in written:
            print(f"{key}: {written[key]}")
    plots = None
    if args.html or not args.no_plots:
        from eval.plots import render_plots, write_plots  # matplotlib: only when plots or the report are asked for

        runs = runs if runs is not None else runs_from_results(results)
        plots = render_plots(results, runs)  # rendered once: written as PNGs and embedded in the report
    if not args.no_plots:
        for path in write_plots(results, args.out_dir / "plots", plots=plots):
            print(f"plot: {path}")
    if args.html:
        try:
            path = write_report(results, comparisons, args.out_dir / "report.html", test_data=args.test_data,
                                runs=runs, image_root=args.image_root, max_samples=args.html_max_samples,
                                seed=args.seed, plots=plots, protocols=protocols, warnings=warnings)
        except ValueError as e:  # the test data does not match the predictions
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"html: {path}")
    print()
    print(compact_overall(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
