"""Conversion + validation stream: peak RSS stays flat as the input grows ten-fold, and every row is accounted for.
The 200k-record run is `python -m bench.stream_convert_validate --n 200000` (numbers in docs/reliability.md)."""
from __future__ import annotations

import pytest

from bench.stream_convert_validate import run


@pytest.mark.slow
def test_conversion_and_validation_run_in_bounded_memory(tmp_path):
    small = run(2_000, tmp_path / "small", whole_load=False)
    big = run(20_000, tmp_path / "big")
    for res in (small, big):
        conv, val = res["convert"], res["validate_schema_only"]
        assert conv["read"] == res["n"] == conv["converted"] + sum(conv["rejected"].values())
        assert conv["rejected"] == {k: v for k, v in res["expected_rejections"].items() if v}
        assert val["input"] == conv["converted"] == val["kept"] + val["rejected"]
    # ten times the rows (~21 MiB of JSON): the streaming steps grow by the id bookkeeping only (~170 B per id),
    # loading the file whole grows by ~70 MiB
    for step in ("convert", "validate_schema_only"):
        growth = big[step]["peak_rss_mib"] - small[step]["peak_rss_mib"]
        assert growth < 15, (step, small[step], big[step])
        assert big[step]["peak_rss_mib"] < big["json_load_whole_file"]["peak_rss_mib"], big
