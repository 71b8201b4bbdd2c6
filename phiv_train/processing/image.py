"""Phi-3.5-vision image processing: HD transform, CLIP normalisation, global view, crops.

Per image (SPEC section 3): convert to RGB; resize with PIL's bilinear filter to the size of
:func:`phiv_data.phi3v.hd_resized_size`; pad the short side with white, centred, up to a
multiple of 336; normalise with the CLIP mean and std; the global view is the padded image
resized to 336x336 by ``torch.nn.functional.interpolate(mode="bicubic")``; the local views
are its 336-pixel crops, row-major. Output ``[global, crops...]`` zero-padded to
``num_crops + 1``. The values are bit-identical to the straightforward implementation in
:mod:`phiv_train.processing.reference` (tests check it); only the work differs:

- grayscale images are resized in one channel and expanded afterwards (PIL resizes each
  channel with the same integer arithmetic, so the result is the same);
- portrait images are not transposed: the reference transposes, resizes (horizontal pass,
  then vertical pass) and transposes back, so we run the vertical pass first, then the
  horizontal one, which is the same arithmetic in the same order without two copies;
- normalisation is one table look-up per pixel (the table holds exactly what
  ``x / 255``, ``- mean``, ``/ std`` give in float32), written straight into the padded
  float image; crops are one strided copy into the output, which is allocated once and
  already zero (calloc; large blocks come zeroed from the kernel), so padding views are
  never written.

Image modes (the reference simply calls ``.convert("RGB")``, and the pretrained weights saw
its numbers, so we follow it): alpha is dropped, not composited (a transparent pixel shows
whatever colour it stores); palette images with transparency likewise; CMYK uses Pillow's
conversion. One exception: 16-bit grayscale (``I;16*``, and ``I`` images whose values exceed
255) is scaled from 0..65535 to 0..255, because ``.convert("RGB")`` clips it and turns a
normal 16-bit scan into a white page. EXIF orientation is applied by :func:`load_image`
(and so whenever a path is given), never to an ``Image`` passed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from phiv_data.errors import MediaError, UsageError, display_path
from phiv_data.phi3v import (
    CROP_SIZE,
    DEFAULT_NUM_CROPS,
    hd_grid,
    hd_resized_size,
    image_token_count,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WHITE = 255

ImageInput = Image.Image | str | os.PathLike


def normalisation_table() -> np.ndarray:
    """The normalised float32 value of every 8-bit level, per channel: shape ``(3, 256)``.

    Computed with the same float32 operations as ``ToTensor`` + ``Normalize``
    (``x / 255``, then ``- mean``, then ``/ std``), so a look-up gives identical bits.
    """
    levels = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1)
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32).view(3, 1)
    return levels.expand(3, 256).clone().sub_(mean).div_(std).numpy()


_TABLE = normalisation_table()


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file by its content (not its extension), decoded, EXIF-rotated.

    Args:
        path: the image file.

    Returns:
        The decoded image, upright according to its EXIF orientation tag.

    Raises:
        MediaError: the file is missing, unreadable, not an image, truncated or too large
            to decode safely; the message names the path.
    """
    shown = display_path(path)
    try:
        with Image.open(path) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    except FileNotFoundError:
        raise MediaError(f"{shown}: image file not found",
                         hint="check the images root and the record's image path") from None
    except Image.DecompressionBombError as error:
        raise MediaError(f"{shown}: image too large to decode safely ({error})",
                         hint="downscale the image before training") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"{shown}: cannot decode image ({error})",
                         hint="re-encode or remove the file, then validate the data") from None
    return image


