"""Image inspection without surprises: header-only sizes, decode checks, bomb refusal.

Everything here reads as little as it can. :func:`read_image_header` parses only the file
header (Pillow opens images lazily), so it gives the size, mode and EXIF orientation of a
50-megapixel scan in microseconds; :func:`inspect_image` decodes the pixels once, but only
after the header said the image is small enough, so a decompression bomb is refused before a
single pixel is expanded. Converters reuse these to check what they write.

Example::

    header = read_image_header("frame.jpg")      # ImageHeader(width=320, height=240, ...)
    width, height = header.oriented_size          # as displayed, after EXIF rotation
    report = inspect_image("frame.jpg")           # decodes; report.problems lists issues
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phiv_data.errors import MediaError, display_path

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width x height) decoded; Pillow's own bomb threshold. Larger is refused."""

DEFAULT_MAX_ASPECT_RATIO = 10.0
"""Long side / short side above which an image is reported as extreme: at 4 crops such an
image keeps only a few rows of pixels once resized to Phi-3.5-vision's crop grid."""

EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}

# Modes that convert to 8-bit RGB without losing meaning; anything else gets a warning.
_PLAIN_MODES = {"RGB", "L", "1"}
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_HIGH_DEPTH_PREFIXES = ("I;16", "I", "F")


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says, without decoding the pixels.

    Attributes:
        width: stored width in pixels.
        height: stored height in pixels.
        format: Pillow's format name (``JPEG``, ``PNG``, ...).
        mode: Pillow's mode (``RGB``, ``CMYK``, ``P``, ``I;16`` ...).
        orientation: EXIF orientation 1..8 (1 = upright, also when there is no EXIF).
        has_transparency: a palette or mode with transparency information.
    """

    width: int
    height: int
    format: str | None
    mode: str
    orientation: int = 1
    has_transparency: bool = False

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def oriented_size(self) -> tuple[int, int]:
        """``(width, height)`` as the image is displayed, after EXIF rotation."""
        if self.orientation in _TRANSPOSING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height

    @property
    def aspect_ratio(self) -> float:
        """Long side divided by short side (>= 1)."""
        return max(self.width, self.height) / max(1, min(self.width, self.height))


@dataclass
class ImageReport:
    """The outcome of :func:`inspect_image` for one file.

    Attributes:
        header: the header (``None`` when the file could not be identified at all).
        sha256: hex sha256 of the file bytes (``None`` when they could not be read).
        problems: ``(kind, message)`` pairs; ``kind`` is one of ``empty``, ``unreadable``,
            ``truncated``, ``bomb`` (errors) or ``mode``, ``exif-rotation``, ``aspect``
            (warnings).
    """

    header: ImageHeader | None = None
    sha256: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def decodable(self) -> bool:
        """True when no error-kind problem was found."""
        return not any(kind in ERROR_KINDS for kind, _ in self.problems)


BOMB_HINT = "refused without decoding: downscale the image"

ERROR_KINDS = frozenset({"empty", "unreadable", "truncated", "bomb"})
"""Problem kinds that make an image unusable (the others are warnings)."""

_HINTS = {
    "empty": "re-extract the image",
    "unreadable": "replace the file or re-export it as JPEG or PNG",
    "bomb": BOMB_HINT,
}
_PILLOW_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


class ImageError(MediaError):
    """An image file that cannot be used, with its problem kind.

    Attributes:
        kind: ``empty``, ``unreadable`` or ``bomb`` (see :data:`ERROR_KINDS`).
        detail: the message without the file name, hint included: for reports that
            already say which image it is.
    """

    def __init__(self, path: str | Path, kind: str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}", hint=_HINTS.get(kind))
        self.kind = kind
        self.detail = f"{reason}: {self.hint}" if self.hint else reason


def _pil():
    # Pillow is imported on first use: validating without image checks never needs it.
    from PIL import Image

    return Image


def _orientation(image: Image.Image) -> int:
    Image = _pil()
    # Read EXIF only from data the header parse already holds: ``Image.getexif`` on a PNG
    # without an early eXIf chunk would decode the whole image to look for one.
    raw = image.info.get("exif")
    try:
        if raw:
            exif = Image.Exif()
            exif.load(raw)
        elif image.format in ("TIFF", "MPO"):
            exif = image.getexif()
        else:
            return 1
        value = int(exif.get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF: treat as upright, the decode check reports damage
        return 1
    return value if 1 <= value <= 8 else 1


def _header_of(image: Image.Image) -> ImageHeader:
    width, height = image.size
    transparency = "transparency" in image.info or image.mode in _ALPHA_MODES
    return ImageHeader(width=width, height=height, format=image.format, mode=image.mode,
                       orientation=_orientation(image), has_transparency=transparency)


def _open(source: str | Path | io.BytesIO, path: str | Path) -> Image.Image:
    # ``path`` is only turned into a display path on failure (inside ImageError):
    # display_path resolves the path and the working directory (system calls), which would
    # cost more than reading a small JPEG header on the success path.
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow warns on big images and raises past twice its own limit; phiv applies its
        # limit from the header instead, and words Pillow's refusal the same way.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(source)
        except Image.DecompressionBombError as error:
            found = _PILLOW_BOMB.search(str(error))
            reason = (f"{int(found.group(1)):,} pixels exceeds Pillow's "
                      f"{int(found.group(2)):,}-pixel limit (possible decompression bomb)"
                      if found else f"possible decompression bomb ({error})")
            raise ImageError(path, "bomb", reason) from None
        except UnidentifiedImageError:
            raise ImageError(path, "unreadable", "not a readable image (unknown or damaged "
                             "format)") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageError(path, "unreadable", f"not a readable image ({error})") from None


def read_image_header(path: str | Path) -> ImageHeader:
    """Read size, mode and EXIF orientation from an image's header, without decoding.

    Args:
        path: the image file.

    Returns:
        The :class:`ImageHeader`.

    Raises:
        ImageError: (a ``MediaError``) when the file is missing, empty, not an image Pillow
            can identify, or so large that Pillow refuses to open it.
    """
    try:
        empty = os.path.getsize(path) == 0
    except OSError as error:
        raise ImageError(path, "unreadable", f"cannot read ({error.strerror})") from None
    if empty:
        raise ImageError(path, "empty", "empty file (0 bytes)")
    image = _open(path, path)
    try:
        return _header_of(image)
    finally:
        image.close()


def mode_problem(header: ImageHeader) -> str | None:
    """Why an image's colour mode needs attention, or ``None`` when it converts plainly.

    CMYK, palette, alpha and 16-bit/float images all become 8-bit RGB for Phi-3.5-vision,
    but the conversion drops or changes information (alpha becomes black, CMYK colours
    shift), so they are worth a look.
    """
    mode = header.mode
    if mode == "CMYK":
        return "CMYK colour mode: colours shift when converted to RGB; re-export as RGB"
    if mode in ("P", "PA"):
        extra = " with transparency" if header.has_transparency else ""
        return f"palette mode{extra}: converted to RGB on load; re-export as RGB"
    if mode in _ALPHA_MODES or header.has_transparency:
        return f"mode {mode} has an alpha channel that RGB conversion drops; flatten it"
    if mode.startswith(_HIGH_DEPTH_PREFIXES):
        return f"mode {mode} (16-bit or float): precision is lost in 8-bit RGB; re-export"
    if mode not in _PLAIN_MODES:
        return f"unusual mode {mode}: check that it converts to RGB as intended"
    return None


def header_problems(header: ImageHeader, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
                    ) -> list[tuple[str, str]]:
    """Problems visible from the header alone (see :class:`ImageReport` for the kinds).

    Args:
        header: from :func:`read_image_header`.
        max_pixels: images with more pixels are decompression bombs.
        max_aspect_ratio: long/short side ratio above which the shape is extreme.

    Returns:
        ``(kind, message)`` pairs, possibly empty.
    """
    problems: list[tuple[str, str]] = []
    if header.width < 1 or header.height < 1:
        problems.append(("unreadable", f"header says {header.width}x{header.height} pixels"))
        return problems
    if header.pixels > max_pixels:
        problems.append((
            "bomb",
            f"{header.width}x{header.height} = {header.pixels:,} pixels exceeds the "
            f"{max_pixels:,}-pixel limit (possible decompression bomb); refused without "
            "decoding: downscale it",
        ))
    mode = mode_problem(header)
    if mode:
        problems.append(("mode", mode))
    if header.orientation != 1:
        problems.append((
            "exif-rotation",
            f"EXIF orientation {header.orientation}: displayed rotated/flipped compared with "
            "the stored pixels; bake the rotation in (PIL.ImageOps.exif_transpose)",
        ))
    if header.aspect_ratio > max_aspect_ratio:
        problems.append((
            "aspect",
            f"extreme aspect ratio {header.aspect_ratio:.1f}:1 ({header.width}x{header.height}, "
            f"limit {max_aspect_ratio:g}:1): little of it survives Phi-3.5-vision's crop grid; "
            "crop or split it",
        ))
    return problems


def decode_problem(image: Image.Image) -> tuple[str, str] | None:
    """Decode an opened image fully; return ``(kind, message)`` when that fails.

    Truncated files are reported as ``truncated`` (Pillow is not allowed to pad them).
    """
    try:
        image.load()
    except OSError as error:
        text = str(error)
        if "truncated" in text or "broken data stream" in text:
            return "truncated", f"cannot decode: {text}: re-extract or re-download the image"
        return "unreadable", f"cannot decode: {text}: {_HINTS['unreadable']}"
    except (ValueError, SyntaxError, EOFError, MemoryError) as error:
        return "unreadable", f"cannot decode: {error}: {_HINTS['unreadable']}"
    return None


def inspect_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> ImageReport:
    """Read an image once: hash its bytes, check its header, then decode it if safe.

    Never raises for a bad image: every problem is in the returned report. Images over
    ``max_pixels`` are not decoded at all.

    Args:
        path: the image file.
        max_pixels: decompression-bomb limit (width x height).
        max_aspect_ratio: long/short side ratio above which the shape is extreme.

    Returns:
        An :class:`ImageReport` with header, content sha256 and problems.
    """
    report = ImageReport()
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        report.problems.append(("unreadable", f"cannot read: {error.strerror or error}"))
        return report
    report.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        report.problems.append(("empty", "empty file (0 bytes): re-extract the image"))
        return report
    try:
        image = _open(io.BytesIO(data), path)
    except ImageError as error:
        kind = "truncated" if "truncated" in error.message.lower() else error.kind
        report.problems.append((kind, error.detail))
        return report
    with image:
        report.header = _header_of(image)
        report.problems.extend(header_problems(report.header, max_pixels=max_pixels,
                                               max_aspect_ratio=max_aspect_ratio))
        if not any(kind in ERROR_KINDS for kind, _ in report.problems):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", _pil().DecompressionBombWarning)
                failure = decode_problem(image)
            if failure:
                report.problems.append(failure)
    return report
