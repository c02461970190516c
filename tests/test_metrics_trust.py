"""#16.4 BERTScore only from weights that loaded; #16.5 "|" reaches pycocoevalcap unchanged; #16.12 ROUGE keeps
non-ASCII letters. Each against the real library called directly."""
from __future__ import annotations

import shutil

import pytest

from medvl.metrics import nlg
from medvl.metrics.bertscore import bertscore_f1, default_local_bertscore_model
from medvl.metrics.errors import MetricUnavailable

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _tiny_bert(minilm: str, out, seed: int = 0):
    """A 2-layer BERT with MiniLM's tokenizer, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(f"{minilm}/{name}", out / name)
    return out


@pytest.fixture(scope="module")
def minilm():
    try:
        return default_local_bertscore_model()
    except MetricUnavailable as e:
        pytest.skip(e.reason)


def test_bertscore_refuses_weights_that_did_not_load(minilm, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = _tiny_bert(minilm, tmp_path / "renamed")
    weights = load_file(bad / "model.safetensors")
    renamed = {k.replace("attention.self", "attn.me"): v for k, v in weights.items()}
    assert renamed != weights
    save_file(renamed, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MetricUnavailable, match="did not load"):
        bertscore_f1(["the liver is enlarged"], ["the liver"], model=str(bad), device="cpu")


def test_bertscore_good_checkpoint_scores_the_same_twice(minilm, tmp_path):
    import bert_score

    good = str(_tiny_bert(minilm, tmp_path / "good"))
    preds, refs = ["the liver is enlarged", "a nodule"], ["the liver", "small nodule in the lung"]
    first, _ = bertscore_f1(preds, refs, model=good, device="cpu")
    from medvl.metrics import bertscore

    bertscore._load.cache_clear()  # a fresh load: random init would give other numbers
    second, _ = bertscore_f1(preds, refs, model=good, device="cpu")
    assert first == second
    _, _, direct = bert_score.score(preds, refs, model_type=good, num_layers=2, device="cpu")
    assert first == pytest.approx(direct.tolist(), abs=1e-6)


# ----------------------------------------------------------------------------------------------- "|" and "|||"
PIPE_PREDS = ["the mass is large", "a mass | large", "small nodule | left lung", "no | yes", "liver"]
PIPE_REFS = ["The mass | is large", "the mass is large", "nodule in the left | lung", "no", "the liver | spleen"]


def _direct_coco(preds, refs):
    """pycocoevalcap exactly as its own README runs it: PTBTokenizer, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    meteor, _ = Meteor().compute_score(gts, res)
    return {**{f"bleu{i + 1}": b for i, b in enumerate(bleu)}, "cider": cider, "meteor": meteor}


def test_pipe_scores_equal_unmodified_pycocoevalcap():
    ours = nlg.coco_scores(PIPE_PREDS, PIPE_REFS)
    direct = _direct_coco(PIPE_PREDS, PIPE_REFS)
    for m, v in direct.items():
        assert ours[m]["score"] == pytest.approx(v, abs=1e-9), m
    # ROUGE-L never saw the PTB path: "|" is a separator for rouge-score's tokenizer either way
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert nlg.rouge_l(PIPE_PREDS, PIPE_REFS) == [default.score(r, p)["rougeL"].fmeasure
                                                   for p, r in zip(PIPE_PREDS, PIPE_REFS)]


def test_triple_pipe_is_split_by_ptb_and_refused_untokenized():
    toks = nlg.ptb_tokenize(["a ||| b", "c|||d"])
    assert not any("|||" in t for t in toks)
    ours = nlg.coco_scores(["a mass ||| large", "the liver"], ["the mass ||| is large", "liver"], ["meteor", "cider"])
    direct = _direct_coco(["a mass ||| large", "the liver"], ["the mass ||| is large", "liver"])
    assert ours["meteor"]["score"] == pytest.approx(direct["meteor"]) and ours["cider"]["score"] == pytest.approx(direct["cider"])
    with pytest.raises(MetricUnavailable, match=r"sample 0: text contains '\|\|\|'"):
        nlg.coco_from_tokens({0: ["the mass ||| is large"], 1: ["liver"]}, {0: ["a mass"], 1: ["liver"]}, ["meteor"])


# ----------------------------------------------------------------------------------------------- ROUGE non-ASCII
def test_rouge_keeps_non_ascii_letters():
    assert nlg.rouge_l(["肝脏", "左肺下叶", "ﬁbrosis", "Ödem der Lunge"], ["肝脏", "左肺", "fibrosis", "ödem"]) == \
        pytest.approx([1.0, 2 * 1.0 * 0.5 / 1.5, 1.0, 2 * 1 / 3 * 1.0 / (1 / 3 + 1.0)])
    assert nlg.rouge_1(["肺"], ["肝"]) == [0.0]


@pytest.mark.parametrize("pred, ref", [
    ("The liver is enlarged.", "enlarged liver"), ("nodules in the lungs", "a nodule in the left lung"),
    ("T2-weighted MRI, axial", "axial t2 weighted mri"), ("yes", "no"), ("2.5 cm mass", "25 cm masses"),
    ("running ran runs", "run"), ("", "the liver"), ("x-ray: PA view", "pa x ray"),
])
def test_rouge_ascii_unchanged_vs_default_tokenizer(pred, ref):
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(ref, pred)
    assert nlg.rouge_l([pred], [ref]) == [default["rougeL"].fmeasure]
    assert nlg.rouge_1([pred], [ref]) == [default["rouge1"].fmeasure]
