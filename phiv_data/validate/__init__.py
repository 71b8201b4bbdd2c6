"""``phiv-data validate``: prove a dataset is sound before any GPU time is spent.

Library use (what the CLI, the preview and the trainer call)::

    from phiv_data.validate import ValidationOptions, validate_paths, record_validation

    report = validate_paths(["data/ucf101/ucf101_train.jsonl"],
                            ValidationOptions(check_images="decode", max_length=8192))
    for issue in report.issues:            # Issue(code, message, file, line, field, record_id)
        print(issue)                       # file:line: field path: [CODE] message
    report.ok                              # no errors (and no warnings with strict=True)
    report.issues_for("data/ucf101/ucf101_train.jsonl")   # {line: [issues]}
    record_validation(report)              # write the outcome into manifest.json

``validate_paths`` never writes; ``record_validation`` updates the manifest of each file's
directory (see :mod:`phiv_data.validate.recording` for the policy).

Issue codes (stable; ``E-`` errors fail, ``W-`` warnings fail only with ``--strict``,
``I-`` information never fails):

Bytes and syntax
    E-UTF8, E-BOM, E-JSON, E-NOT-OBJECT, E-LINE-TOO-LONG (default limit 1 MiB),
    E-EMPTY-FILE, W-BLANK-LINE, W-CRLF (once per file, with a count)
Schema (pydantic errors with their field path)
    E-SCHEMA-MISSING, E-SCHEMA-TYPE (no coercion: ``id`` must be a JSON string),
    E-SCHEMA-UNKNOWN-FIELD, E-SCHEMA-EMPTY-CONVERSATIONS, E-SCHEMA-EMPTY-TEXT,
    E-SCHEMA-UNLABELED-TURN, E-SCHEMA-INVALID
Text
    E-TEXT-BLANK (whitespace-only user/assistant), E-TEXT-SPECIAL (placeholder or
    special-token strings such as ``<|image_1|>``, ``<|end|>``, ``<s>``), W-TEXT-CONTROL
Dataset
    E-ID-DUPLICATE (on the later line), E-PATH-ABSOLUTE, E-PATH-PARENT, E-PATH-BACKSLASH,
    E-PATH-OUTSIDE-ROOT (links included), E-IMAGES-ROOT-MISSING, E-IMAGE-MISSING,
    E-IMAGE-NOT-FILE, W-LEAK-SHARED (same image file in two files given together),
    I-UNLABELED (records whose last answer is null: evaluation only; once per file)
Media (``--check-images decode``; bombs and unreadable headers also with the token budget)
    E-IMAGE-EMPTY, E-IMAGE-UNREADABLE, E-IMAGE-TRUNCATED, E-IMAGE-BOMB (refused from the
    header, never decoded), W-IMAGE-MODE (CMYK, palette, alpha, 16-bit), W-IMAGE-EXIF-ROTATED,
    W-IMAGE-ASPECT, W-IMAGE-DUPLICATE (same bytes, other name), W-LEAK-CONTENT (same bytes
    in two files given together)
Token budget (``--max-length``)
    W-TOKENS-OVER, E-TOKENS-NOTHING-TO-LEARN (the first answer starts beyond the budget,
    so every label would be masked)

The full catalogue with descriptions is :data:`CATALOGUE`, what to do about each code
:data:`phiv_data.validate.issues.FIXES` (both printed by ``phiv-data validate --codes``).
"""

from phiv_data.validate.issues import CATALOGUE, Issue, Severity, severity_of
from phiv_data.validate.options import ValidationOptions
from phiv_data.validate.recording import record_validation
from phiv_data.validate.report import FileSummary, ValidationReport
from phiv_data.validate.runner import validate_paths

__all__ = [
    "CATALOGUE",
    "FileSummary",
    "Issue",
    "Severity",
    "ValidationOptions",
    "ValidationReport",
    "record_validation",
    "severity_of",
    "validate_paths",
]