def to_model_mode(image: Image.Image) -> Image.Image:
    """The image as 8-bit ``RGB``, or as ``L`` when it is grayscale (same values as RGB).

    Args:
        image: a Pillow image of any mode.

    Returns:
        An ``RGB`` or ``L`` image; ``L`` stands for the RGB image with three equal channels.

    Raises:
        MediaError: a mode Pillow cannot convert to RGB.
    """
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("LA", "1"):
        return image.convert("L")  # what .convert("RGB") gives, in one channel
    if mode.startswith("I;16") or mode == "I":
        levels = np.asarray(image)
        if mode.startswith("I;16") or int(levels.max(initial=0)) > WHITE:
            wide = np.clip(levels.astype(np.int64), 0, 65535)
            return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
        return image.convert("L")
    if mode == "P" and "transparency" in image.info:
        # Same colours as .convert("RGB") (which warns about the transparency and ignores it).
        return image.convert("RGBA").convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise MediaError(f"image mode {mode} cannot be converted to RGB ({error})",
                         hint="save the image as RGB or grayscale") from None


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Bilinear resize with the pass order of the reference (which transposes portraits)."""
    if image.width >= image.height:
        return image.resize((width, height), Image.Resampling.BILINEAR)
    # Reference: transpose, resize (horizontal pass, then vertical), transpose back. In the
    # image's own orientation that is: vertical pass first, then horizontal.
    vertical = image.resize((image.width, height), Image.Resampling.BILINEAR)
    return vertical.resize((width, height), Image.Resampling.BILINEAR)


def _normalise_padded(pixels: np.ndarray, padded_height: int, padded_width: int) -> torch.Tensor:
    """Padded, normalised ``(3, H, W)`` float32 image from resized 8-bit pixels."""
    height, width = pixels.shape[:2]
    top = (padded_height - height) // 2
    left = (padded_width - width) // 2
    # Padding in 8 bits first (cheap), so that every look-up below writes a contiguous plane.
    padded = pixels
    if (height, width) != (padded_height, padded_width):
        padded = np.full((padded_height, padded_width, *pixels.shape[2:]), WHITE, np.uint8)
        padded[top:top + height, left:left + width] = pixels
    # numpy's allocation (malloc) reuses freed heap memory for the next image; torch maps
    # fresh pages for a block this large, and faulting them in costs as much as the look-up.
    target = np.empty((3, padded_height, padded_width), np.float32)
    full = torch.from_numpy(target)
    grayscale = padded.ndim == 2
    # np.take converts its indices to intp: convert once when the channels share them.
    indices = padded.astype(np.intp) if grayscale else None
    for channel in range(3):
        source = indices if grayscale else padded[..., channel]
        np.take(_TABLE[channel], source, out=target[channel], mode="clip")
    return full


class Phi3VImageProcessor:
    """Turns images into Phi-3.5-vision's ``pixel_values``, ``image_sizes`` and token counts.

    Example::

        out = Phi3VImageProcessor(num_crops=4)([image_a, "page.png"])
        out["pixel_values"].shape   # (2, 5, 3, 336, 336)
        out["image_sizes"]          # tensor([[672, 672], [1344, 1008]]): padded [h, w]
        out["num_img_tokens"]       # [757, ...]
    """

    def __init__(self, num_crops: int = DEFAULT_NUM_CROPS) -> None:
        """Args:
            num_crops: the most 336-pixel crops per image (Phi-3.5-vision: 4 by default,
                16 suits single pages, 4 multi-frame inputs).

        Raises:
            UsageError: when ``num_crops`` is not a positive integer.
        """
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or num_crops < 1:
            raise UsageError(f"num_crops must be a positive integer, got {num_crops!r}",
                             hint="Phi-3.5-vision uses 4 (multi-image) or 16 (single image)")
        self.num_crops = num_crops

    def __call__(self, images: ImageInput | Sequence[ImageInput]):
        """Process images (Pillow images of any mode, or paths loaded by :func:`load_image`).

        Args:
            images: one image or a sequence of images.

        Returns:
            A ``transformers.BatchFeature`` (a dict) with ``pixel_values`` float32
            ``(n, num_crops + 1, 3, 336, 336)`` (global view, crops row-major, zeros),
            ``image_sizes`` int64 ``(n, 2)`` (padded height, width) and ``num_img_tokens``
            (list of n ints: how many ``-k`` ids image k takes in ``input_ids``).

        Raises:
            MediaError: a path cannot be read as an image.
        """
        from transformers import BatchFeature

        if isinstance(images, (Image.Image, str, os.PathLike)):
            images = [images]
        # np.zeros takes its memory from calloc: a block this large comes from the kernel
        # already zero, so the padding views are never written (torch.zeros would write
        # every byte, and the output is up to 17 views of 1.35 MB per image).
        pixel_values = torch.from_numpy(
            np.zeros((len(images), self.num_crops + 1, 3, CROP_SIZE, CROP_SIZE), np.float32)
        )
        image_sizes = torch.empty(len(images), 2, dtype=torch.int64)
        num_img_tokens = []
        for index, image in enumerate(images):
            if not isinstance(image, Image.Image):
                image = load_image(Path(image))
            image_sizes[index] = torch.tensor(self._write_views(image, pixel_values[index]))
            num_img_tokens.append(image_token_count(image.width, image.height, self.num_crops))
        return BatchFeature({"pixel_values": pixel_values, "image_sizes": image_sizes,
                             "num_img_tokens": num_img_tokens})

    def process_into(self, image: Image.Image, out: torch.Tensor) -> tuple[int, int]:
        """Process one image into ``out`` (a ``(num_crops + 1, 3, 336, 336)`` float32 view).

        Args:
            image: a Pillow image of any mode (no EXIF rotation is applied here).
            out: where the global view, the crops and the zero padding are written.

        Returns:
            The padded ``(height, width)`` in pixels.
        """
        padded_height, padded_width = self._write_views(image, out)
        out[1 + (padded_height // CROP_SIZE) * (padded_width // CROP_SIZE):].zero_()
        return padded_height, padded_width

    def _write_views(self, image: Image.Image, out: torch.Tensor) -> tuple[int, int]:
        """:meth:`process_into` without zeroing the padding views (``out`` is zero already)."""
        width, height = image.size
        resized_width, resized_height = hd_resized_size(width, height, self.num_crops)
        padded_height, padded_width = hd_grid(width, height, self.num_crops)
        resized = _resize(to_model_mode(image), resized_width, resized_height)
        full = _normalise_padded(np.asarray(resized), padded_height, padded_width)
        out[0] = F.interpolate(full.unsqueeze(0), size=(CROP_SIZE, CROP_SIZE), mode="bicubic",
                               align_corners=False)[0]
        rows, cols = padded_height // CROP_SIZE, padded_width // CROP_SIZE
        crops = out[1:1 + rows * cols].view(rows, cols, 3, CROP_SIZE, CROP_SIZE)
        crops.copy_(full.view(3, rows, CROP_SIZE, cols, CROP_SIZE).permute(1, 3, 0, 2, 4))
        return padded_height, padded_width
