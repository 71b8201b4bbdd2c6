"""Thumbnails embedded in the page as ``data:`` URIs, made only for the shown records.

Images are opened by content, turned upright (EXIF), reduced with JPEG draft mode where
possible (so a large photo is not fully decoded), and written as small JPEGs. An image that
cannot be read yields the reason instead, shown in its place.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageOps

THUMBNAIL_SIDE = 160
JPEG_QUALITY = 70


class Thumbnails:
    """Makes each image's thumbnail once (an image shared by records is embedded once per
    use but decoded once)."""

    def __init__(self, images_root: Path, side: int = THUMBNAIL_SIDE,
                 max_pixels: int | None = None) -> None:
        self.images_root = images_root
        self.side = side
        self.max_pixels = max_pixels
        self._made: dict[str, tuple[str | None, str | None]] = {}

    def get(self, relative_path: str) -> tuple[str | None, str | None]:
        """``(data_uri, None)`` for a readable image, ``(None, reason)`` otherwise."""
        if relative_path not in self._made:
            self._made[relative_path] = self._make(relative_path)
        return self._made[relative_path]

    def _make(self, relative_path: str) -> tuple[str | None, str | None]:
        from phiv_data.media.images import DEFAULT_MAX_PIXELS

        path = self.images_root / relative_path
        if not path.is_file():
            return None, "missing file"
        try:
            with Image.open(path) as image:
                if image.width * image.height > (self.max_pixels or DEFAULT_MAX_PIXELS):
                    return None, f"{image.width}x{image.height}: too large to decode"
                image.draft("RGB", (self.side, self.side))
                upright = ImageOps.exif_transpose(image)
                upright = upright.convert("RGB")
                upright.thumbnail((self.side, self.side))
                buffer = io.BytesIO()
                upright.save(buffer, "JPEG", quality=JPEG_QUALITY)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return None, f"unreadable: {error}"
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(), None
