"""One exception tree for everything phiv reports to a user.

Every error says *where* (file, line, field) when it is about data, and *what to do*
(``hint``). The CLIs print ``str(error)`` on one line and exit non-zero; a traceback is
shown only when ``PHIV_DEBUG=1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """Where a problem is: ``file:line: field path``. Every part is optional."""

    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)


class PhivError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None,
                 location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location

    def __str__(self) -> str:
        text = self.message
        if self.location is not None and str(self.location):
            text = f"{self.location}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class UsageError(PhivError):
    """Bad command-line arguments, options or configuration."""

    exit_code = 2


class DataError(PhivError):
    """A record, file or dataset is malformed."""


class ManifestError(PhivError):
    """A dataset directory has no manifest, or its shards do not match it."""


class MediaError(PhivError):
    """An image or video cannot be read or decoded."""


def display_path(path: str | Path) -> str:
    """A path as users typed it: relative to the working directory when it is inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
