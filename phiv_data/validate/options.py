"""What ``phiv-data validate`` checks and how: one plain, picklable options object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from phiv_data.errors import UsageError
from phiv_data.media.images import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS
from phiv_data.phi3v import DEFAULT_NUM_CROPS

CheckImages = Literal["none", "exists", "decode"]

DEFAULT_MAX_LINE_BYTES = 1 << 20
"""Lines longer than this (1 MiB) are reported, not parsed: no record needs that much."""


@dataclass(frozen=True)
class ValidationOptions:
    """Options of :func:`phiv_data.validate.validate_paths` (the CLI flags, one to one).

    Attributes:
        images_root: directory image paths are relative to, for every file; ``None`` means
            the file's manifest entry's root, else ``images/`` beside the file.
        check_images: ``none`` (path syntax only), ``exists`` (default: files exist inside
            the root), ``decode`` (also decode every image and check its content).
        max_length: token budget per record; the token checks run only when set.
        num_crops: Phi-3.5-vision ``num_crops`` used to count image tokens.
        tokenizer: a local tokenizer folder (``tokenizer.json``) for exact text token counts;
            without it text tokens are estimated.
        strict: warnings fail the validation too.
        workers: processes to use (``None``: every core).
        max_line_bytes: longer lines are reported and not parsed.
        max_image_pixels: larger images are refused as decompression bombs.
        max_aspect_ratio: long/short side ratio above which an image is reported.
        top_labels: how many answers the label distribution lists.
    """

    images_root: Path | None = None
    check_images: CheckImages = "exists"
    max_length: int | None = None
    num_crops: int = DEFAULT_NUM_CROPS
    tokenizer: Path | None = None
    strict: bool = False
    workers: int | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    top_labels: int = 10

    def checked(self) -> ValidationOptions:
        """Return ``self`` after checking every value.

        Raises:
            UsageError: naming the first bad option.
        """
        if self.check_images not in ("none", "exists", "decode"):
            raise UsageError(f"--check-images must be none, exists or decode, "
                             f"not {self.check_images!r}")
        if self.max_length is not None and self.max_length < 1:
            raise UsageError(f"--max-length must be at least 1, got {self.max_length}")
        if self.num_crops < 1:
            raise UsageError(f"--num-crops must be at least 1, got {self.num_crops}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.images_root is not None and not Path(self.images_root).is_dir():
            raise UsageError(f"--images-root {self.images_root}: no such directory",
                             hint="give the directory the image paths are relative to")
        if self.max_line_bytes < 1024:
            raise UsageError("--max-line-bytes must be at least 1024")
        if self.tokenizer is not None and self.max_length is None:
            raise UsageError("--tokenizer counts tokens for the budget: give --max-length too")
        if self.tokenizer is not None and not (Path(self.tokenizer) / "tokenizer.json").is_file():
            raise UsageError(f"--tokenizer {self.tokenizer}: no tokenizer.json in this folder",
                             hint="point to a Phi-3.5-vision checkpoint or tokenizer folder")
        return self

    @property
    def worker_count(self) -> int:
        """Processes to use: ``workers`` or every core this process may run on."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
