"""The validation report: every issue, per-file facts, and the human summary.

``render_text`` prints each problem (up to ``max_errors``) as
``file:line: field path: [CODE] message`` and then the summary; ``to_dict`` is the
``--format json`` document with every issue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiv_data.validate.issues import (
    CATALOGUE,
    FAMILY_WHEN,
    FIXES,
    Issue,
    family_of,
    severity_of,
)
from phiv_data.validate.options import ValidationOptions

PERCENTILES = (50, 90, 99)


def percentiles(values: list[int]) -> dict[str, int]:
    """``{"p50": .., "p90": .., "p99": .., "max": ..}`` by nearest rank (empty when no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    found = {f"p{p}": ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))]
             for p in PERCENTILES}
    found["max"] = ordered[-1]
    return found


@dataclass
class FileSummary:
    """What one validated file holds.

    Attributes:
        path: absolute path of the file.
        shown: the path as printed in issues.
        images_root: the images root used (absolute), ``None`` when there was none.
        images_root_exists: whether that directory exists.
        split: split inferred from the file name or taken from its manifest.
        sha256: sha256 of exactly the bytes validated.
        size_bytes: their size.
        lines: line count; records: valid records; unlabeled: records whose last answer
            is null; images: image references of valid records.
        images_per_record: histogram ``{images: records}``.
        labels: answers of single-turn records, counted.
        token_lengths: token count of each record (only with ``max_length``).
        errors, warnings: issue counts for this file (``--strict`` not applied).
    """

    path: Path
    shown: str
    images_root: Path | None
    images_root_exists: bool
    split: str | None
    sha256: str = ""
    size_bytes: int = 0
    lines: int = 0
    records: int = 0
    unlabeled: int = 0
    images: int = 0
    images_per_record: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    token_lengths: list[int] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0

    def to_dict(self, top_labels: int) -> dict[str, Any]:
        """JSON-ready summary of the file."""
        return {
            "file": self.shown, "split": self.split, "sha256": self.sha256,
            "size_bytes": self.size_bytes, "lines": self.lines, "records": self.records,
            "unlabeled": self.unlabeled, "images": self.images,
            "images_root": str(self.images_root) if self.images_root else None,
            "images_per_record": {str(k): v for k, v in sorted(self.images_per_record.items())},
            "labels": dict(self.labels.most_common(top_labels)),
            "distinct_labels": len(self.labels),
            "token_lengths": percentiles(self.token_lengths),
            "errors": self.errors, "warnings": self.warnings,
        }


