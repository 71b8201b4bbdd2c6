"""Every prompt phiv's converters write, in one place (documented in the README).

Each is a ``str.format`` template; ``--prompt-template`` replaces it on the command line
with a string using the same fields.
"""

from __future__ import annotations

UCF101_PROMPT = "Classify the video into one of the following classes: {classes}."
"""The recipe's prompt; ``classes`` is the sorted class names joined by ", "."""

DOCVQA_PROMPT = "{question}"
"""DocVQA: the question exactly as asked (what the recipe's DocVQA script sends after the
page image); field ``question``. The answer is the first of the item's answers."""

NLVR2_PROMPT = (
    "The first image is the left image and the second is the right image. "
    "Is this statement true? {sentence}\nAnswer True or False."
)
"""NLVR2: both images (left, then right) and the sentence; field ``sentence``. The answer
is ``NLVR2_ANSWERS[label]``."""

NLVR2_ANSWERS = {True: "True", False: "False"}
"""NLVR2 answer words, the dataset's own label strings."""

HATEFUL_MEMES_PROMPT = "The text on this meme reads: {text}\nIs this meme hateful? Answer yes or no."
"""Hateful Memes: the meme image and its text, inserted unchanged character for character;
field ``text``. The answer is ``HATEFUL_MEMES_ANSWERS[label]``."""

HATEFUL_MEMES_ANSWERS = {1: "yes", 0: "no"}
"""Hateful Memes answer words: label 1 (hateful) -> "yes", 0 -> "no"."""
