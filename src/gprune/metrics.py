"""Answer scoring for VQA-style benchmarks, matching lmms-eval's task code so numbers are comparable.

- `vqa_accuracy`: VQAv2 / TextVQA accuracy. The prediction (and, per protocol, the ground truths) is
  normalised the way EvalAI does (`normalize_answer`); then for each of the n ground-truth answers in
  turn, the other n - 1 answers are compared with the prediction and scored ``min(1, matches / 3)``;
  the accuracy is the mean of those n scores ("by position": a left-out answer is one slot, even when
  other slots hold the same string).
- `exact_match`: GQA (lmms-eval: ignore case and punctuation).
- `pope_metrics`: POPE accuracy, precision, recall, F1 and yes-ratio.
- `mme_scores`: MME's paired yes/no scoring (acc, acc+ and the per-category score acc + acc+).

The rules were read from lmms-eval 0.7.3 (`tasks/_task_utils/vqa_eval_metric.py`, `tasks/vqav2/utils.py`,
`tasks/textvqa/utils.py`, `tasks/gqa/gqa.yaml`, `tasks/pope/utils.py`, `tasks/mme/utils.py`), which
follow EvalAI / the official VQA evaluation; docs/evaluation.md lists every quirk kept on purpose.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

VqaProtocol = Literal["textvqa", "vqav2"]

# EvalAI's contraction table: a word written without its apostrophe(s) -> the written form. Kept entry for
# entry (including its odd ones such as "somebody'd" -> "somebodyd") because scores depend on it.
_CONTRACTIONS_TABLE = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've
mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've
oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't
shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's
somethingd something'd|somethingd've something'd've|something'dve something'd've
somethingll something'll|thats that's|thered there'd|thered've there'd've|there'dve there'd've
therere there're|theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll
theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've
werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|whered where'd
wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's
whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll
yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've
you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS: dict[str, str] = dict(
    pair.split(" ") for line in _CONTRACTIONS_TABLE.strip().splitlines() for pair in line.split("|")
)
_NUMBER_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUMBER_WORDS: dict[str, str] = {"none": "0"} | {w: str(i) for i, w in enumerate(_NUMBER_NAMES)}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d)(,)+(?=\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_PERIOD_STRIP_LIMIT = 32  # EvalAI passes re.UNICODE (= 32) where `count` goes: at most 32 periods are removed


def strip_punctuation(text: str) -> str:
    """EvalAI punctuation rule: a mark next to a space (or any text with a digit,digit comma) is deleted,
    otherwise it becomes a space; a period not followed by a digit is deleted."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if delete_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_STRIP_LIMIT)


def digits_and_articles(text: str) -> str:
    """Lower-case, number words zero..ten (and "none") to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _vqa_eval_normalize(text: str) -> str:
    """The official VQA script's normalisation (lmms-eval's VQAv2): whitespace, punctuation, digits/articles."""
    return digits_and_articles(strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def normalize_answer(text: str) -> str:
    """EvalAI's full answer normalisation, as lmms-eval applies it to predictions."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(strip_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str], *, protocol: VqaProtocol = "textvqa") -> float:
    """VQA accuracy of one prediction against its ground-truth answers (usually ten), as lmms-eval 0.7.3 scores it.

    protocol "textvqa" (lmms-eval's TextVQA): prediction and every answer get `normalize_answer`.
    protocol "vqav2" (lmms-eval's VQAv2, like the official VQA evaluation script): prediction and every
    answer get tabs/newlines turned into spaces, trimming, then only the punctuation and digit/article
    steps; the first step of `normalize_answer` (dropping commas and question marks, splitting "'s") is
    not applied, so e.g. "man's" stays one word.
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"vqa_accuracy needs a non-empty list of ground-truth answers, got {answers!r}")
    if protocol == "textvqa":
        pred = normalize_answer(prediction)
        truths = [normalize_answer(a) for a in answers]
    elif protocol == "vqav2":
        pred = _vqa_eval_normalize(prediction)
        truths = [_vqa_eval_normalize(a) for a in answers]
    else:
        raise ValueError(f"protocol must be 'textvqa' or 'vqav2', got {protocol!r}")
    matches = [t == pred for t in truths]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(matches)


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when equal ignoring case, ASCII punctuation and surrounding whitespace (lmms-eval's GQA metric)."""
    return float(prediction.lower().translate(_PUNCT_TABLE).strip() == answer.lower().translate(_PUNCT_TABLE).strip())


