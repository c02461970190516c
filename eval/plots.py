"""Plots of a comparison: bars per category group (a panel per category, bars = models), the headline metric of
every category in one chart, training curves per stage from TensorBoard events (eval/curves.py), and the
calibration of closed yes/no answers (eval/calibration.py): a reliability diagram and a risk-coverage curve.

    paths = write_plots({"base": r_base, "stage2": r_stage2}, "result/plots")

Why grouped this way: a reader compares models within a category (the bars of one metric side by side) and
categories within a group (overall/closed/open; the closed types; the dataset's native types; grounding).
Only metrics on a 0-1 scale are drawn (CIDEr's x10 scale would flatten the rest); error bars are the
bootstrap CIs where the metric has one. A metric that is n/a or unavailable gets no bar (never a bar of 0).
Matplotlib's Agg backend: no display needed; PNGs are written atomically.
"""
from __future__ import annotations

import io
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medvl.categories import REGION_TASKS  # noqa: E402
from medvl.metrics.registry import GROUNDING, TEXT, label, names  # noqa: E402
from eval.calibration import calibration_of  # noqa: E402
from eval.categorize import category_order  # noqa: E402
from eval.compare import headline_metric  # noqa: E402
from eval.old_results import upgrade_results  # noqa: E402

# the registry's plotted metrics (all on a 0-1 scale)
TEXT_PLOT_METRICS = tuple(m for m in names(plot=True) if m in TEXT)
GROUNDING_PLOT_METRICS = tuple(m for m in names(plot=True) if m in GROUNDING)


def category_groups(categories) -> dict[str, list[str]]:
    """{group name: categories} in table order; native categories are grouped per native field."""
    groups: dict[str, list[str]] = {}
    for c in sorted(set(categories), key=category_order):
        if c in ("overall", "closed", "open", "caption"):
            g = "main"
        elif c.startswith("closed/"):
            g = "closed_types"
        elif c in ("grounding", *REGION_TASKS):
            g = "grounding"
        elif c.startswith("dataset/"):
            g = "datasets"
        elif c.startswith("native/"):
            g = "native_" + c.split("/")[1]
        else:
            g = "other"
        groups.setdefault(g, []).append(c)
    return groups


def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _save_png(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a plot is as readable as any other output
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _panel(ax, cat: str, results: Mapping[str, dict]) -> bool:
    models = list(results)
    metrics = GROUNDING_PLOT_METRICS if cat == "grounding" else TEXT_PLOT_METRICS
    cats = {m: results[m]["categories"].get(cat) for m in models}
    metrics = [k for k in metrics if any(c and k in c["metrics"] for c in cats.values())]
    if not metrics:
        ax.set_axis_off()
        return False
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        c = cats[model]
        xs, ys, ci_x, ci_y, ci_err = [], [], [], [], [[], []]
        for i, k in enumerate(metrics):
            entry = c["metrics"].get(k) if c else None
            if entry is None:
                continue  # n/a or unavailable: no bar, never a bar of 0
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            ys.append(entry["score"])
            ci = entry.get("ci") or {}
            if ci.get("low") is not None:
                ci_x.append(x)
                ci_y.append(entry["score"])
                ci_err[0].append(entry["score"] - ci["low"])
                ci_err[1].append(ci["high"] - entry["score"])
        ax.bar(xs, ys, width, label=model)
        if ci_x:
            ax.errorbar(ci_x, ci_y, yerr=ci_err, fmt="none", ecolor="black", elinewidth=1, capsize=2)
    ns = sorted({c["n"] for c in cats.values() if c})
    ax.set_title(f"{cat} (n={'/'.join(map(str, ns))})", fontsize=9)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([label(k) for k in metrics], rotation=35, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    return True


def category_figures(results: Mapping[str, dict]):
    """(name, figure) per category group; the caller closes each figure."""
    cats = {c for r in results.values() for c in r["categories"]}
    for group, members in category_groups(cats).items():
        ncols = min(3, len(members))
        nrows = math.ceil(len(members) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
        drawn = [_panel(ax, c, results) for ax, c in zip(axes.flat, members)]
        for ax in list(axes.flat)[len(members):]:
            ax.set_axis_off()
        if not any(drawn):
            plt.close(fig)
            continue
        handles, labels = next(ax for ax, d in zip(axes.flat, drawn) if d).get_legend_handles_labels()
        fig.suptitle(f"{group}  (error bars: 95% bootstrap CI of headline metrics)", fontsize=10, y=0.995)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.96), ncol=len(labels), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / fig.get_figheight()))  # ~0.75 in for title + legend
        yield re.sub(r"[^A-Za-z0-9_.-]+", "_", group), fig


