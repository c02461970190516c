"""Bar charts of the comparison: one PNG per category group, one panel per category, bars = models.

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
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .evaluate import METRIC_INFO, category_order  # noqa: E402

TEXT_PLOT_METRICS = ("closed_accuracy", "exact_match", "word_f1", "rouge_l", "bleu4", "meteor", "bertscore_f1")
GROUNDING_PLOT_METRICS = ("box_rate", "mean_iou", "mean_iou_boxed_only", "iou_gt_0_5_rate", "centre_inclusion_rate")


def category_groups(categories) -> dict[str, list[str]]:
    """{group name: categories} in table order; native categories are grouped per native field."""
    groups: dict[str, list[str]] = {}
    for c in sorted(set(categories), key=category_order):
        if c in ("overall", "closed", "open", "caption"):
            g = "main"
        elif c.startswith("closed/"):
            g = "closed_types"
        elif c == "grounding":
            g = "grounding"
        elif c.startswith("dataset/"):
            g = "datasets"
        elif c.startswith("native/"):
            g = "native_" + c.split("/")[1]
        else:
            g = "other"
        groups.setdefault(g, []).append(c)
    return groups


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
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
    ax.set_xticklabels([METRIC_INFO[k][0] for k in metrics], rotation=35, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    return True


def write_plots(results: Mapping[str, dict], out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per category group under out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    cats = {c for r in results.values() for c in r["categories"]}
    paths = []
    for group, members in category_groups(cats).items():
        ncols = min(3, len(members))
        nrows = math.ceil(len(members) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
        try:
            drawn = [_panel(ax, c, results) for ax, c in zip(axes.flat, members)]
            for ax in list(axes.flat)[len(members):]:
                ax.set_axis_off()
            if not any(drawn):
                continue
            handles, labels = next(ax for ax, d in zip(axes.flat, drawn) if d).get_legend_handles_labels()
            fig.suptitle(f"{group}  (error bars: 95% bootstrap CI of headline metrics)", fontsize=10, y=0.995)
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.96), ncol=len(labels), fontsize=8,
                       frameon=False)
            fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / fig.get_figheight()))  # ~0.75 in for title + legend
            path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', group)}.png"
            _save_png(fig, path)
            paths.append(path)
        finally:
            plt.close(fig)
    return paths
