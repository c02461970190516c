"""wordnet_setup: the rebuilt lexnames table and an nltk-readable copy from the Debian WordNet files."""

import warnings

import pytest

from medvl.metrics import wordnet_setup as ws

pytestmark = pytest.mark.skipif(not all((ws.DEBIAN_DIR / f).is_file() for f in ("data.noun", "index.sense")),
                                reason=f"Debian WordNet files not in {ws.DEBIAN_DIR} ({ws.APT_HINT})")


def test_lexnames_table_matches_data_files():
    ws.check_lexnames(list(ws._WN30_LEXNAMES), ws.DEBIAN_DIR)
    from_man = ws.lexnames_from_man()
    if from_man is not None:  # the man page may be excluded from minimal images
        assert from_man == list(ws._WN30_LEXNAMES)
    shuffled = list(ws._WN30_LEXNAMES)
    shuffled[5], shuffled[30] = shuffled[30], shuffled[5]
    with pytest.raises(ws.SetupError, match="disagrees"):
        ws.check_lexnames(shuffled, ws.DEBIAN_DIR)


def test_build_is_readable_by_nltk(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "LEXNAMES_MAN", tmp_path / "absent.gz")  # exercise the embedded-table path
    final = ws.build(tmp_path, ws.DEBIAN_DIR)
    assert (final / "lexnames").read_text().splitlines()[5] == "05\tnoun.animal\t1"
    assert ws.already_built(tmp_path, ws.DEBIAN_DIR) is False  # not on nltk's search path yet
    monkeypatch.setattr("nltk.data.path", [str(tmp_path)])  # nltk 3.10 refuses to read outside its data path
    assert ws.already_built(tmp_path, ws.DEBIAN_DIR) is True
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": no OMW data, expected
        wn = WordNetCorpusReader(str(final), None)
    dog = wn.synsets("dog")[0]
    assert dog.name() == "dog.n.01" and dog.lexname() == "noun.animal"


def test_missing_source_exits_nonzero(tmp_path, capsys):
    assert ws.main(["--source", str(tmp_path), "--nltk-data", str(tmp_path / "nd"), "--force"]) == 2
    assert "apt-get install" in capsys.readouterr().err
