"""Import and export one file: the loop every format shares.

A format module (``llava``, ``sharegpt``, ``hf``) supplies only what is specific to it:
``read_rows``, ``parse_row`` and ``import_images`` for import; ``export_images``,
``record_to_row`` and ``write_rows`` for export. This module reads rows, reconciles image
tags and image lists (``phiv_data.interop.tags``), counts and reports every problem, and
writes through the atomic writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from phiv_data.errors import DataError, display_path
from phiv_data.interop.common import (
    InteropReport,
    RejectedRows,
    default_images_root,
    fail_if_strict,
    relative_image_path,
    write_report,
)
from phiv_data.interop.tags import RowRejected, RowWarning, plan_turns, record_to_messages
from phiv_data.manifest import MANIFEST_NAME, Manifest, Shard
from phiv_data.shards import (
    ShardWriter,
    infer_split,
    iter_lines,
    load_manifest,
    parse_record,
    place_file,
    relative_posix,
    save_manifest,
)

EXPORT_IMAGE_MODES = ("link", "copy", "none")
HF_LAYOUTS = ("parquet", "disk")


@dataclass
class ExportOptions:
    """Options of ``phiv-data export`` (those a format does not use are ignored)."""

    images: str = "link"
    """link: hard-link each image into the output folder (copy where linking fails);
    copy: copy them; none: write the paths only (relative to the phiv images root)."""
    hf_layout: str = "parquet"
    """Hugging Face output: ``parquet`` (one ``<stem>.parquet``) or ``disk``
    (``Dataset.save_to_disk`` into ``<stem>/``)."""


class PathImages:
    """Import: foreign image paths, relative to ``root``, become phiv paths as they are."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, raw: Any, row_index: int, position: int) -> tuple[str, list[RowWarning]]:
        path = relative_image_path(raw, self.root)
        if not (self.root / path).is_file():
            return path, [RowWarning("missing-image",
                                     f"image {path!r} not found under {display_path(self.root)}")]
        return path, []


class PlacedImages:
    """Export: images keep their phiv paths, relative to the output folder (linked or copied
    there), so that LLaVA's ``--image_folder`` and LLaMA-Factory's ``media_dir`` are it."""

    def __init__(self, root: Path, out: Path, mode: str) -> None:
        self.root, self.out, self.mode = root, out, mode
        self.same_folder = root.resolve() == out.resolve()

    def __call__(self, path: str) -> tuple[str, list[RowWarning]]:
        source = self.root / path
        if not source.is_file():
            return path, [RowWarning("missing-image",
                                     f"image {path!r} not found under {display_path(self.root)}")]
        if self.mode != "none" and not self.same_folder:
            place_file(source, self.out / path, mode=self.mode)
        return path, []


def _reject(report: InteropReport, rejected: RejectedRows, line: int | None,
            problem: RowRejected, row: Any) -> None:
    report.rejected += 1
    report.add(line, problem.code, "error", problem.message)
    rejected.write(line, problem.code, problem.message, row)


def _warn(report: InteropReport, line: int | None, warnings: list[RowWarning]) -> None:
    if warnings:
        report.changed += 1
    for warning in warnings:
        report.add(line, warning.code, "warning", warning.message)


def input_stem(path: Path) -> str:
    """The output name of an input: its file name without suffix (a folder: its name)."""
    return path.name if path.is_dir() else path.stem


