"""The validation issues of the shown records, from the validator's own library API.

The preview does not re-implement any check: it writes the sampled lines to a temporary
shard and runs :func:`phiv_data.validate.validate_paths` on it with the preview's images
root and token budget, then maps each issue back to its line in the original file. Checks
that need the whole file (duplicate ids, images shared between files) are left to
``phiv-data validate``; the page says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShownIssue:
    """One validation issue of a shown record (or of the sample as a whole: ``line`` None)."""

    code: str
    severity: str
    field: str | None
    message: str


@dataclass
class SampleIssues:
    """Issues of the shown lines by original line number, plus sample-wide ones."""

    by_line: dict[int, list[ShownIssue]]
    general: list[ShownIssue]


def sample_issues(lines: list[tuple[int, bytes]], images_root: Path, *, check_images: str,
                  num_crops: int, max_length: int | None, tokenizer: Path | None
                  ) -> SampleIssues:
    """Validate exactly the shown lines.

    Args:
        lines: ``(original_line_number, raw_bytes)`` of the shown records, in file order.
        images_root: the images root the preview uses.
        check_images: ``exists`` or ``decode`` (see ``phiv-data validate``).
        num_crops: for the token budget.
        max_length: the token budget (``None``: not checked).
        tokenizer: tokenizer folder for exact text tokens (``None``: estimated).

    Returns:
        The :class:`SampleIssues`.
    """
    from phiv_data.validate import ValidationOptions, validate_paths

    options = ValidationOptions(images_root=images_root, check_images=check_images,
                                num_crops=num_crops, max_length=max_length,
                                tokenizer=tokenizer, workers=1)
    with tempfile.TemporaryDirectory(prefix="phiv-preview-") as scratch:
        sample = Path(scratch) / "sample.jsonl"
        sample.write_bytes(b"".join(raw + b"\n" for _, raw in lines))
        report = validate_paths([sample], options.checked())
    result = SampleIssues(by_line={}, general=[])
    for issue in report.issues:
        shown = ShownIssue(issue.code, issue.severity, issue.field, issue.message)
        if issue.line is None or not 1 <= issue.line <= len(lines):
            result.general.append(shown)
        else:
            result.by_line.setdefault(lines[issue.line - 1][0], []).append(shown)
    return result
