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

FIXES: dict[str, str] = {
    "E-UTF8": "Re-encode the file as UTF-8 (for example `iconv -f latin1 -t utf-8`).",
    "E-BOM": "Save the file as UTF-8 without a BOM (drop its first three bytes).",
    "E-JSON": "Repair the line's JSON (quotes, commas, brackets; no NaN or Infinity) or "
              "remove the line.",
    "E-NOT-OBJECT": "Write one record object per line; split a JSON array into lines.",
    "E-LINE-TOO-LONG": "Shorten the record (images belong in files, not inline) or raise "
                       "--max-line-bytes.",
    "E-EMPTY-FILE": "Write records into the file, or leave it out.",
    "W-BLANK-LINE": "Delete the blank line.",
    "W-CRLF": "Convert the line endings to LF (for example `dos2unix FILE`).",
    "E-SCHEMA-MISSING": "Add the field (`\"assistant\": null` marks the unlabeled last turn "
                        "of an evaluation record).",
    "E-SCHEMA-TYPE": "Write the value with the JSON type of schemas/record.schema.json "
                     "(ids are strings: `\"42\"`, not `42`).",
    "E-SCHEMA-UNKNOWN-FIELD": "Correct the field name, or move the data under `meta`.",
    "E-SCHEMA-EMPTY-CONVERSATIONS": "Give the record at least one turn, or drop it.",
    "E-SCHEMA-EMPTY-TEXT": "Write the text (or the image path), or drop the record.",
    "E-SCHEMA-UNLABELED-TURN": "Give every turn but the last an answer.",
    "E-SCHEMA-INVALID": "Follow the message; the format is schemas/record.schema.json.",
    "E-TEXT-BLANK": "Write the text, or drop the record.",
    "E-TEXT-SPECIAL": "Remove the tag from the text: image placeholders come from `images` "
                      "and chat tags from the processor.",
    "W-TEXT-CONTROL": "Remove the control characters (usually debris of a bad conversion).",
    "E-ID-DUPLICATE": "Give every record its own id (converters write `{split}-{i:010d}`).",
    "E-PATH-ABSOLUTE": "Make the path relative to the images root; pass the root with "
                       "--images-root.",
    "E-PATH-PARENT": "Move the image inside the images root, or choose a root that holds it.",
    "E-PATH-BACKSLASH": "Use `/` separators.",
    "E-PATH-OUTSIDE-ROOT": "Copy the file into the images root instead of linking out of "
                           "it, or choose a root that holds it.",
    "E-IMAGES-ROOT-MISSING": "Pass --images-root DIR, the directory image paths are "
                             "relative to.",
    "E-IMAGE-MISSING": "Restore the file or correct the path (is --images-root right?).",
    "E-IMAGE-NOT-FILE": "Point the path at an image file.",
    "I-UNLABELED": "Nothing for an evaluation set; a training set needs the answers.",
    "W-LEAK-SHARED": "Keep the image in one split only (drop its records from the other).",
    "E-IMAGE-EMPTY": "Re-extract or re-download the image.",
    "E-IMAGE-UNREADABLE": "Replace the file, or re-export it as JPEG or PNG.",
    "E-IMAGE-TRUNCATED": "Re-extract or re-download the image (the file was cut short).",
    "E-IMAGE-BOMB": "Downscale the image: Phi-3.5-vision sees at most num_crops crops of "
                    "336 pixels.",
    "W-IMAGE-MODE": "Re-export the image as 8-bit RGB (flatten alpha onto the background "
                    "you intend).",
    "W-IMAGE-EXIF-ROTATED": "Bake the rotation into the pixels "
                            "(`PIL.ImageOps.exif_transpose`) and drop the tag.",
    "W-IMAGE-ASPECT": "Crop or split the image, or check that it is what you meant.",
    "W-IMAGE-DUPLICATE": "Drop the copy, or refer to one file.",
    "W-LEAK-CONTENT": "Keep the image in one split only (drop its records from the other).",
    "W-TOKENS-OVER": "Use fewer or smaller images, fewer crops or shorter text, or a larger "
                     "--max-length; phiv-train stops on such records unless --too-long "
                     "drop or truncate_turns.",
    "E-TOKENS-NOTHING-TO-LEARN": "Use fewer or smaller images or fewer crops before the "
                                 "first answer, or a larger --max-length.",
}
"""What the user does about each code (README table, ``--codes``)."""

FAMILIES: dict[str, tuple[str, ...]] = {
    "syntax": ("E-UTF8", "E-BOM", "E-JSON", "E-NOT-OBJECT", "E-LINE-TOO-LONG",
               "E-EMPTY-FILE", "W-BLANK-LINE", "W-CRLF"),
    "schema": ("E-SCHEMA-", "E-TEXT-", "W-TEXT-"),
    "dataset": ("E-ID-", "E-PATH-", "E-IMAGES-ROOT-MISSING", "E-IMAGE-MISSING",
                "E-IMAGE-NOT-FILE", "W-LEAK-SHARED", "I-UNLABELED"),
    "media": ("E-IMAGE-", "W-IMAGE-", "W-LEAK-CONTENT"),
    "tokens": ("W-TOKENS-", "E-TOKENS-"),
}
"""Check families (recorded per family in the manifest), by code or code prefix."""

FAMILY_WHEN = {
    "syntax": "always", "schema": "always",
    "dataset": "always (image files: `--check-images exists`, the default)",
    "media": "`--check-images decode` (unreadable headers and bombs also with `--max-length`)",
    "tokens": "`--max-length`",
}
"""When each family runs."""


def family_of(code: str) -> str:
    """The check family of a code: ``syntax``, ``schema``, ``dataset``, ``media``, ``tokens``.

    Exact codes are matched before prefixes (``E-IMAGE-MISSING`` is a dataset check while
    other ``E-IMAGE-`` codes are media checks).
    """
    for family in ("syntax", "schema", "dataset", "tokens", "media"):
        if code.startswith(FAMILIES[family]):
            return family
    return "schema"


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
