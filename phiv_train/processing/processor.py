"""Record -> model inputs: the one object the trainer uses to prepare samples."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from PIL import Image

from phiv_data.errors import MediaError, UsageError
from phiv_data.phi3v import DEFAULT_NUM_CROPS, image_token_count
from phiv_data.schema import Record
from phiv_train.processing.conversation import (
    TRUNCATION_POLICIES,
    ConversationTokenizer,
    RecordError,
    SampleTooLongError,
    UnlabeledRecordError,
    check_record_text,
)
from phiv_train.processing.image import Phi3VImageProcessor, load_image


def load_record_images(record: Record, images_root: str | os.PathLike) -> list[Image.Image]:
    """Load every image of a record, in order, decoded and EXIF-rotated.

    Args:
        record: the record whose ``conversations[*].images`` paths are loaded.
        images_root: the folder the paths are relative to.

    Returns:
        The images, in the order the model sees them.

    Raises:
        RecordError: a path is absolute or climbs out of the root with ``..``.
        MediaError: an image is missing or cannot be decoded; names the record, the field
            and the file.
    """
    root = Path(images_root)
    images = []
    for turn_index, turn in enumerate(record.conversations):
        for image_index, relative in enumerate(turn.images):
            field = f"conversations[{turn_index}].images[{image_index}]"
            parts = PurePosixPath(relative)
            if parts.is_absolute() or ".." in parts.parts or "\\" in relative:
                raise RecordError(record.id, f"image path {relative!r} must be relative, "
                                  "with '/' separators, inside the images root", field=field)
            try:
                images.append(load_image(root / relative))
            except MediaError as error:
                raise MediaError(f"record {record.id!r}: {field}: {error.message}",
                                 hint=error.hint) from None
    return images


class Phi3VProcessor:
    """Turns records into Phi-3.5-vision inputs for training and for generation.

    Example::

        processor = Phi3VProcessor.from_pretrained("checkpoints/phi-3.5-vision", num_crops=16,
                                                   max_length=4096, truncation="drop")
        sample = processor.encode(record, images_root="data/docvqa/images")
        # {"input_ids": (L,), "labels": (L,), "pixel_values": (k, 17, 3, 336, 336),
        #  "image_sizes": (k, 2), "record_id": "..."}; None when dropped (see .dropped)

    Args:
        tokenizer: a fast tokenizer with the Phi-3.5-vision special tokens.
        num_crops: the most 336-pixel crops per image.
        max_length: the most tokens per sample, image tokens included (None: no limit).
        truncation: ``"error"`` | ``"drop"`` | ``"truncate_turns"`` for longer samples
            (see :data:`~phiv_train.processing.conversation.TRUNCATION_POLICIES`).

    Attributes:
        dropped: counts of dropped samples by reason (``"too_long"``); ``dropped_ids``
            lists their record ids. Counted per process (each DataLoader worker has its own).
        shortened: how many samples lost trailing turns under ``"truncate_turns"``.
    """

    def __init__(self, tokenizer, num_crops: int = DEFAULT_NUM_CROPS,
                 max_length: int | None = None, truncation: str = "error") -> None:
        if truncation not in TRUNCATION_POLICIES:
            raise UsageError(f"truncation must be one of {', '.join(TRUNCATION_POLICIES)}, "
                             f"got {truncation!r}")
        if max_length is not None and (isinstance(max_length, bool)
                                       or not isinstance(max_length, int) or max_length < 2):
            raise UsageError(f"max_length must be an integer of at least 2, got {max_length!r}")
        self.tokenizer = tokenizer
        self.text = ConversationTokenizer(tokenizer)
        self.image_processor = Phi3VImageProcessor(num_crops)
        self.num_crops = num_crops
        self.max_length = max_length
        self.truncation = truncation
        self.dropped: Counter[str] = Counter()
        self.dropped_ids: list[str] = []
        self.shortened = 0

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike, num_crops: int = DEFAULT_NUM_CROPS,
                        max_length: int | None = None, truncation: str = "error") -> Phi3VProcessor:
        """A processor with the tokenizer of a local checkpoint folder (no network).

        Raises:
            UsageError: the folder has no tokenizer files.
        """
        from phiv_train.tokenization import load_tokenizer

        return cls(load_tokenizer(checkpoint_dir), num_crops=num_crops, max_length=max_length,
                   truncation=truncation)

    def encode(self, record: Record, images_root: str | os.PathLike | None = None, *,
               images: Sequence[Image.Image] | None = None) -> dict[str, Any] | None:
        """A training sample: ids, labels and pixels of the whole conversation.

        Args:
            record: a labeled record (its last answer present).
            images_root: folder the image paths are relative to (unless ``images``).
            images: the record's images, already loaded, in order (overrides the root).

        Returns:
            ``{"input_ids", "labels"}`` int64 ``(L,)``, ``"pixel_values"`` float32
            ``(k, num_crops + 1, 3, 336, 336)`` and ``"image_sizes"`` int64 ``(k, 2)`` (both
            None without images), ``"record_id"``; None when dropped by the length policy.

        Raises:
            UnlabeledRecordError, SpecialTextError, SampleTooLongError, MediaError.
        """
        if not record.labeled:
            raise UnlabeledRecordError(
                record.id, "the last answer is null: the record can only be used for "
                "generation", field=f"conversations[{len(record.conversations) - 1}].assistant",
                hint="keep unlabeled records in evaluation data (encode_for_generation)",
            )
        return self._encode(record, images_root, images, generation=False)

    def encode_for_generation(self, record: Record,
                              images_root: str | os.PathLike | None = None, *,
                              images: Sequence[Image.Image] | None = None
                              ) -> dict[str, Any] | None:
        """A generation prompt: every turn, the last answer left out, ending ``<|assistant|>\\n``.

        Args:
            record: a labeled or unlabeled record.
            images_root: folder the image paths are relative to (unless ``images``).
            images: the record's images, already loaded, in order.

        Returns:
            ``{"input_ids", "pixel_values", "image_sizes", "record_id"}`` (no labels); None
            when dropped by the length policy (``truncate_turns`` acts as ``error`` here).

        Raises:
            SpecialTextError, SampleTooLongError, MediaError.
        """
        return self._encode(record, images_root, images, generation=True)

    def _encode(self, record: Record, images_root, images, *, generation: bool):
        check_record_text(record)
        if images is None:
            if images_root is None and record.images:
                raise UsageError(f"record {record.id!r} has images: pass images_root or images")
            images = load_record_images(record, images_root or ".")
        elif len(images) != len(record.images):
            raise RecordError(record.id, f"{len(images)} images given, the record has "
                              f"{len(record.images)}")
        counts = [image_token_count(image.width, image.height, self.num_crops) for image in images]
        fitted = self._fit(record, counts, generation=generation)
        if fitted is None:
            return None
        input_ids, labels, used_images = fitted
        sample: dict[str, Any] = {"input_ids": torch.tensor(input_ids, dtype=torch.int64)}
        if not generation:
            sample["labels"] = torch.tensor(labels, dtype=torch.int64)
        if used_images:
            pixels = self.image_processor(list(images[:used_images]))
            sample["pixel_values"] = pixels["pixel_values"]
            sample["image_sizes"] = pixels["image_sizes"]
        else:
            sample["pixel_values"] = sample["image_sizes"] = None
        sample["record_id"] = record.id
        return sample

    def _fit(self, record: Record, counts: list[int], *, generation: bool):
        """``(ids, labels, images used)`` within ``max_length``, or None when dropped."""
        input_ids, labels = self.text.encode(record, counts, generation=generation)
        if self.max_length is None or len(input_ids) <= self.max_length:
            return input_ids, labels, len(counts)
        full_length = len(input_ids)
        if self.truncation == "truncate_turns" and not generation:
            used_images = len(counts)
            for num_turns in range(len(record.conversations) - 1, 0, -1):
                used_images -= len(record.conversations[num_turns].images)
                input_ids, labels = self.text.encode(record, counts[:used_images],
                                                     num_turns=num_turns)
                if len(input_ids) <= self.max_length:
                    self.shortened += 1
                    return input_ids, labels, used_images
        if self.truncation == "drop":
            self.dropped["too_long"] += 1
            self.dropped_ids.append(record.id)
            return None
        detail = " even with only its first turn" if self.truncation == "truncate_turns" else ""
        raise SampleTooLongError(record.id, full_length, self.max_length, detail)
