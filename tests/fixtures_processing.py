"""Helpers for the processor tests: the tiny tokenizer, recognisable images, records."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image

from phiv_data.schema import Record


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """The tiny Phi-3.5-vision tokenizer, built once per test process (read-only use)."""
    from phiv_train.tokenization import build_tiny_tokenizer

    return build_tiny_tokenizer()


def coordinate_pixels(width: int, height: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 pixels that say where they are: no two pixels of an
    image up to 64000x64000 are equal, so any crop or shift shows in the values."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 251, ys % 251, (xs // 251) * 7 + (ys // 251) * 3], axis=-1).astype(
        np.uint8)


def coordinate_image(width: int, height: int) -> Image.Image:
    return Image.fromarray(coordinate_pixels(width, height), "RGB")


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels in ``mode`` (made from RGB noise; 16-bit modes from 16-bit noise)."""
    rng = np.random.default_rng(seed)
    if mode.startswith("I;16"):
        levels = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        order = ">u2" if mode == "I;16B" else "<u2"
        return Image.frombytes(mode, (width, height), levels.astype(order).tobytes())
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
        return rgba
    if mode == "LA":
        la = rgb.convert("L").convert("LA")
        la.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
        return la
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode in ("La", "PA"):
        return noise_image(width, height, "LA" if mode == "La" else "P", seed).convert(mode)
    return rgb.convert(mode)


def denormalise(values: np.ndarray, channel: int) -> np.ndarray:
    """The 8-bit levels behind normalised float values of one channel (exact or fails)."""
    from phiv_train.processing.image import normalisation_table

    table = normalisation_table()[channel]
    levels = np.clip(np.searchsorted(table, values), 0, 255)
    assert np.array_equal(table[levels], values), "values are not normalised 8-bit levels"
    return levels.astype(np.uint8)


def record(turns: list[dict[str, Any]], record_id: str = "rec-1") -> Record:
    """A record from short turn dicts (``images`` defaults to none)."""
    return Record.model_validate({
        "id": record_id,
        "conversations": [{"images": turn.get("images", []), "user": turn["user"],
                           "assistant": turn.get("assistant")} for turn in turns],
    })
