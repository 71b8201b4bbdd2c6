"""Factories for the model tests: a tiny checkpoint, samples with images, padded batches.

Samples are built directly as token ids (``-k`` for the tokens of image ``k``) so that the
model tests do not depend on the processor; counts come from the same formula the
processor uses (``phiv_data.phi3v``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from phiv_data.phi3v import CROP_SIZE, PAD_TOKEN_ID
from phiv_train.model import Phi3VForCausalLM, image_token_counts
from phiv_train.model.tiny import write_tiny_checkpoint

USER, ASSISTANT, END = 32010, 32001, 32007


@pytest.fixture(scope="session", name="tiny_checkpoint")
def tiny_checkpoint_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_checkpoint``: a tiny checkpoint directory, written once per session (read only).

    Test modules import this function (the fixture registers under ``tiny_checkpoint``).
    """
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-phi3v"), tokenizer=False)


def load_tiny(directory: Path, **kwargs) -> Phi3VForCausalLM:
    """A fresh model from the tiny checkpoint, in eval mode, float32 unless told otherwise."""
    return Phi3VForCausalLM.from_pretrained(directory, **kwargs).eval()


@dataclass
class Sample:
    """One sequence: token ids with image blocks, and the grids of its images in order."""

    input_ids: list[int]
    grids: list[tuple[int, int]] = field(default_factory=list)


def make_sample(pieces: list, seed: int = 0) -> Sample:
    """Build a sample from text lengths and images.

    Args:
        pieces: ints (that many random text tokens) and ``(rows, cols)`` tuples (the next
            image, numbered in order, with that crop grid).
        seed: seed of the random text tokens.

    Returns:
        The sample; it starts with ``<|user|>``.
    """
    generator = torch.Generator().manual_seed(seed)
    ids = [USER]
    grids: list[tuple[int, int]] = []
    for piece in pieces:
        if isinstance(piece, int):
            ids += torch.randint(3, 32000, (piece,), generator=generator).tolist()
        else:
            grids.append(tuple(piece))
            ids += [-len(grids)] * image_token_counts([piece])[0]
    return Sample(ids, grids)


def make_pixel_values(grids: list[tuple[int, int]], slots: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random ``pixel_values`` for images of these grids, zero-padded to ``slots`` views."""
    slots = slots or max((1 + rows * cols for rows, cols in grids), default=1)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(len(grids), slots, 3, CROP_SIZE, CROP_SIZE)
    for index, (rows, cols) in enumerate(grids):
        views = 1 + rows * cols
        pixels[index, :views] = torch.randn(views, 3, CROP_SIZE, CROP_SIZE, generator=generator)
    return pixels


def image_sizes(grids: list[tuple[int, int]]) -> torch.Tensor:
    """Padded ``[height, width]`` of images with these grids."""
    return torch.tensor([[rows * CROP_SIZE, cols * CROP_SIZE] for rows, cols in grids]).reshape(-1, 2)


def collate(samples: list[Sample], side: str = "right", seed: int = 0) -> dict[str, torch.Tensor]:
    """Pad samples into a batch (``side`` "right" or "left") with stacked images."""
    length = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.full((len(samples), length), PAD_TOKEN_ID)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        span = slice(0, len(sample.input_ids)) if side == "right" else slice(length - len(sample.input_ids), length)
        input_ids[row, span] = torch.tensor(sample.input_ids)
        attention_mask[row, span] = 1
    grids = [grid for sample in samples for grid in sample.grids]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if grids:
        batch["pixel_values"] = make_pixel_values(grids, seed=seed)
        batch["image_sizes"] = image_sizes(grids)
    return batch


def pixels_of(batch: dict[str, torch.Tensor], first: int, count: int) -> dict[str, torch.Tensor]:
    """The image inputs of images ``first .. first+count-1`` of a batch (for one sample)."""
    if count == 0:
        return {}
    return {
        "pixel_values": batch["pixel_values"][first : first + count],
        "image_sizes": batch["image_sizes"][first : first + count],
    }
