"""Phi-3.5-vision facts that the data side needs (no torch).

The chat format, the special tokens, and the number of image tokens an image becomes.
``phiv_train.processing`` imports these so that the validator's token budget and the
processor can never disagree.
"""

from __future__ import annotations

import math
import re

CROP_SIZE = 336
"""Side of one crop (and of the global view) in pixels."""

TOKENS_PER_CROP = 144
"""12x12 merged patches per 336-pixel crop."""

DEFAULT_NUM_CROPS = 4

USER_TAG = "<|user|>"
ASSISTANT_TAG = "<|assistant|>"
SYSTEM_TAG = "<|system|>"
END_TAG = "<|end|>"
END_OF_TEXT = "<|endoftext|>"

SPECIAL_TOKEN_IDS = {
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
    END_OF_TEXT: 32000,
    ASSISTANT_TAG: 32001,
    SYSTEM_TAG: 32006,
    END_TAG: 32007,
    USER_TAG: 32010,
}
PAD_TOKEN_ID = 32000
STOP_TOKEN_IDS = (32007, 32000)
VOCAB_SIZE = 32064

IMAGE_PLACEHOLDER = "<|image_{}|>"
IMAGE_PLACEHOLDER_PATTERN = re.compile(r"<\|image_(\d+)\|>")

# Anything the tokenizer would turn into a control token: `<|...|>` tags (placeholders
# included) and the SentencePiece specials. Such a string inside user or assistant text
# would shift the image numbering or inject control tokens.
SPECIAL_TEXT_PATTERN = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?s>|<unk>")


def find_special_text(text: str) -> list[str]:
    """Return the special-token strings found in ``text`` (empty when it is clean)."""
    return SPECIAL_TEXT_PATTERN.findall(text)


def hd_resized_size(width: int, height: int,
                    num_crops: int = DEFAULT_NUM_CROPS) -> tuple[int, int]:
    """Size ``(width, height)`` the processor resizes an image to, before padding.

    Follows the reference HD transform: transpose portrait images, pick the largest scale
    ``s`` with ``s * ceil(s / ratio) <= num_crops``, resize to width ``s*336`` and height
    ``int(s*336/ratio)`` computed in floating point (at least 1 pixel), transpose back.

    Args:
        width: image width in pixels (after EXIF rotation, if any).
        height: image height in pixels.
        num_crops: the most 336-pixel crops per image (1..).

    Returns:
        ``(resized_width, resized_height)`` in the image's own orientation; the long side
        is a multiple of 336, the short side is padded up to one by :func:`hd_grid`.

    Raises:
        ValueError: on a non-positive size or ``num_crops < 1``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if num_crops < 1:
        raise ValueError(f"num_crops must be at least 1, got {num_crops}")
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while (scale + 1) * math.ceil((scale + 1) / ratio) <= num_crops:
        scale += 1
    new_width = scale * CROP_SIZE
    new_height = max(1, int(new_width / ratio))
    if transposed:
        return new_height, new_width
    return new_width, new_height


def hd_grid(width: int, height: int, num_crops: int = DEFAULT_NUM_CROPS) -> tuple[int, int]:
    """Size in pixels ``(height, width)`` of the padded image the processor produces.

    The size of :func:`hd_resized_size` with its short side padded (white, centred) up to
    a multiple of 336.

    Args:
        width: image width in pixels (after EXIF rotation, if any).
        height: image height in pixels.
        num_crops: the most 336-pixel crops per image (1..).

    Returns:
        ``(padded_height, padded_width)``, both multiples of 336.

    Raises:
        ValueError: on a non-positive size or ``num_crops < 1``.
    """
    resized_width, resized_height = hd_resized_size(width, height, num_crops)
    return (math.ceil(resized_height / CROP_SIZE) * CROP_SIZE,
            math.ceil(resized_width / CROP_SIZE) * CROP_SIZE)


def image_token_count(width: int, height: int, num_crops: int = DEFAULT_NUM_CROPS) -> int:
    """Number of ``<|image_k|>`` tokens one image of this size becomes.

    ``N = (h*w + 1)*144 + 1 + (h + 1)*12`` with ``h, w`` the padded size in crops: the
    sub-image grid with a row separator per row, one global/sub separator, and the 12x12
    global view with its row separators.
    """
    padded_height, padded_width = hd_grid(width, height, num_crops)
    rows, cols = padded_height // CROP_SIZE, padded_width // CROP_SIZE
    return (rows * cols + 1) * TOKENS_PER_CROP + 1 + (rows + 1) * 12
