"""Stage-3 rewards (medvl/rewards.py) on hand-made completions: each reward's score, which records it applies to,
and the --rewards spec."""
import pytest

from medvl.families import get_family
from medvl.rewards import (answer_part, applies, closed_reward, format_reward, iou_reward, open_f1_reward,
                           parse_rewards, score)
from medvl.schema import make_record


@pytest.mark.parametrize("completion,answers,want", [
    ("yes", ["yes"], 1.0),
    ("Yes, there is a lesion.", ["yes"], 1.0),            # the project's yes/no rule reads the sentence
    ("Yes, there is no lesion.", ["yes"], 0.0),           # contradicted: neither yes nor no
    ("no", ["yes"], 0.0),
    ("Nope.", ["no"], 1.0),                               # synonym
    ("yes/no", ["no"], 0.0),                              # not a yes/no answer
    ("The left.", ["left"], 1.0),                         # a choice answer: equal after normalisation
    ("left side", ["left"], 0.0),                         # exact after normalisation, not containment
    ("MRI", ["CT", "MRI"], 1.0),                          # any accepted answer
    ("<think>bright disc in a quadrant</think> yes", ["yes"], 1.0),   # the answer after the reasoning
    ("<think>yes, it is there", ["yes"], 0.0),            # an open think block: no answer given
])
def test_closed(completion, answers, want):
    assert closed_reward(completion, answers) == want


@pytest.mark.parametrize("completion,answers,want", [
    ("lesion in the upper left", ["lesion in the upper left"], 1.0),
    ("lesion upper left", ["lesion in the upper left"], 6 / 7),       # P 3/3, R 3/4 ("the" is dropped)
    ("lesion in the lower right", ["lesion in the upper left"], 0.5),  # lesion, in | of 4 words each
    ("nothing", ["no lesion"], 0.0),
    ("no lesion", ["lesion in the upper left", "no lesion"], 1.0),     # the best accepted answer
    ("", ["no lesion"], 0.0),
])
def test_open_f1(completion, answers, want):
    assert open_f1_reward(completion, answers) == pytest.approx(want)


BOXES = [{"label": "lesion", "xyxy": [10, 10, 30, 30], "image_size": [100, 100]},
         {"label": "lesion", "xyxy": [60, 60, 90, 90], "image_size": [100, 100]}]


@pytest.mark.parametrize("family,completion,want", [
    ("qwen2_vl", "(100,100),(300,300)", 1.0),                                   # 0-1000 relative, tokens stripped
    ("qwen2_vl", "<|box_start|>(600,600),(900,900)<|box_end|>", 1.0),            # the second reference box
    ("qwen2_vl", "(100,100),(200,300)", 0.5),                                   # half of the first box
    ("qwen2_vl", "a lesion somewhere", 0.0),                                    # no box: a miss, as eval counts it
    ("qwen2_5_vl", '{"bbox_2d": [20, 20, 60, 60], "label": "lesion"}', 1.0),    # absolute in the 200x200 input
    ("qwen2_5_vl", '{"bbox_2d": [20, 20, 60, 60]} {"bbox_2d": [0, 0, 1, 1]}', 1.0),  # the first box is the answer
    ("qwen3_vl", '{"bbox_2d": [600, 600, 900, 900]}', 1.0),                     # 0-1000 relative
    ("qwen3_vl", '{"bbox_2d": [300, 300, 100, 100]}', 0.0),                     # degenerate: counted missing
])
def test_iou(family, completion, want):
    got = iou_reward(completion, BOXES, get_family(family), image_size=(100, 100), input_size=(200, 200))
    assert got == pytest.approx(want, abs=1e-6)


def test_iou_rescales_a_reference_stored_for_another_image_size():
    boxes = [{"xyxy": [20, 20, 60, 60], "image_size": [200, 200]}]  # the same box as [10, 10, 30, 30] at 100x100
    assert iou_reward("(100,100),(300,300)", boxes, get_family("qwen2_vl"), (100, 100), (100, 100)) == \
        pytest.approx(1.0)


@pytest.mark.parametrize("completion,require_think,want", [
    ("yes", False, 1.0),
    ("<think>the disc is bright</think>yes", False, 1.0),
    ("<think>the disc is bright</think>yes", True, 1.0),
    ("yes", True, 0.0),                                   # reasoning required, none given
    ("<think>the disc is bright", False, 0.0),            # unclosed
    ("<think></think>yes", False, 0.0),                   # empty reasoning
    ("<think>bright</think>", False, 0.0),                # no answer after it
    ("<think>a</think>yes<think>b</think>", False, 0.0),  # a second block
    ("yes </think>", False, 0.0),                         # a stray tag
    ("   ", False, 0.0),
])
def test_format(completion, require_think, want):
    assert format_reward(completion, require_think) == want


def test_answer_part():
    assert answer_part("  <think>x</think>  no ") == "no"
    assert answer_part("<think>x") == ""
    assert answer_part(" no ") == "no"


def _rec(answer, **meta):
    return make_record("r", "x.png", "Is there a lesion?", answer, dict({"dataset": "t"}, **meta))


def test_each_record_gets_the_rewards_that_apply_and_none_for_the_rest():
    closed = _rec("yes", answer_type="closed")
    open_ = _rec("lesion in the upper left", answer_type="open")
    grounding = _rec("lesion", answer_type="open", task="grounding", boxes=BOXES)
    untyped = _rec("no")  # no answer_type: the converters' rule decides (a yes/no answer is closed)
    fam = get_family("qwen2_vl")
    assert [applies(n, closed) for n in ("closed", "open_f1", "iou", "format")] == [True, False, False, True]
    assert [applies(n, open_) for n in ("closed", "open_f1", "iou", "format")] == [False, True, False, True]
    assert [applies(n, grounding) for n in ("closed", "open_f1", "iou", "format")] == [False, False, True, True]
    assert applies("closed", untyped) and not applies("open_f1", untyped)
    assert score("open_f1", "yes", closed) is None and score("iou", "yes", closed) is None
    assert score("closed", "Yes.", closed) == 1.0
    assert score("iou", "(100,100),(300,300)", grounding, fam, (100, 100), (100, 100)) == pytest.approx(1.0)
    multi = _rec("ct", answer_type="closed", answers=["CT", "computed tomography"])
    assert score("closed", "computed tomography", multi) == 1.0  # meta.answers: every accepted form
    with pytest.raises(ValueError, match="needs the model family"):
        score("iou", "(1,1),(2,2)", grounding)
    with pytest.raises(ValueError, match="unknown reward 'bleu'"):
        applies("bleu", closed)


@pytest.mark.parametrize("spec,want", [
    ("closed:1.0,open_f1:0.5,iou:1.0,format:0.2", {"closed": 1.0, "open_f1": 0.5, "iou": 1.0, "format": 0.2}),
    ("closed", {"closed": 1.0}),
    (" closed : 2 , format:0 ", {"closed": 2.0, "format": 0.0}),
    ({"iou": 1, "format_think": 0.5}, {"iou": 1.0, "format_think": 0.5}),   # the recipe's YAML mapping
])
def test_parse_rewards(spec, want):
    got = parse_rewards(spec)
    assert got == want and list(got) == list(want)


@pytest.mark.parametrize("spec,match", [
    ("closed:1,bleu:1", "unknown reward 'bleu'"),
    ("closed:1,closed:2", "closed is given twice"),
    ("closed:high", "weight of closed must be a number"),
    ("closed:-1", "finite number >= 0"),
    ("format:0", "no reward with a weight above 0"),
    ("", "no reward with a weight above 0"),
])
def test_parse_rewards_refuses_by_name(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_rewards(spec)
