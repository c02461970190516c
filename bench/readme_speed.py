"""The README's Speed section, generated from bench/RESULTS.md so it can never be a stale copy.

    python -m bench.readme_speed            # rewrite README.md's section from bench/RESULTS.md
    python -m bench.readme_speed --check    # exit 1 if README.md's section differs (tests/test_readme_speed.py)

RESULTS.md marks what the README shows: each block between `<!-- readme: TITLE -->` and `<!-- /readme -->` is
copied, in file order, under its title; the README's section lies between `<!-- speed:begin -->` and
`<!-- speed:end -->`.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- readme: (.+?) -->\n(.*?)\n<!-- /readme -->", re.S)
SECTION = re.compile(r"(<!-- speed:begin -->\n)(.*?)(<!-- speed:end -->)", re.S)


def section_from(results_md: str) -> str:
    blocks = BLOCK.findall(results_md)
    if not blocks:
        raise ValueError("bench/RESULTS.md marks no block for the README (<!-- readme: TITLE --> ... <!-- /readme -->)")
    parts = ["Generated from [`bench/RESULTS.md`](bench/RESULTS.md) (device, date, command and versions there) by "
             "`python -m bench.readme_speed`; edit RESULTS.md, not this.\n"]
    parts += [f"**{title.strip()}**\n\n{body.strip()}\n" for title, body in blocks]
    return "\n".join(parts)


def render(readme: str, results_md: str) -> str:
    if not SECTION.search(readme):
        raise ValueError("README.md has no <!-- speed:begin --> ... <!-- speed:end --> section")
    return SECTION.sub(lambda m: m.group(1) + section_from(results_md) + "\n" + m.group(3), readme, count=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.readme_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when README.md is stale")
    a = p.parse_args(argv)
    readme_path = REPO / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    new = render(readme, (REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8"))
    if a.check:
        if new != readme:
            print("README.md's Speed section differs from bench/RESULTS.md: run python -m bench.readme_speed",
                  file=sys.stderr)
            return 1
        return 0
    if new != readme:
        tmp = readme_path.with_name(".README.md.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(readme_path)
    print(f"README.md Speed section: {len(BLOCK.findall((REPO / 'bench' / 'RESULTS.md').read_text()))} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
