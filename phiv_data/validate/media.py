"""Image references against the file system: existence, containment, decoding, sizes.

:class:`ImageResolver` answers "do these paths name files inside the images root?" for a
whole block of records at once: it lists each referenced directory once (``os.scandir``)
and keeps the set of plain files it found, so checking a valid reference is a set lookup
instead of a ``stat`` call. Anything not in that set (missing files, links, directories,
odd paths) gets the careful per-path treatment. :class:`MediaInspector` decodes each image
once per worker and remembers the outcome and the size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from phiv_data.media.images import (
    ERROR_KINDS,
    ImageError,
    ImageReport,
    header_problems,
    inspect_image,
    read_image_header,
)
from phiv_data.validate.issues import media_code
from phiv_data.validate.rules import path_syntax_problem

Problem = tuple[str, str]
"""``(issue code, message)``."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ImageResolver:
    """Checks that image paths name regular files inside one images root.

    Args:
        root: the images root (must exist).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(self.root)
        self.known: set[str] = set()
        self._listed: set[str] = set()
        self._bad: dict[str, Problem] = {}

    def problems(self, paths: list[str]) -> dict[str, Problem]:
        """Bad paths among ``paths`` with why; valid ones are remembered for next time.

        Args:
            paths: image paths as written in records (duplicates allowed).

        Returns:
            ``{path: (code, message)}`` for every path that is not a usable image file.
        """
        if self.known.issuperset(paths):
            return {}
        found: dict[str, Problem] = {}
        unknown = set(paths).difference(self.known)
        # One iteration per new directory or bad path, not per path: listing a directory
        # settles every reference into it at C speed.
        while unknown:
            path = unknown.pop()
            problem = self._bad.get(path)
            if problem is None:
                problem = path_syntax_problem(path)
                if problem is None:
                    directory = path.rpartition("/")[0]
                    if directory not in self._listed:
                        unknown.difference_update(self._list(directory))
                        if path in self.known:
                            continue
                    problem = self._check_file(path)
                if problem is not None:
                    self._bad[path] = problem
            if problem is not None:
                found[path] = problem
        self._compact()
        return found

    def _compact(self) -> None:
        # A set grown by adding names ends with a hash table up to twice the size of a
        # copy of it (below 50,000 entries CPython grows it 4x; a copy is sized 2x). Every
        # valid reference is a lookup in it, bound by cache misses: on the bench file
        # (8,000 known frames) the copy's 256 KiB table made the existence check about a
        # third cheaper than the grown 512 KiB one. A copy is made only after such a growth,
        # so a few times per run.
        used = len(self.known)
        compact = 16 * (1 << (2 * used).bit_length())  # bytes: 16 per slot
        if used > 1000 and sys.getsizeof(self.known) > 1.5 * compact:
            self.known = set(self.known)

    def _list(self, directory: str) -> list[str]:
        self._listed.add(directory)
        full = os.path.join(self.root, directory) if directory else self.root
        if not _inside(os.path.realpath(full), self.real_root):
            return []  # every file below is checked one by one (and found outside)
        prefix = f"{directory}/" if directory else ""
        try:
            with os.scandir(full) as entries:
                files = sorted(entry.name for entry in entries
                               if entry.is_file(follow_symlinks=False))
        except OSError:
            return []
        names = [prefix + name for name in files]
        self.known.update(names)
        return names

    def _check_file(self, path: str) -> Problem | None:
        full = os.path.join(self.root, path)
        if not os.path.lexists(full):
            return "E-IMAGE-MISSING", (f"image {path!r} not found under {self.root}: restore "
                                       "it or correct the path (or --images-root)")
        real = os.path.realpath(full)
        if not _inside(real, self.real_root):
            return ("E-PATH-OUTSIDE-ROOT",
                    f"image {path!r} resolves to {real}, outside the images root {self.root}: "
                    "copy the file into the root instead of linking to it")
        if not os.path.exists(full):
            return "E-IMAGE-MISSING", f"image {path!r} is a broken link: restore its target"
        if not os.path.isfile(full):
            return "E-IMAGE-NOT-FILE", (f"image {path!r} is not a regular file: point the path "
                                        "at an image file")
        self.known.add(path)
        return None


class MediaInspector:
    """Decodes images (``--check-images decode``) and reads sizes, once per path.

    Args:
        root: the images root.
        max_pixels: decompression-bomb limit.
        max_aspect_ratio: extreme aspect ratio limit.
    """

    def __init__(self, root: str | Path, *, max_pixels: int, max_aspect_ratio: float) -> None:
        self.root = os.path.abspath(root)
        self.max_pixels = max_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self._reports: dict[str, ImageReport] = {}
        self._sizes: dict[str, tuple[int, int] | Problem] = {}

    def inspect(self, path: str) -> tuple[ImageReport, bool]:
        """``(report, first_time)`` for an image; decoded on the first call only."""
        report = self._reports.get(path)
        if report is not None:
            return report, False
        report = inspect_image(os.path.join(self.root, path), max_pixels=self.max_pixels,
                               max_aspect_ratio=self.max_aspect_ratio)
        self._reports[path] = report
        if report.header is not None and report.decodable:
            self._sizes[path] = report.header.oriented_size
        return report, True

    def problems(self, report: ImageReport) -> list[Problem]:
        """The report's problems as ``(issue code, message)``."""
        return [(media_code(kind), message) for kind, message in report.problems]

    def size(self, path: str) -> tuple[int, int] | Problem:
        """Displayed ``(width, height)`` from the header (EXIF applied), or a problem.

        Only the header is read (no decoding); bombs and unreadable files give a problem.
        """
        known = self._sizes.get(path)
        if known is not None:
            return known
        try:
            header = read_image_header(os.path.join(self.root, path))
        except ImageError as error:
            result: tuple[int, int] | Problem = (media_code(error.kind), error.detail)
        else:
            errors = [(kind, message) for kind, message in
                      header_problems(header, max_pixels=self.max_pixels,
                                      max_aspect_ratio=self.max_aspect_ratio)
                      if kind in ERROR_KINDS]
            result = (media_code(errors[0][0]), errors[0][1]) if errors else header.oriented_size
        self._sizes[path] = result
        return result


def first_lines(records: Iterable[tuple[int, object]], wanted: set[str]
                ) -> dict[str, tuple[int, str, str]]:
    """For each wanted image path, where it first appears: ``(line, field, record id)``.

    Args:
        records: ``(line, record)`` pairs in file order.
        wanted: image paths to locate.
    """
    located: dict[str, tuple[int, str, str]] = {}
    for line, record in records:
        for turn_index, turn in enumerate(record.conversations):  # type: ignore[attr-defined]
            for image_index, path in enumerate(turn.images):
                if path in wanted and path not in located:
                    located[path] = (line, f"conversations[{turn_index}].images[{image_index}]",
                                     record.id)  # type: ignore[attr-defined]
    return located