def headline_figure(results: Mapping[str, dict]):
    """One panel, every category: each model's headline metric (closed accuracy / mean IoU / token F1) with its CI.

    The at-a-glance view: where did fine-tuning move the number that matters for that category."""
    models = list(results)
    cats = sorted({c for r in results.values() for c in r["categories"]}, key=category_order)
    rows = []  # (category, metric)
    for c in cats:
        first = next(r["categories"][c] for r in results.values() if c in r["categories"])
        m = headline_metric(first)
        if m is not None:
            rows.append((c, m))
    if not rows:
        return None
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 0.35 * len(rows) * len(models) + 2)), 4.2))
    for j, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for i, (c, m) in enumerate(rows):
            entry = (results[model]["categories"].get(c) or {}).get("metrics", {}).get(m)
            if entry is None:
                continue  # never a bar of 0 for a number that was not computed
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(entry["score"])
            ci = entry.get("ci") or {}
            lo.append(entry["score"] - ci["low"] if ci.get("low") is not None else 0.0)
            hi.append(ci["high"] - entry["score"] if ci.get("high") is not None else 0.0)
        ax.bar(xs, ys, width, label=model)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=1, capsize=2)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{c}\n{label(m)}" for c, m in rows], rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("headline metric")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(models), loc="upper center", bbox_to_anchor=(0.5, 1.14), frameon=False)
    ax.set_title("headline metric per category (95% bootstrap CI)", fontsize=10, pad=24)
    fig.tight_layout()
    return fig


