"""The README's Speed section is what bench/RESULTS.md says (bench/readme_speed.py), never a stale copy."""
import pytest

from bench.readme_speed import REPO, main, render, section_from


def test_readme_speed_section_is_generated_from_results_md():
    assert main(["--check"]) == 0, "run: python -m bench.readme_speed"


def test_a_changed_number_in_results_md_makes_the_readme_stale():
    results = (REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert render(readme, results) == readme
    changed = results.replace("<!-- /readme -->", "| extra | row |\n<!-- /readme -->", 1)
    assert render(readme, changed) != readme and "| extra | row |" in section_from(changed)
    with pytest.raises(ValueError, match="marks no block"):
        section_from("no markers here")