def _yes_no_label(text: str, name: str) -> str:
    label = text.lower().strip()
    if label not in ("yes", "no"):
        raise ValueError(f"{name} must be 'yes' or 'no', got {text!r}")
    return label


def pope_correct(prediction: str, label: str) -> float:
    """POPE per-question score: the lower-cased, trimmed prediction equals the yes/no label (lmms-eval)."""
    return float(prediction.lower().strip() == _yes_no_label(label, "a POPE label"))


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE accuracy, precision, recall and F1 (positive class "yes") and the yes-ratio of the predictions.

    A prediction counts as "yes" / "no" only when it is exactly that word after lower-casing and trimming
    (lmms-eval's rule); anything else is wrong and neither a positive nor a negative prediction.
    Note: lmms-eval's own ``pope_yes_ratio`` is the share of "yes" *labels*; ours is the POPE paper's
    share of "yes" *predictions* (the one that shows a model's bias); both are in the results.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions but {len(labels)} labels")
    if not predictions:
        raise ValueError("POPE metrics need at least one prediction")
    preds = [p.lower().strip() for p in predictions]
    gts = [_yes_no_label(g, "a POPE label") for g in labels]
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, gts, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, gts, strict=True))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, gts, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(p == g for p, g in zip(preds, gts, strict=True)) / len(gts),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(p == "yes" for p in preds) / len(preds),
        "label_yes_ratio": sum(g == "yes" for g in gts) / len(gts),
    }


def mme_answer(prediction: str) -> str:
    """MME's reading of a free-form answer: "yes", "no" or "other" (lmms-eval's `parse_pred_ans`)."""
    text = prediction.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_correct(prediction: str, label: str) -> float:
    """MME per-question score: 1.0 when the parsed answer equals the yes/no label."""
    return float(mme_answer(prediction) == _yes_no_label(label.replace(".", ""), "an MME label"))


@dataclass(frozen=True)
class MmeItem:
    """One scored MME question: its category, the image (pair) it belongs to, and 0/1 correctness."""

    category: str
    pair: str
    correct: float


def mme_scores(items: Iterable[MmeItem]) -> dict[str, float | dict[str, float]]:
    """MME paired yes/no scores. Each image carries two questions (one "yes", one "no").

    Per category: acc = % of questions right, acc+ = % of images with both right, score = acc + acc+
    (0..200). "total" sums the category scores (MME's perception / cognition totals when the data holds
    just those categories); "acc" and "acc_plus" are over all questions and images (fractions in [0, 1]).
    """
    pairs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for item in items:
        pairs[(item.category, item.pair)].append(item.correct)
    if not pairs:
        raise ValueError("MME scores need at least one answered question")
    bad = [f"{c}/{p} ({len(s)})" for (c, p), s in pairs.items() if len(s) != 2]
    if bad:
        raise ValueError(f"MME scores questions in pairs, but these images have not exactly 2: {bad[:5]}")
    per_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (category, _), scores in pairs.items():
        per_category[category].append((sum(scores) / 2, float(sum(scores) == 2)))
    categories = {
        c: 100.0 * (sum(a for a, _ in v) + sum(p for _, p in v)) / len(v) for c, v in sorted(per_category.items())
    }
    every = [v for vs in per_category.values() for v in vs]
    return {
        "total": sum(categories.values()),
        "acc": sum(a for a, _ in every) / len(every),
        "acc_plus": sum(p for _, p in every) / len(every),
        "categories": categories,
    }