def calibration_figures(results: Mapping[str, dict]) -> list[tuple[str, str, object]]:
    """[(stem, caption, figure)]: the reliability diagram (per non-empty bin: mean confidence vs accuracy, the
    diagonal is perfect calibration) and the risk-coverage curve (selective accuracy of the answers kept when the
    model abstains below each confidence) of every model with calibration data; [] when none has any."""
    cals = {m: calibration_of(r) for m, r in results.items()}
    cals = {m: c for m, c in cals.items() if c.get("available")}
    if not cals:
        return []
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    for m, c in cals.items():
        full = [b for b in c["bins"] if b["count"]]
        sizes = [20 + 180 * b["count"] / c["n"] for b in full]  # marker area ~ share of the answers in the bin
        line, = ax.plot([b["mean_confidence"] for b in full], [b["accuracy"] for b in full], "-", linewidth=1.2,
                        label=f"{m} (ECE {c['ece']:.3f}, n={c['n']})")
        ax.scatter([b["mean_confidence"] for b in full], [b["accuracy"] for b in full], s=sizes,
                   color=line.get_color(), zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("mean confidence in the bin")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(f"reliability of closed yes/no answers ({next(iter(cals.values()))['n_bins']} equal-width bins; "
                 "marker size ~ count)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = [("reliability", "reliability diagram of closed yes/no answers", fig)]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for m, c in cals.items():
        pts = c["risk_coverage"]["points"]
        ax.plot([p["coverage"] for p in pts], [p["selective_accuracy"] for p in pts], "-", linewidth=1.2,
                marker="o" if len(pts) < 30 else None, markersize=3,
                label=f"{m} (AURC {c['risk_coverage']['aurc']:.3f}, accuracy {c['accuracy']:.3f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("accuracy of the answered")
    ax.set_title("risk-coverage: abstaining below a confidence (closed yes/no)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out.append(("risk_coverage", "risk-coverage curve of closed yes/no answers", fig))
    return out


# TensorBoard tags that are bookkeeping, not curves (HF Trainer logs these once or per step; TRL's token count)
_NOT_CURVES = ("runtime", "per_second", "flos", "epoch", "train/train_loss", "num_tokens")


def curve_panels(scalars: Mapping[str, list]) -> dict[str, list[str]]:
    """{panel title: tags}: loss (train + eval), eval metrics, learning rate(s), grad norm, and for Stage 3 (TRL's
    GRPO tags) rewards, KL and completion length each on its own axis (their scales differ by orders), the rest."""
    panels: dict[str, list[str]] = {"loss": [], "eval metrics": [], "learning rate": [], "grad norm": [],
                                    "rewards": [], "KL": [], "completion length (tokens)": [], "other": []}
    for tag in sorted(scalars):
        if any(k in tag for k in _NOT_CURVES) or not scalars[tag]:
            continue
        name = tag.rsplit("/", 1)[-1]
        if name == "loss":
            panels["loss"].append(tag)
        elif "learning_rate" in name or name.startswith("lr"):
            panels["learning rate"].append(tag)
        elif name == "grad_norm":
            panels["grad norm"].append(tag)
        elif tag.startswith("eval/"):
            panels["eval metrics"].append(tag)
        elif name == "reward" or ("rewards/" in tag and name == "mean"):  # the weighted sum and each reward's mean
            panels["rewards"].append(tag)
        elif name == "kl":
            panels["KL"].append(tag)
        elif "completions/" in tag and name in ("mean_length", "min_length", "max_length"):
            panels["completion length (tokens)"].append(tag)
        else:
            panels["other"].append(tag)
    return {k: v for k, v in panels.items() if v}


def curve_figure(run):
    """One figure for a training run (eval.curves.TrainingRun): a panel per curve_panels group; None if empty."""
    panels = curve_panels(run.scalars)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, tags) in zip(axes.flat, panels.items()):
        for tag in tags:
            steps, values = zip(*run.scalars[tag])
            style = "o-" if len(steps) < 30 else "-"  # sparse eval points stay visible
            ax.plot(steps, values, style, markersize=3, linewidth=1.2, label=tag)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{run.label}: {run.tensorboard_dir}", fontsize=9)
    fig.tight_layout()
    return fig


def run_file_stems(runs) -> list[str]:
    """curves_<stage dir name>, made unique (two experiments both have a "stage1")."""
    stems: list[str] = []
    for run in runs:
        name = run.run_dir.name if run.run_dir is not None else run.label
        stem = "curves_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
        k, unique = 2, stem
        while unique in stems:
            unique, k = f"{stem}_{k}", k + 1
        stems.append(unique)
    return stems


@dataclass
class Plot:
    kind: str       # "bars" (a category group), "headline", "curves" (a training run), "calibration"
    stem: str       # file name without .png
    caption: str
    png: bytes


def render_plots(results: Mapping[str, dict], runs=()) -> list[Plot]:
    """Every plot as PNG bytes, rendered once (write_plots writes them; eval/report.py embeds the same bytes).

    runs: eval.curves.TrainingRun list (training curves per stage)."""
    results = upgrade_results(results)  # an older results file says word_f1
    out = []

    def add(kind: str, stem: str, caption: str, fig) -> None:
        try:
            out.append(Plot(kind, stem, caption, png_bytes(fig)))
        finally:
            plt.close(fig)

    for name, fig in category_figures(results):
        add("bars", name, name, fig)
    fig = headline_figure(results)
    if fig is not None:
        add("headline", "headline", "headline metric per category", fig)
    for stem, caption, fig in calibration_figures(results):
        add("calibration", stem, caption, fig)
    for run, stem in zip(runs, run_file_stems(runs)):
        fig = curve_figure(run)
        if fig is not None:
            add("curves", stem, f"{run.label} — {run.tensorboard_dir}", fig)
    return out


def write_plots(results: Mapping[str, dict], out_dir: str | os.PathLike, runs=(),
                plots: list[Plot] | None = None) -> list[Path]:
    """PNGs under out_dir: one per category group, headline.png, curves_<stage>.png per training run, and
    reliability.png + risk_coverage.png when there is calibration data.
    plots: already rendered (render_plots), else rendered here. Returns the paths written."""
    out_dir = Path(out_dir)
    paths = []
    for plot in plots if plots is not None else render_plots(results, runs):
        path = out_dir / f"{plot.stem}.png"
        _save_png(plot.png, path)
        paths.append(path)
    return paths
