"""Batching samples of :class:`~phiv_train.processing.Phi3VProcessor` with padding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from phiv_data.errors import DataError, UsageError
from phiv_data.phi3v import PAD_TOKEN_ID
from phiv_train.processing.conversation import IGNORE_INDEX


class Phi3VCollator:
    """Pads and stacks samples into one batch for ``Phi3VForCausalLM``.

    Batch contract (what the model receives):

    - ``input_ids`` int64 ``(B, L)``: each sample's ids, padded with ``pad_token_id`` on
      ``padding_side`` (right for training, left for generation). Image positions hold
      ``-k`` for the sample's k-th image; k restarts at 1 in every sample.
    - ``attention_mask`` int64 ``(B, L)``: 1 on each sample's real tokens (from its length,
      never from ``ids != pad``: real ``<|endoftext|>`` tokens equal the pad id), 0 on padding.
    - ``labels`` int64 ``(B, L)``, only when the samples have labels: -100 on padding.
    - ``pixel_values`` float32 ``(total_images, num_crops + 1, 3, 336, 336)`` and
      ``image_sizes`` int64 ``(total_images, 2)``: the images of the batch in order of
      sample, then of occurrence (``-1, -2, ...``) within the sample; text-only samples add
      none; both are None when no sample has an image.
    - ``record_ids`` (list of str), only with ``keep_record_ids=True``.

    Samples that are None (dropped by the processor's length policy) are skipped.

    Args:
        pad_token_id: id used for padding (Phi-3.5-vision: ``<|endoftext|>`` = 32000).
        padding_side: ``"right"`` (training) or ``"left"`` (generation).
        label_pad: label of padded positions.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        keep_record_ids: also return the samples' record ids.
    """

    def __init__(self, pad_token_id: int = PAD_TOKEN_ID, padding_side: str = "right",
                 label_pad: int = IGNORE_INDEX, pad_to_multiple_of: int | None = None,
                 keep_record_ids: bool = False) -> None:
        if padding_side not in ("right", "left"):
            raise UsageError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise UsageError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.label_pad = label_pad
        self.pad_to_multiple_of = pad_to_multiple_of
        self.keep_record_ids = keep_record_ids

    def __call__(self, samples: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        """Collate samples into a batch (see the class docstring for the contract).

        Raises:
            DataError: no samples are left, some samples have labels and others not, or
                their images were processed with different ``num_crops``.
        """
        samples = [sample for sample in samples if sample is not None]
        if not samples:
            raise DataError("nothing to collate: every sample of this batch was dropped",
                            hint="see the processor's dropped counts and dropped_ids")
        with_labels = ["labels" in sample for sample in samples]
        if any(with_labels) and not all(with_labels):
            raise DataError("cannot batch training samples (with labels) and generation "
                            "prompts (without) together")
        lengths = [int(sample["input_ids"].shape[0]) for sample in samples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.int64)
        labels = (torch.full((len(samples), width), self.label_pad, dtype=torch.int64)
                  if with_labels[0] else None)
        for row, (sample, length) in enumerate(zip(samples, lengths)):
            right = self.padding_side == "right"
            span = slice(0, length) if right else slice(width - length, width)
            input_ids[row, span] = sample["input_ids"]
            attention_mask[row, span] = 1
            if labels is not None:
                labels[row, span] = sample["labels"]

        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if labels is not None:
            batch["labels"] = labels
        pixels = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
        if len({tuple(p.shape[1:]) for p in pixels}) > 1:
            raise DataError("samples were processed with different num_crops: "
                            + ", ".join(str(p.shape[1] - 1) for p in pixels))
        batch["pixel_values"] = torch.cat(pixels) if pixels else None
        sizes = [s["image_sizes"] for s in samples if s.get("image_sizes") is not None]
        batch["image_sizes"] = torch.cat(sizes) if sizes else None
        if self.keep_record_ids:
            batch["record_ids"] = [sample.get("record_id") for sample in samples]
        return batch
