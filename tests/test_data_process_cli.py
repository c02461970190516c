"""data_process entry points follow the flag convention (--output_dir for folders, --model_name_or_path for a
checkpoint, --input for inputs) and the old spellings still work with the same result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_process import data_trans, reason_direct_gene, synth, validate


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return synth.generate(tmp_path_factory.mktemp("cli") / "synth", 2, 1, 3, size=32, seed=1)


def test_synth_output_dir_and_old_out_write_the_same_files(tmp_path, capsys):
    args = ["--n_train", "2", "--n_val", "1", "--n_test", "1", "--size", "32", "--seed", "4"]
    assert synth.main(["--out", str(tmp_path / "d"), *args]) == 0
    old = _tree(tmp_path / "d")
    assert synth.main(["--output_dir", str(tmp_path / "d"), *args]) == 0
    assert _tree(tmp_path / "d") == old and "README.txt" in old
    assert "--output_dir" in old["README.txt"].decode()  # the reproduce line names the current flag


def test_data_trans_output_dir_equals_out_dir(data, tmp_path):
    assert data_trans.main(["--input", data["test"], "--output_dir", str(tmp_path / "new")]) == 0
    assert data_trans.main(["--inputs", data["test"], "--out_dir", str(tmp_path / "old")]) == 0
    new, old = _tree(tmp_path / "new"), _tree(tmp_path / "old")
    assert set(new) >= {"test.json", "type_mapping.json", "categories.json"}
    for name in ("test.json", "type_mapping.json"):
        assert new[name] == old[name]
    assert len(json.loads(new["test.json"])) == len(json.loads(Path(data["test"]).read_text()))


def test_validate_takes_input_and_names_model_name_or_path(data, tmp_path, capsys):
    out = tmp_path / "clean.json"
    validate.main(["--schema_only", "--input", data["train"], "--out", str(out), "--no_progress"])
    assert json.loads(out.read_text()) == json.loads(Path(data["train"]).read_text())
    with pytest.raises(SystemExit):
        validate.main(["--data", data["train"], "--out", str(out)])
    assert "--model_name_or_path is required" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--model_name_or_path", "--model"])
def test_reason_direct_gene_checkpoint_flag_excludes_endpoint(flag, data, tmp_path, capsys):
    """Both spellings are the one local-checkpoint option: argparse refuses it beside --endpoint before any work."""
    with pytest.raises(SystemExit) as e:
        reason_direct_gene.main(["--input", data["train"], "--output_dir", str(tmp_path / "rd"), flag, "ckpt",
                                 "--endpoint", "http://127.0.0.1:9/v1"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "rd").exists()