def import_file(fmt: ModuleType, path: str | Path, out: str | Path, *,
                images_root: str | Path | None = None, strict: bool = False
                ) -> tuple[InteropReport, Shard]:
    """Import one foreign file into the phiv shard ``OUT/<stem>.jsonl``.

    Args:
        fmt: the format module (``phiv_data.interop.llava`` ...).
        path: the input file (or a ``save_to_disk`` folder for ``hf``).
        out: the output folder.
        images_root: what image paths are relative to (default: the input's folder).
        strict: fail (writing nothing) on any rejected row or warning.

    Returns:
        The report and the shard's manifest entry (not yet saved in the manifest).

    Raises:
        DataError: under ``strict`` when a row has a problem, or when the input cannot
            be read at all.
    """
    path, out = Path(path), Path(out)
    stem = input_stem(path)
    report = InteropReport("import", fmt.NAME, display_path(path))
    root = Path(images_root) if images_root is not None else path.parent
    images = fmt.import_images(path=path, out=out, root=root, stem=stem)
    shard_path = out / f"{stem}.jsonl"
    with ExitStack() as stack:
        rejected = RejectedRows(stack, out / f"{stem}.import-rejected.ndjson")
        writer = stack.enter_context(ShardWriter(
            shard_path, split=infer_split(path), manifest_dir=out,
            images_root=relative_posix(images.root, out)))
        for index, (line, row) in enumerate(fmt.read_rows(path)):
            report.rows += 1
            try:
                if isinstance(row, RowRejected):
                    raise row
                if not isinstance(row, dict):
                    raise RowRejected("bad-row",
                                      f"a row is a JSON object, not {type(row).__name__}")
                foreign = fmt.parse_row(row, default_id=f"{stem}-{index:010d}")
                # Every check that can reject the row comes before any image is written.
                plan = plan_turns(foreign.messages, foreign.messages_field)
                plan.check_image_count(len(foreign.images))
                paths, warnings = [], foreign.warnings + plan.warnings
                for position, raw in enumerate(foreign.images):
                    image_path, found = images.resolve(raw, index, position)
                    paths.append(image_path)
                    warnings.extend(found)
                record = plan.to_record(paths, record_id=foreign.record_id,
                                        source=foreign.source, meta=foreign.meta)
            except RowRejected as problem:
                _reject(report, rejected, line, problem, row)
                continue
            _warn(report, line, warnings)
            writer.write(record)
            report.written += 1
        fail_if_strict(report, strict)
    report.outputs.append(display_path(shard_path))
    if rejected.path.exists() and report.rejected:
        report.outputs.append(display_path(rejected.path))
    write_report(report, out / f"{stem}.import-report.json")
    assert writer.shard is not None
    return report, writer.shard


def update_manifest(out: Path, shards: list[Shard], reports: list[InteropReport],
                    command: str) -> Path:
    """Add (or replace) the shards in ``OUT/manifest.json``, written last."""
    manifest = load_manifest(out) if (out / MANIFEST_NAME).is_file() else Manifest()
    written = {shard.file for shard in shards}
    manifest.shards = [entry for entry in manifest.shards if entry.file not in written] + shards
    producer = dict(manifest.producer or {})
    producer.setdefault("commands", []).append(command)
    manifest.producer = producer
    summary = dict(manifest.report or {})
    imported = summary.setdefault("import", {})
    for report in reports:
        counts = report.to_json()
        imported[report.input] = {key: counts[key] for key in
                                  ("format", "rows", "written", "rejected", "changed", "by_code")}
    manifest.report = summary
    return save_manifest(out, manifest)


def export_file(fmt: ModuleType, path: str | Path, out: str | Path, *,
                images_root: str | Path | None = None, options: ExportOptions | None = None,
                strict: bool = False) -> InteropReport:
    """Export one phiv shard into the format's data file(s) in ``out``.

    Args:
        fmt: the format module.
        path: the phiv JSONL shard.
        out: the output folder.
        images_root: the shard's images root (default: from its manifest, else ``images/``
            beside it).
        options: image handling and layout.
        strict: fail (writing nothing) on any left-out row or warning.

    Returns:
        The report (also written as ``OUT/<stem>.export-report.json``).

    Raises:
        DataError: under ``strict`` when a row has a problem.
    """
    path, out = Path(path), Path(out)
    options = options or ExportOptions()
    stem = input_stem(path)
    shown = display_path(path)
    report = InteropReport("export", fmt.NAME, shown)
    root = Path(images_root) if images_root is not None else default_images_root(path)
    image_value = fmt.export_images(root=root, out=out, mode=options.images)
    with ExitStack() as stack:
        rejected = RejectedRows(stack, out / f"{stem}.export-rejected.ndjson")

        def rows() -> Iterator[dict[str, Any]]:
            for line, raw in iter_lines(path):
                if not raw.strip():
                    continue
                report.rows += 1
                try:
                    try:
                        record = parse_record(raw, file=shown, line_number=line)
                    except DataError as error:
                        raise RowRejected("invalid-record", error.message) from None
                    messages = record_to_messages(record)
                    values, warnings = [], []
                    for image in record.images:
                        value, found = image_value(image)
                        values.append(value)
                        warnings.extend(found)
                    row = fmt.record_to_row(record, messages, values)
                except RowRejected as problem:
                    _reject(report, rejected, line, problem, raw.decode("utf-8", "replace"))
                    continue
                _warn(report, line, warnings)
                report.written += 1
                yield row
            fail_if_strict(report, strict)

        outputs = fmt.write_rows(rows(), out, stem, options, report)
    report.outputs.extend(display_path(output) for output in outputs)
    if report.rejected:
        report.outputs.append(display_path(rejected.path))
    write_report(report, out / f"{stem}.export-report.json")
    return report
