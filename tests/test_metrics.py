"""Accuracy and ANLS on hand-checked cases (distances worked out by hand in the comments)."""

from __future__ import annotations

import pytest

from phiv_train.metrics import (
    anls,
    exact_match,
    mean_score,
    normalize_answer,
    normalized_levenshtein,
)


@pytest.mark.parametrize(("prediction", "answer", "expected"), [
    ("BabyCrawling", "BabyCrawling", 1.0),
    (" babycrawling. ", "BabyCrawling", 1.0),   # trimmed, end dot dropped, lower-cased
    ("True.", "true", 1.0),
    ("...yes...", "YES", 1.0),                    # strip('.') removes runs of dots at both ends
    ("Baby Crawling", "BabyCrawling", 0.0),       # inner spaces matter
    ("False", "True", 0.0),
    ("", "", 1.0),
])
def test_exact_match(prediction, answer, expected):
    assert exact_match(prediction, answer) == expected


def test_exact_match_accepts_several_answers():
    assert exact_match("hateful", ["not hateful", "Hateful"]) == 1.0
    assert exact_match("maybe", ["yes", "no"]) == 0.0


def test_normalize_answer_is_the_recipes():
    assert normalize_answer("  Archery.\n") == "archery"
    # the recipe strips whitespace first, then dots: a dot before a space survives
    assert normalize_answer("archery. ") == "archery"
    assert normalize_answer(". archery") == " archery"


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    ("1986", ["1986"], 1.0),
    ("  Dr. SMITH ", ["dr. smith"], 1.0),            # lower-cased and trimmed
    ("kitten", ["sitting"], 1 - 3 / 7),              # 3 edits over 7 characters
    ("1987", ["1985", "1986"], 0.75),                # 1 edit over 4, best of the answers
    ("1986", ["1985", "1986"], 1.0),
    ("flaw", ["lawn"], 0.0),                          # 2/4 = 0.5: at the threshold scores 0
    ("abcdefghij", ["abcdefghXY"], 0.8),             # 2/10 = 0.2
    ("abcdefghij", ["abcdeXYZWV"], 0.0),             # 5/10
    ("abcdefghij", ["abcdefXYZW"], 0.6),             # 4/10
    ("", ["answer"], 0.0),
    ("", [""], 1.0),
])
def test_anls_hand_checked(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected)


def test_anls_dataset_mean():
    scores = [anls("kitten", ["sitting"]), anls("1986", ["1986"]), anls("x", ["yyy"])]
    assert mean_score(scores) == pytest.approx((4 / 7 + 1.0 + 0.0) / 3)
    assert mean_score([]) is None


def test_anls_needs_answers():
    with pytest.raises(ValueError, match="at least one"):
        anls("a", [])


def test_normalized_levenshtein_symmetry():
    assert normalized_levenshtein("abc", "") == 1.0
    assert normalized_levenshtein("ab", "ba") == normalized_levenshtein("ba", "ab") == 1.0
