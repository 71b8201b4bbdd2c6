"""Evaluation metrics of the recipe: exact-match accuracy and ANLS.

Both follow the original recipe's evaluation scripts exactly (SPEC section 4):

- accuracy compares ``text.strip().strip('.').lower()`` of the prediction and the answer;
- ANLS (Average Normalised Levenshtein Similarity, the DocVQA metric) is, per question,
  the best over the accepted answers of ``1 - distance / max(len(a), len(b))`` on
  lower-cased, whitespace-trimmed strings, counted as 0 when that normalised distance is
  0.5 or more; the dataset score is the mean over questions.
"""

from __future__ import annotations

from collections.abc import Sequence

import Levenshtein

ANLS_THRESHOLD = 0.5
"""Normalised distances at or above this count as a wrong answer (score 0)."""


def normalize_answer(text: str) -> str:
    """The recipe's normalisation for exact-match accuracy: trim, drop end dots, lower-case."""
    return text.strip().strip(".").lower()


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals one of the normalised answers, else 0.0.

    Args:
        prediction: the generated text.
        answers: the reference answer, or several accepted answers.

    Returns:
        1.0 or 0.0.
    """
    if isinstance(answers, str):
        answers = [answers]
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(answer) for answer in answers))


def normalized_levenshtein(first: str, second: str) -> float:
    """Levenshtein distance divided by the longer length (0.0 for two empty strings)."""
    longest = max(len(first), len(second))
    if longest == 0:
        return 0.0
    return Levenshtein.distance(first, second) / longest


def anls(prediction: str, answers: str | Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one prediction against all accepted answers of its question.

    Args:
        prediction: the generated text.
        answers: the accepted answers (DocVQA lists several variants).
        threshold: normalised distances at or above it score 0.

    Returns:
        A score in [0, 1].

    Raises:
        ValueError: when ``answers`` is empty.
    """
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        raise ValueError("anls needs at least one accepted answer")
    predicted = prediction.strip().lower()
    best = 0.0
    for answer in answers:
        distance = normalized_levenshtein(answer.strip().lower(), predicted)
        score = 0.0 if distance >= threshold else 1.0 - distance
        best = max(best, score)
    return best


METRICS = {"accuracy": exact_match, "anls": anls}
"""Per-record metric functions by name; the dataset score is the mean over records."""


def mean_score(scores: Sequence[float]) -> float | None:
    """Mean of per-record scores (``None`` when there are none)."""
    return sum(scores) / len(scores) if scores else None
