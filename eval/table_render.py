"""Rendering the comparison tables (eval/tables.py's sections and notes) as Markdown and as plain text."""
from __future__ import annotations

import textwrap


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(sections: list[dict], notes: list[str], warnings: list[str] = ()) -> str:
    out = ["# Model comparison", ""]
    out += [f"> **{_md_escape(w)}**" + "\n" for w in warnings]  # above everything: a leaked test set is read first
    out += ["Best value per row in **bold**. Columns are models; the first is the base.", ""]
    for s in sections:
        head = [s.get("first_column", "metric")] + list(s["header"])
        out += [f"## {s['title']} ({s['n_text']})", "", "| " + " | ".join(map(_md_escape, head)) + " |",
                "|---|" + "---|" * len(s["header"])]
        for label, cells, best in s["rows"]:
            cells = [f"**{c}**" if b else c for c, b in zip(cells, best)]
            out.append(f"| {_md_escape(label)} | " + " | ".join(map(_md_escape, cells)) + " |")
        out.append("")
        if s["notes"]:
            out += [f"- {n}" for n in s["notes"]] + [""]
    out += ["## Notes", ""]
    out += [f"- {n}" if not n.startswith("  ") else f"  - {n.strip()}" for n in notes]
    return "\n".join(out) + "\n"


def render_text(sections: list[dict], notes: list[str], warnings: list[str] = ()) -> str:
    out = ["MODEL COMPARISON  (best value per row marked with *; the first model is the base)", ""]
    for w in warnings:
        out += textwrap.wrap(w, 110, subsequent_indent="  ") + [""]
    for s in sections:
        rows = [(s.get("first_column", "metric"), s["header"])] + [(label, [c + ("*" if b else "") for c, b in zip(cells, best)])
                                            for label, cells, best in s["rows"]]
        widths = [max(len(r[0]) for r in rows)] + [max(len(r[1][j]) for r in rows) for j in range(len(s["header"]))]
        title = f"{s['title']} ({s['n_text']})"
        out += [title, "=" * len(title)]
        for k, (label, cells) in enumerate(rows):
            out.append("  ".join([label.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        out += [f"  note: {n}" for n in s["notes"]] + [""]
    out += ["NOTES", "====="]
    for n in notes:
        indent = "    " if n.startswith("  ") else "  "
        out += textwrap.wrap(n.strip(), 110, initial_indent=indent + ("" if indent == "    " else "- "),
                             subsequent_indent=indent + "  ")
    return "\n".join(out) + "\n"
