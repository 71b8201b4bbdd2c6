"""Chat text, token ids and labels for one record, in Phi-3.5-vision's format.

For every turn::

    <|user|>\\n<|image_1|>\\n<|image_2|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n

and ``<|endoftext|>`` after the last answer. Images are numbered 1..K over the whole
conversation. Like the reference processor, the text between image placeholders is
tokenized piece by piece (so each piece gets exactly the prefix space the checkpoint's
tokenizer gives it there) without special tokens; one ``<s>`` starts the sequence and none
appears anywhere else. Placeholder ``k`` becomes ``N_k`` copies of the id ``-k``.

Labels are -100 everywhere except the tokens of each answer, its ``<|end|>``, and the final
``<|endoftext|>``; which tokens those are is read from the tokenizer's character offsets,
so it holds for any tokenizer, whatever it merges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phiv_data.errors import DataError, UsageError
from phiv_data.phi3v import (
    ASSISTANT_TAG,
    END_OF_TEXT,
    END_TAG,
    IMAGE_PLACEHOLDER,
    SPECIAL_TOKEN_IDS,
    USER_TAG,
    find_special_text,
)
from phiv_data.schema import Record

IGNORE_INDEX = -100
TRUNCATION_POLICIES = ("error", "drop", "truncate_turns")
"""What to do with a sample longer than ``max_length``: raise :class:`SampleTooLongError`;
drop it (the processor counts it); or keep the longest run of whole leading turns that fits
(rejected like ``error`` when not even the first turn fits). Nothing is ever cut inside an
image or a turn, and a kept training sample always has answer tokens to learn."""


class RecordError(DataError):
    """A record cannot be turned into a model input; says which record and which field."""

    def __init__(self, record_id: str, message: str, *, field: str | None = None,
                 hint: str | None = None) -> None:
        where = f"record {record_id!r}" + (f": {field}" if field else "")
        super().__init__(f"{where}: {message}", hint=hint)
        self.record_id = record_id
        self.field = field


class SpecialTextError(RecordError):
    """User or assistant text holds a special-token string (``<|end|>``, ``<|image_1|>`` ...)."""


class UnlabeledRecordError(RecordError):
    """A record whose last answer is missing was given for training."""


class SampleTooLongError(RecordError):
    """A sample is longer than ``max_length`` and the policy does not allow dropping it."""

    def __init__(self, record_id: str, length: int, max_length: int, detail: str = "") -> None:
        super().__init__(
            record_id,
            f"{length} tokens (images included) exceed max_length {max_length}{detail}",
            hint="raise max_length, lower num_crops, use fewer images, or choose "
            "truncation='drop' or 'truncate_turns'",
        )
        self.length = length
        self.max_length = max_length


@dataclass(frozen=True)
class TextPiece:
    """Text between image placeholders, with the character spans that are learned."""

    text: str
    learned: tuple[tuple[int, int], ...]


def check_record_text(record: Record) -> None:
    """Refuse user or assistant text holding special-token strings.

    Raises:
        SpecialTextError: naming the record, the field and the strings found.
    """
    for index, turn in enumerate(record.conversations):
        for name in ("user", "assistant"):
            text = getattr(turn, name)
            found = find_special_text(text) if text is not None else []
            if found:
                raise SpecialTextError(
                    record.id,
                    "text contains special-token strings " + ", ".join(map(repr, found)),
                    field=f"conversations[{index}].{name}",
                    hint="remove them or break them up; they would shift image numbering "
                    "or inject control tokens",
                )


def conversation_pieces(record: Record, num_turns: int, *, generation: bool) -> list[TextPiece]:
    """The chat text of the first ``num_turns`` turns, split at the image placeholders.

    Args:
        record: the record (text already checked by :func:`check_record_text`).
        num_turns: how many leading turns to use (1..len(record.conversations)).
        generation: leave out the last used turn's answer and end with ``<|assistant|>\\n``
            (nothing is learned); otherwise end with ``<|endoftext|>``.

    Returns:
        ``len(images) + 1`` pieces: piece ``k`` is followed by image ``k + 1``.
    """
    pieces: list[TextPiece] = []
    text: list[str] = []
    learned: list[tuple[int, int]] = []
    length = 0

    def add(part: str, *, learn: bool = False) -> None:
        nonlocal length
        if learn:
            learned.append((length, length + len(part)))
        text.append(part)
        length += len(part)

    image_number = 0
    for index, turn in enumerate(record.conversations[:num_turns]):
        add(f"{USER_TAG}\n")
        for _ in turn.images:
            image_number += 1
            pieces.append(TextPiece("".join(text), tuple(learned)))
            text, learned, length = [], [], 0
            add("\n")  # each placeholder is followed by a newline
        add(f"{turn.user}{END_TAG}\n{ASSISTANT_TAG}\n")
        last = index == num_turns - 1
        if generation and last:
            break
        add(f"{turn.assistant}{END_TAG}", learn=True)
        add("\n")
        if last:
            add(END_OF_TEXT, learn=True)
    pieces.append(TextPiece("".join(text), tuple(learned)))
    return pieces


def conversation_text(record: Record, num_turns: int | None = None, *,
                      generation: bool = False) -> str:
    """The full chat text with its ``<|image_k|>`` placeholders (for display and checks)."""
    pieces = conversation_pieces(record, num_turns or len(record.conversations),
                                 generation=generation)
    parts = [pieces[0].text]
    for number, piece in enumerate(pieces[1:], start=1):
        parts.append(IMAGE_PLACEHOLDER.format(number) + piece.text)
    return "".join(parts)


class ConversationTokenizer:
    """Token ids and labels of records, from any Phi-3.5-vision tokenizer.

    Args:
        tokenizer: a transformers fast tokenizer with the Phi-3.5-vision special tokens
            (the checkpoint's own, or :func:`phiv_train.tokenization.build_tiny_tokenizer`).

    Raises:
        UsageError: the tokenizer is not fast, or its special tokens are not at the
            Phi-3.5-vision ids.
    """

    def __init__(self, tokenizer) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise UsageError("a fast tokenizer (tokenizer.json) is needed for label offsets",
                             hint="load it with phiv_train.tokenization.load_tokenizer")
        for token, expected in SPECIAL_TOKEN_IDS.items():
            actual = tokenizer.convert_tokens_to_ids(token)
            if actual != expected:
                raise UsageError(
                    f"tokenizer maps {token} to {actual}, Phi-3.5-vision uses {expected}",
                    hint="use the tokenizer files of a Phi-3.5-vision checkpoint",
                )
        self.tokenizer = tokenizer
        self.bos_token_id = SPECIAL_TOKEN_IDS["<s>"]

    def encode(self, record: Record, num_img_tokens: Sequence[int], *, generation: bool = False,
               num_turns: int | None = None) -> tuple[list[int], list[int]]:
        """Ids and labels of the first ``num_turns`` turns (all by default).

        Args:
            record: the record; its text must pass :func:`check_record_text`.
            num_img_tokens: tokens of each image used, in order (``image_token_count``).
            generation: build a generation prompt (all labels -100).
            num_turns: how many leading turns to use.

        Returns:
            ``(input_ids, labels)`` as lists of equal length.
        """
        num_turns = num_turns or len(record.conversations)
        pieces = conversation_pieces(record, num_turns, generation=generation)
        if len(num_img_tokens) != len(pieces) - 1:
            raise ValueError(f"record {record.id!r}: {len(pieces) - 1} images in the text, "
                             f"{len(num_img_tokens)} image token counts given")
        encoded = self.tokenizer([piece.text for piece in pieces], add_special_tokens=False,
                                 return_offsets_mapping=True)
        input_ids = [self.bos_token_id]
        labels = [IGNORE_INDEX]
        for index, piece in enumerate(pieces):
            ids = encoded["input_ids"][index]
            input_ids.extend(ids)
            labels.extend(_labels(ids, encoded["offset_mapping"][index], piece.learned))
            if index < len(num_img_tokens):
                input_ids.extend([-(index + 1)] * num_img_tokens[index])
                labels.extend([IGNORE_INDEX] * num_img_tokens[index])
        return input_ids, labels


def _labels(ids: list[int], offsets: list[tuple[int, int]],
            learned: tuple[tuple[int, int], ...]) -> list[int]:
    """The ids of tokens whose characters fall in a learned span, -100 for the others."""
    result = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    if learned and ids:
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        starts, ends = spans[:, 0], spans[:, 1]
        keep = np.zeros(len(ids), dtype=bool)
        for span_start, span_end in learned:
            # A token overlapping the span; a zero-width token counts where it stands.
            keep |= (starts < span_end) & (np.maximum(ends, starts + 1) > span_start)
        result[keep] = np.asarray(ids, dtype=np.int64)[keep]
    return result.tolist()
