"""Token budget: how long a record is once it becomes Phi-3.5-vision input ids.

The sequence is ``<s>`` + per turn ``<|user|>\\n`` + ``<|image_k|>\\n`` per image +
user text + ``<|end|>\\n<|assistant|>\\n`` + answer + ``<|end|>\\n``, then
``<|endoftext|>`` (SPEC section 3). Each placeholder becomes
``phiv_data.phi3v.image_token_count(width, height, num_crops)`` tokens, from the size the
image header gives (after EXIF rotation). Text is counted exactly with a local tokenizer
(``tokenizer.json``, via the ``tokenizers`` package), the pieces between image placeholders
tokenized separately as the processor does; without a tokenizer it is *estimated* at one
token per three characters (an over-estimate for English prose, so the budget errs safe).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from phiv_data.errors import UsageError
from phiv_data.phi3v import ASSISTANT_TAG, END_OF_TEXT, END_TAG, USER_TAG, image_token_count

CHARACTERS_PER_TOKEN_ESTIMATE = 3
_SPECIAL_TAGS = (USER_TAG, ASSISTANT_TAG, END_TAG, END_OF_TEXT)


class TokenCounter:
    """Counts text tokens, exactly (tokenizer folder) or by estimate (``None``).

    Args:
        tokenizer_dir: folder with ``tokenizer.json``; ``None`` to estimate.

    Raises:
        UsageError: when the folder cannot be loaded or ``tokenizers`` is not installed.
    """

    def __init__(self, tokenizer_dir: str | Path | None = None) -> None:
        self.exact = tokenizer_dir is not None
        self._tokenizer: Any = None
        if tokenizer_dir is not None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise UsageError(
                    "--tokenizer needs the 'tokenizers' package",
                    hint="pip install 'phiv[train]', or leave out --tokenizer to estimate",
                ) from None
            path = Path(tokenizer_dir) / "tokenizer.json"
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except Exception as error:  # the tokenizers library raises bare Exceptions
                raise UsageError(f"--tokenizer: cannot load {path}: {error}") from None
        self.count = functools.lru_cache(maxsize=65536)(self._count)

    def _count(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        tags = sum(text.count(tag) for tag in _SPECIAL_TAGS)
        plain = len(text) - sum(text.count(tag) * len(tag) for tag in _SPECIAL_TAGS)
        return tags + math.ceil(plain / CHARACTERS_PER_TOKEN_ESTIMATE)


@functools.lru_cache(maxsize=4096)
def image_tokens(width: int, height: int, num_crops: int) -> int:
    """Cached :func:`phiv_data.phi3v.image_token_count`."""
    return image_token_count(width, height, num_crops)


def record_length(record: Any, image_token_counts: list[int], counter: TokenCounter
                  ) -> tuple[int, int | None]:
    """Length of a record in tokens and where its first answer starts.

    Args:
        record: a record (``conversations[i].images/user/assistant``).
        image_token_counts: tokens of each image of the record, in order.
        counter: the text token counter.

    Returns:
        ``(total_tokens, first_answer_position)``; the position is ``None`` when the record
        has no answer at all.
    """
    total = 1  # <s>
    images = iter(image_token_counts)
    first_answer: int | None = None
    piece = ""
    for turn in record.conversations:
        piece += f"{USER_TAG}\n"
        for _ in turn.images:
            total += counter.count(piece) + next(images)
            piece = "\n"
        piece += f"{turn.user}{END_TAG}\n{ASSISTANT_TAG}\n"
        if turn.assistant is not None:
            if first_answer is None:
                first_answer = total + counter.count(piece)
            piece += f"{turn.assistant}{END_TAG}\n"
    piece += END_OF_TEXT
    total += counter.count(piece)
    return total, first_answer
