"""``phiv-data preview``: look at a dataset in one self-contained HTML page.

Pipeline, built to stay fast and small on a million records:

1. :func:`phiv_data.preview.sampling.scan` reads the shard once, counting every line and
   keeping a uniform random sample of lines (reservoir sampling, seeded);
2. :func:`phiv_data.preview.stats.measure` reads the image *headers* of a larger sample
   (``measure`` records) for the image-size and token-length plots;
3. :func:`phiv_data.preview.issues.sample_issues` runs the validator on the shown records;
4. thumbnails are made for the shown records only, and the page is written atomically.

Library use::

    from phiv_data.preview import PreviewOptions, build_preview
    result = build_preview("data/ucf101/ucf101_val.jsonl", "report.html",
                           PreviewOptions(sample=50, max_length=8192))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from phiv_data.errors import UsageError, display_path
from phiv_data.phi3v import DEFAULT_NUM_CROPS
from phiv_data.preview import plots, render
from phiv_data.preview.issues import SampleIssues, sample_issues
from phiv_data.preview.sampling import scan
from phiv_data.preview.stats import (
    DatasetCounts,
    Measurements,
    describe,
    measure,
    parse_sampled,
    top_answers,
)
from phiv_data.preview.thumbnails import Thumbnails
from phiv_data.shards import atomic_write

DEFAULT_SAMPLE = 50
DEFAULT_MEASURE = 1000

__all__ = ["DEFAULT_MEASURE", "DEFAULT_SAMPLE", "PreviewOptions", "PreviewResult",
           "build_preview"]


@dataclass(frozen=True)
class PreviewOptions:
    """Options of ``phiv-data preview`` (the CLI flags, one to one).

    Attributes:
        images_root: folder image paths are relative to (``None``: the shard's manifest
            entry, else ``images/`` beside the file).
        sample: records shown (all of them when the file has fewer).
        seed: seed of the random sample.
        measure: records whose image headers are read for the size and token plots (the
            shown records are always among them).
        num_crops: Phi-3.5-vision ``num_crops`` for image token counts.
        max_length: token budget drawn on the token-length plot and checked for the shown
            records (``None``: no budget).
        tokenizer: folder with ``tokenizer.json`` for exact text tokens (else estimated).
        check_images: validation of the shown records' images: ``exists`` or ``decode``.
        validate: run the validator on the shown records.
    """

    images_root: Path | None = None
    sample: int = DEFAULT_SAMPLE
    seed: int = 0
    measure: int = DEFAULT_MEASURE
    num_crops: int = DEFAULT_NUM_CROPS
    max_length: int | None = None
    tokenizer: Path | None = None
    check_images: str = "decode"
    validate: bool = True

    def checked(self) -> PreviewOptions:
        """Return ``self`` after checking the values.

        Raises:
            UsageError: naming the first bad option.
        """
        if self.sample < 1:
            raise UsageError(f"--sample must be at least 1, got {self.sample}")
        if self.measure < 0:
            raise UsageError(f"--measure must be 0 or more, got {self.measure}")
        if self.num_crops < 1:
            raise UsageError(f"--num-crops must be at least 1, got {self.num_crops}")
        if self.max_length is not None and self.max_length < 1:
            raise UsageError(f"--max-length must be at least 1, got {self.max_length}")
        if self.check_images not in ("exists", "decode"):
            raise UsageError(f"--check-images must be exists or decode, "
                             f"not {self.check_images!r}")
        return self


@dataclass
class PreviewResult:
    """What the page shows: counts a caller (or a test) can check."""

    out: Path
    records: int
    lines: int
    shown: int
    shown_images: int
    embedded_images: int
    issues: int
    notes: list[str] = field(default_factory=list)


def build_preview(path: str | Path, out: str | Path,
                  options: PreviewOptions | None = None) -> PreviewResult:
    """Write a self-contained HTML preview of a phiv shard.

    Args:
        path: the JSONL shard.
        out: the HTML file to write (atomically).
        options: see :class:`PreviewOptions`.

    Returns:
        The :class:`PreviewResult`.

    Raises:
        UsageError: on bad options or a missing file.
    """
    from phiv_data.interop.common import default_images_root

    options = (options or PreviewOptions()).checked()
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise UsageError(f"{display_path(path)}: no such file")
    root = options.images_root if options.images_root is not None else default_images_root(path)
    found = scan(path, sample=options.sample, measure=options.measure, seed=options.seed)
    counts = found.counts
    notes: list[str] = []
    if not root.is_dir():
        notes.append(f"images root {display_path(root)} does not exist (pass --images-root)")

    parsed = {line: parse_sampled(raw) for line, raw in found.measured}
    numbers = measure([record for record in parsed.values() if record is not None], root,
                      num_crops=options.num_crops, tokenizer=options.tokenizer)

    issues: SampleIssues | None = None
    if options.validate:
        issues = sample_issues(found.shown, root, check_images=options.check_images,
                               num_crops=options.num_crops, max_length=options.max_length,
                               tokenizer=options.tokenizer)

    thumbnails = Thumbnails(root)
    articles: list[str] = []
    shown_images = embedded = 0
    for line, raw in found.shown:
        record = parsed[line]
        line_issues = None if issues is None else issues.by_line.get(line, [])
        if record is None:
            articles.append(render.invalid_article(line, raw, line_issues))
            continue
        shown_images += len(record.images)
        articles.append(render.record_article(line, record, thumbnails, line_issues))
        embedded += sum(thumbnails.get(image)[0] is not None for image in record.images)

    notes += _notes(counts.lines, len(found.shown), options, numbers.records,
                    numbers.tokens_exact, issues is not None)
    html = render.page(
        title=display_path(path),
        summary=_summary(counts, root),
        plots=_plots(counts, numbers, options),
        articles=articles, sample_issues=issues, notes=notes)
    with atomic_write(out, "w") as handle:
        handle.write(html)
    issue_count = 0 if issues is None else (
        sum(len(found_issues) for found_issues in issues.by_line.values()) + len(issues.general))
    return PreviewResult(out=out, records=counts.records, lines=counts.lines,
                         shown=len(articles), shown_images=shown_images,
                         embedded_images=embedded, issues=issue_count, notes=notes)


def _summary(counts: DatasetCounts, root: Path) -> list[str]:
    fragment = render.fragment
    parts = [fragment(counts.records, "records"), fragment(counts.images, "images"),
             fragment(counts.unlabeled, "unlabeled")]
    if counts.not_records:
        parts.append(fragment(counts.not_records, "lines that are not records"))
    if counts.blank_lines:
        parts.append(fragment(counts.blank_lines, "blank lines"))
    parts.append(fragment(display_path(root), "images root"))
    return parts


def _notes(lines: int, shown: int, options: PreviewOptions, measured: int,
           tokens_exact: bool, validated: bool) -> list[str]:
    notes = [f"showing {shown} of {lines} lines "
             + ("(all of them)" if shown >= lines else
                f"(uniform random sample, seed {options.seed}; --sample to change)")]
    notes.append(f"image sizes and token lengths from the headers of {measured} sampled "
                 f"records; text tokens {'exact' if tokens_exact else 'estimated'}; "
                 f"num_crops {options.num_crops}")
    if validated:
        notes.append("issues are those of the shown records (checks across the whole file, "
                     "such as duplicate ids, need `phiv-data validate`)")
    return notes


def _plots(counts: DatasetCounts, numbers: Measurements, options: PreviewOptions
           ) -> list[tuple[str, str]]:
    per_record = sorted(counts.images_per_record.items())
    result = [(plots.bar_chart([(str(k), v) for k, v in per_record], "Images per record",
                               "images", "records"),
               f"all {counts.records} records")]
    budget = options.max_length
    over = sum(length > budget for length in numbers.token_lengths) if budget else 0
    stats = describe(numbers.token_lengths)
    caption = (f"{len(numbers.token_lengths)} sampled records; median {stats.get('median')}, "
               f"p95 {stats.get('p95')}, max {stats.get('max')}" if stats else "no records")
    if budget:
        caption += f"; {over} over the budget of {budget}"
    else:
        caption += "; pass --max-length to draw the budget"
    result.append((plots.histogram(numbers.token_lengths, "Tokens per record", "tokens",
                                   marker=budget, marker_label=f"budget {budget}"), caption))
    answers = top_answers(counts.answers)
    result.append((plots.horizontal_bars(answers, "Answers (last turn)", "records"),
                   f"{len(counts.answers.counts)}{'+' if counts.answers.overflow else ''} "
                   f"distinct answers over all {counts.records} records"))
    sizes = numbers.image_sizes
    result.append((plots.scatter(sizes[:2000], "Image sizes", "width (px)", "height (px)"),
                   f"{len(sizes)} distinct sampled images"
                   + (f", {numbers.unreadable_images} unreadable" if numbers.unreadable_images
                      else "")))
    ratios = [max(w, h) / max(1, min(w, h)) for w, h in sizes]
    result.append((plots.histogram(ratios, "Aspect ratio (long side / short side)", "ratio"),
                   f"{len(ratios)} distinct sampled images"))
    return result
