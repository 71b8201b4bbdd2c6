"""Issues and the catalogue of their stable codes.

An :class:`Issue` is one problem at one place: ``file:line: field path: [CODE] message``.
Codes never change meaning; new checks get new codes. ``E-`` codes are errors (the data
cannot be used as it is), ``W-`` codes warnings (worth a look; fail only with ``--strict``),
``I-`` codes information (never fail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

CATALOGUE: dict[str, str] = {
    # bytes and syntax
    "E-UTF8": "the line is not valid UTF-8",
    "E-BOM": "the file starts with a UTF-8 byte-order mark",
    "E-JSON": "the line is not valid JSON",
    "E-NOT-OBJECT": "the line is valid JSON but not an object",
    "E-LINE-TOO-LONG": "the line is longer than the line-length limit (not parsed)",
    "E-EMPTY-FILE": "the file holds no records",
    "W-BLANK-LINE": "a blank (empty or whitespace-only) line",
    "W-CRLF": "lines end with CRLF instead of LF (reported once per file, with a count)",
    # schema (pydantic, field by field)
    "E-SCHEMA-MISSING": "a required field is missing",
    "E-SCHEMA-TYPE": "a field has the wrong JSON type (no coercion: ids are strings)",
    "E-SCHEMA-UNKNOWN-FIELD": "a field the format does not define",
    "E-SCHEMA-EMPTY-CONVERSATIONS": "conversations is an empty list",
    "E-SCHEMA-EMPTY-TEXT": "an empty string where text is required (id, user, assistant, path)",
    "E-SCHEMA-UNLABELED-TURN": "assistant is null in a turn that is not the last",
    "E-SCHEMA-INVALID": "any other schema violation",
    # text rules
    "E-TEXT-BLANK": "user or assistant text is only whitespace",
    "E-TEXT-SPECIAL": "user or assistant text contains a placeholder or special-token string",
    "W-TEXT-CONTROL": "text contains control characters",
    # dataset rules
    "E-ID-DUPLICATE": "an id already used on an earlier line of the file",
    "E-PATH-ABSOLUTE": "an image path is absolute",
    "E-PATH-PARENT": "an image path has a '..' segment",
    "E-PATH-BACKSLASH": "an image path uses backslashes",
    "E-PATH-OUTSIDE-ROOT": "an image path resolves (through links) outside the images root",
    "E-IMAGES-ROOT-MISSING": "the images root does not exist",
    "E-IMAGE-MISSING": "an image file does not exist",
    "E-IMAGE-NOT-FILE": "an image path names a directory or special file",
    "I-UNLABELED": "records whose last answer is null: evaluation only (once per file)",
    "W-LEAK-SHARED": "the same image file is used by two of the files given together",
    # media (--check-images decode)
    "E-IMAGE-EMPTY": "an image file has 0 bytes",
    "E-IMAGE-UNREADABLE": "an image file cannot be identified or decoded",
    "E-IMAGE-TRUNCATED": "an image file is truncated",
    "E-IMAGE-BOMB": "an image is larger than the pixel limit; refused without decoding",
    "W-IMAGE-MODE": "CMYK, palette, alpha or 16-bit colour mode",
    "W-IMAGE-EXIF-ROTATED": "the image carries an EXIF rotation",
    "W-IMAGE-ASPECT": "extreme aspect ratio",
    "W-IMAGE-DUPLICATE": "identical image content under a different name",
    "W-LEAK-CONTENT": "identical image content in two of the files given together",
    # token budget (--max-length)
    "W-TOKENS-OVER": "the record is longer than --max-length tokens",
    "E-TOKENS-NOTHING-TO-LEARN": "no answer token falls within --max-length",
}
"""Every issue code with a one-line description (also listed in ``phiv_data.validate``)."""

_MEDIA_KIND_CODES = {
    "empty": "E-IMAGE-EMPTY",
    "unreadable": "E-IMAGE-UNREADABLE",
    "truncated": "E-IMAGE-TRUNCATED",
    "bomb": "E-IMAGE-BOMB",
    "mode": "W-IMAGE-MODE",
    "exif-rotation": "W-IMAGE-EXIF-ROTATED",
    "aspect": "W-IMAGE-ASPECT",
}


def media_code(kind: str) -> str:
    """The issue code of a ``phiv_data.media.images`` problem kind."""
    return _MEDIA_KIND_CODES[kind]


def severity_of(code: str) -> Severity:
    """``error``, ``warning`` or ``info``, from the code's prefix."""
    if code.startswith("E-"):
        return "error"
    if code.startswith("W-"):
        return "warning"
    return "info"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem at one place.

    Attributes:
        code: stable code from :data:`CATALOGUE`.
        message: what is wrong and, where it helps, what to do.
        file: the file as the user named it (``None`` for problems of the whole run).
        line: 1-based line number (``None`` for file-level problems).
        field: field path such as ``conversations[0].images[2]`` (``None`` for the line).
        record_id: the record's id when it could be read.
    """

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    record_id: str | None = None

    @property
    def severity(self) -> Severity:
        """``error``, ``warning`` or ``info``."""
        return severity_of(self.code)

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [part for part in (where, self.field) if part]
        prefix = ": ".join(parts)
        text = f"[{self.code}] {self.message}"
        return f"{prefix}: {text}" if prefix else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``severity`` included)."""
        return {"code": self.code, "severity": self.severity, "file": self.file,
                "line": self.line, "field": self.field, "record_id": self.record_id,
                "message": self.message}

    def at(self, *, file: str | None = None, line_offset: int = 0) -> Issue:
        """A copy placed in ``file`` with its line shifted by ``line_offset``."""
        return Issue(self.code, self.message, file if file is not None else self.file,
                     None if self.line is None else self.line + line_offset,
                     self.field, self.record_id)