@dataclass
class ValidationReport:
    """Outcome of :func:`phiv_data.validate.validate_paths`.

    Attributes:
        files: one :class:`FileSummary` per file, in the order given.
        issues: every issue, ordered by file then line.
        options: the options used.
        tokens_estimated: token counts are estimates (no tokenizer given).
        seconds: wall time of the validation.
    """

    files: list[FileSummary]
    issues: list[Issue]
    options: ValidationOptions
    tokens_estimated: bool = True
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        """Number of error issues."""
        return sum(issue.severity == "error" for issue in self.issues)

    @property
    def warnings(self) -> int:
        """Number of warning issues."""
        return sum(issue.severity == "warning" for issue in self.issues)

    @property
    def ok(self) -> bool:
        """No errors (and, with ``strict``, no warnings)."""
        return self.errors == 0 and not (self.options.strict and self.warnings)

    def file_ok(self, summary: FileSummary) -> bool:
        """The same verdict for one file."""
        return summary.errors == 0 and not (self.options.strict and summary.warnings)

    def counts_by_code(self) -> dict[str, int]:
        """``{code: count}``, most frequent first."""
        return dict(Counter(issue.code for issue in self.issues).most_common())

    def issues_for(self, file: str | Path) -> dict[int | None, list[Issue]]:
        """Issues of one file grouped by line (``None`` for file-level issues).

        Args:
            file: the file as given to ``validate_paths`` or its absolute path.
        """
        wanted = Path(file).resolve()
        shown = next((summary.shown for summary in self.files
                      if summary.path == wanted or summary.shown == str(file)), None)
        grouped: dict[int | None, list[Issue]] = {}
        for issue in self.issues:
            if issue.file == shown:
                grouped.setdefault(issue.line, []).append(issue)
        return grouped

    def totals(self) -> dict[str, Any]:
        """Counts over every file."""
        images_per_record: Counter = Counter()
        labels: Counter = Counter()
        lengths: list[int] = []
        for summary in self.files:
            images_per_record.update(summary.images_per_record)
            labels.update(summary.labels)
            lengths.extend(summary.token_lengths)
        return {
            "files": len(self.files),
            "records": sum(summary.records for summary in self.files),
            "unlabeled": sum(summary.unlabeled for summary in self.files),
            "images": sum(summary.images for summary in self.files),
            "images_per_record": {str(k): v for k, v in sorted(images_per_record.items())},
            "labels": dict(labels.most_common(self.options.top_labels)),
            "distinct_labels": len(labels),
            "token_lengths": percentiles(lengths),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``--format json`` document."""
        options = self.options
        return {
            "ok": self.ok, "errors": self.errors, "warnings": self.warnings,
            "strict": options.strict, "counts_by_code": self.counts_by_code(),
            "options": {
                "check_images": options.check_images, "max_length": options.max_length,
                "num_crops": options.num_crops,
                "tokenizer": str(options.tokenizer) if options.tokenizer else None,
                "tokens_estimated": self.tokens_estimated if options.max_length else None,
            },
            "totals": self.totals(),
            "files": [summary.to_dict(options.top_labels) for summary in self.files],
            "issues": [issue.to_dict() for issue in self.issues],
            "seconds": round(self.seconds, 3),
        }

    def render_text(self, max_errors: int | None = 50) -> str:
        """Every issue (up to ``max_errors``), then the human summary."""
        lines: list[str] = []
        shown = self.issues if max_errors is None else self.issues[:max_errors]
        lines.extend(str(issue) for issue in shown)
        hidden = len(self.issues) - len(shown)
        if hidden:
            lines.append(f"... {hidden} more issue(s) not shown (raise --max-errors or use "
                         "--format json)")
        if lines:
            lines.append("")
        lines.extend(self._summary_lines())
        return "\n".join(lines) + "\n"

    def _summary_lines(self) -> list[str]:
        totals = self.totals()
        lines = []
        for summary in self.files:
            verdict = "ok" if self.file_ok(summary) else "INVALID"
            lines.append(f"{summary.shown}: {verdict}: {summary.records:,} records, "
                         f"{summary.images:,} images, {summary.errors} error(s), "
                         f"{summary.warnings} warning(s)")
        lines.append(f"records: {totals['records']:,} in {totals['files']} file(s)"
                     + (f", {totals['unlabeled']:,} unlabeled (evaluation only)"
                        if totals["unlabeled"] else ""))
        histogram = ", ".join(f"{k}: {v:,}" for k, v in totals["images_per_record"].items())
        lines.append(f"images per record: {histogram or '-'}")
        if totals["labels"]:
            top = ", ".join(f"{label[:40]!r}: {count:,}" for label, count in
                            totals["labels"].items())
            lines.append(f"labels (single-turn answers, top {len(totals['labels'])} of "
                         f"{totals['distinct_labels']:,}): {top}")
        if totals["token_lengths"]:
            kind = "estimated" if self.tokens_estimated else "exact"
            spread = ", ".join(f"{k} {v:,}" for k, v in totals["token_lengths"].items())
            lines.append(f"tokens per record ({kind}, num_crops={self.options.num_crops}): "
                         f"{spread}")
        counts = self.counts_by_code()
        if counts:
            lines.append("issues by code: " + ", ".join(f"{code} {count:,}"
                                                        for code, count in counts.items()))
        verdict = "VALID" if self.ok else "INVALID"
        strict = " (strict: warnings fail)" if self.options.strict else ""
        lines.append(f"{verdict}: {self.errors:,} error(s), {self.warnings:,} warning(s)"
                     f"{strict} in {self.seconds:.2f}s")
        return lines


def describe_codes() -> str:
    """The catalogue as text (``phiv-data validate --codes``): per code, its check family,
    what it means and what to do."""
    lines = []
    for code, text in CATALOGUE.items():
        lines.append(f"{code:<30}{family_of(code):<9}{text}")
        lines.append(f"{'':<39}fix: {FIXES[code]}")
    return "\n".join(lines)


def catalogue_markdown() -> str:
    """The catalogue as the Markdown table of the README (a test keeps the two in sync)."""
    rows = ["| code | severity | check | runs | what it means | how to fix it |",
            "|---|---|---|---|---|---|"]
    for code, text in CATALOGUE.items():
        family = family_of(code)
        cells = [f"`{code}`", severity_of(code), family, FAMILY_WHEN[family], text, FIXES[code]]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)
