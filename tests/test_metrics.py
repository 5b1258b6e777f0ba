"""Answer scoring on hand-checked cases (expected values worked out by hand in the comments)."""

from __future__ import annotations

import pytest

from gprune.metrics import (
    MmeItem,
    exact_match,
    mme_answer,
    mme_correct,
    mme_scores,
    normalize_answer,
    pope_correct,
    pope_metrics,
    strip_punctuation,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("A dog.", "dog"),  # lower case, trailing period removed, article dropped
        ("The Two cats", "2 cats"),  # number word to digit, article dropped
        ("none", "0"),  # EvalAI maps "none" to 0
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # commas are removed from predictions
        ("isnt", "isn't"),  # contraction restored
        ("Hello-world", "hello world"),  # a hyphen inside a word becomes a space
        ("well - done", "well done"),  # a hyphen next to a space is deleted
        ("Man's hat", "man 's hat"),  # EvalAI splits the possessive
        ("  yes\n", "yes"),
        ("What?", "what"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_punctuation_rule_uses_the_digit_comma_digit_switch():
    # "1,000" holds digit,digit so every mark is deleted (the slash too), not replaced by a space
    assert strip_punctuation("1,000/2") == "10002"
    assert strip_punctuation("a/b") == "a b"


def test_period_removal_stops_after_32_periods_like_evalai():
    # EvalAI passes re.UNICODE (32) as re.sub's count: only the first 32 periods go
    assert strip_punctuation("." * 40) == "." * 8


def test_vqa_accuracy_counts_leave_one_out_by_position():
    # 10 x "2": each left-out subset has 9 matches -> min(1, 9/3) = 1 -> mean 1.0
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    # 3 x yes, 7 x no, predict yes: leaving out a yes leaves 2 matches (2/3), leaving out a no leaves 3 (1)
    # -> (3 * 2/3 + 7 * 1) / 10 = 0.9
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    # 1 x yes: leaving it out leaves 0 matches (0), leaving out any of the 9 others leaves 1 (1/3)
    # -> 9 * (1/3) / 10 = 0.3
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3)
    # 2 x yes: leaving out a yes leaves 1 (1/3), leaving out a no leaves 2 (2/3)
    # -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert vqa_accuracy("yes", ["no", "yes", "no", "no", "yes", "no", "no", "no", "no", "no"]) == pytest.approx(0.6)
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


def test_vqa_accuracy_normalises_ground_truths_in_textvqa():
    # ground truths are normalised too: "The Dog." -> "dog", so 4 matches: leave-one-out gives 3/3 for all
    answers = ["The Dog."] * 2 + ["dog"] * 2 + ["cat"] * 6
    assert vqa_accuracy("a dog", answers) == 1.0
    # possessives match because both sides are split the same way
    assert vqa_accuracy("man's", ["man's"] * 10) == 1.0


def test_vqa_accuracy_vqav2_protocol_is_the_official_vqa_normalisation():
    # both sides: punctuation and digit/article steps, lower case in the word step
    assert vqa_accuracy("yes", ["Yes"] * 10, protocol="vqav2") == 1.0
    assert vqa_accuracy("Two", ["2"] * 3 + ["3"] * 7, protocol="vqav2") == pytest.approx(0.9)
    # no possessive split on either side: "man's" matches "man's"; "man 's" (TextVQA's form) does not
    assert vqa_accuracy("man's", ["man's"] * 10, protocol="vqav2") == 1.0
    assert vqa_accuracy("man 's", ["man's"] * 10, protocol="vqav2") == 0.0
    assert vqa_accuracy("man 's", ["man's"] * 10, protocol="textvqa") == 1.0
    # commas are kept unless digit,digit occurs: "red,blue" -> "red blue" (comma becomes a space)
    assert vqa_accuracy("red,blue", ["red blue"] * 10, protocol="vqav2") == 1.0
    assert vqa_accuracy("red,blue", ["red blue"] * 10, protocol="textvqa") == 0.0  # TextVQA drops the comma


def test_vqa_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="protocol"):
        vqa_accuracy("yes", ["yes"], protocol="okvqa")


def test_exact_match_ignores_case_and_punctuation():
    assert exact_match("Yes.", "yes") == 1.0
    assert exact_match(" left ", "Left") == 1.0
    assert exact_match("the left", "left") == 0.0  # no article removal in GQA
    assert exact_match("t-shirt", "tshirt") == 1.0  # punctuation is deleted, not replaced


def test_pope_metrics_by_hand():
    preds = ["yes", "Yes", "no", "no", "yes", "maybe"]
    labels = ["yes", "no", "yes", "no", "yes", "yes"]
    # "Yes" reads as yes. tp = 2 (items 0, 4), fp = 1 (item 1), fn = 1 (item 2; "maybe" is neither yes nor no)
    # correct: items 0, 3, 4 -> 3/6; precision 2/3, recall 2/3, F1 2/3; predicted yes: items 0, 1, 4 -> 3/6
    m = pope_metrics(preds, labels)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 6)  # predictions answering yes
    assert m["label_yes_ratio"] == pytest.approx(4 / 6)  # lmms-eval's "yes ratio" (of the labels)
    assert pope_correct(" YES ", "yes") == 1.0
    assert pope_correct("yes.", "yes") == 0.0  # lmms-eval compares the trimmed string exactly
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        pope_metrics(["yes"], ["perhaps"])


def test_pope_metrics_with_no_positive_predictions():
    m = pope_metrics(["no", "no"], ["yes", "no"])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("text", "label"),
    [("Yes", "yes"), ("no.", "no"), ("y", "yes"), ("n", "no"), ("x", "other"), ("Yes, there is", "yes"),
     ("Not at all", "no"), ("I think so", "other"), ("nope", "no")],
)
def test_mme_answer_parsing(text, label):
    assert mme_answer(text) == label


def test_mme_scores_by_hand():
    items = [
        # category A: image 1 both right, image 2 one right -> acc 3/4 = 75, acc+ 1/2 = 50 -> 125
        MmeItem("A", "1", 1.0), MmeItem("A", "1", 1.0),
        MmeItem("A", "2", 1.0), MmeItem("A", "2", 0.0),
        # category B: one image, both wrong -> 0
        MmeItem("B", "3", 0.0), MmeItem("B", "3", 0.0),
    ]
    s = mme_scores(items)
    assert s["categories"] == {"A": pytest.approx(125.0), "B": 0.0}
    assert s["total"] == pytest.approx(125.0)
    assert s["acc"] == pytest.approx(3 / 6)  # 3 of 6 questions right
    assert s["acc_plus"] == pytest.approx(1 / 3)  # 1 of 3 images with both right
    assert mme_correct("Yes.", "Yes") == 1.0


def test_mme_scores_need_pairs():
    with pytest.raises(ValueError, match="not exactly 2"):
        mme_scores([MmeItem("A", "1", 1.0)])
