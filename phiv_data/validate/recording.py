"""Record a validation in the manifest of each file's directory.

Per file, the manifest's shard entry gets the sha256 of exactly the bytes validated, the
counts, and a ``Validation`` with one ``CheckOutcome`` per family of checks (syntax, schema,
dataset, media, tokens). ``phiv_data.shards.verify_dataset`` (what the trainer calls) then
accepts the file while its bytes are unchanged.

Policy: an existing manifest is always updated, failures included (``passed: false``, so
the trainer refuses the file with the error count). Validating unchanged files again with
the same options and the same outcome keeps the manifest's bytes (its ``validated_at``
included), so re-running a pipeline leaves a dataset byte-identical. A directory without a
manifest (JSONL written by other tools) gets one only when every file validated in it
passed, listing each file with its split (from the file name) and images root: a failed run
leaves no new file.
"""

from __future__ import annotations

from pathlib import Path

from phiv_data.manifest import MANIFEST_NAME, CheckOutcome, Manifest, Shard, Validation
from phiv_data.shards import load_manifest, relative_posix, save_manifest
from phiv_data.validate.issues import Issue, family_of
from phiv_data.validate.report import FileSummary, ValidationReport

__all__ = ["family_of", "record_validation"]


def _outcomes(report: ValidationReport, issues: list[Issue]) -> list[CheckOutcome]:
    options = report.options
    families = ["syntax", "schema", "dataset"]
    if options.check_images == "decode" or any(family_of(i.code) == "media" for i in issues):
        families.append("media")
    if options.max_length is not None:
        families.append("tokens")
    settings = {
        "dataset": {"check_images": options.check_images},
        "media": {"check_images": options.check_images,
                  "max_image_pixels": options.max_image_pixels,
                  "max_aspect_ratio": options.max_aspect_ratio},
        "tokens": {"max_length": options.max_length, "num_crops": options.num_crops,
                   "exact": options.tokenizer is not None},
    }
    outcomes = []
    for family in families:
        mine = [issue for issue in issues if family_of(issue.code) == family]
        errors = sum(issue.severity == "error" for issue in mine)
        warnings = sum(issue.severity == "warning" for issue in mine)
        passed = errors == 0 and not (options.strict and warnings)
        outcomes.append(CheckOutcome(name=family, passed=passed, errors=errors,
                                     warnings=warnings, options=settings.get(family, {})))
    return outcomes


def _entry(report: ValidationReport, summary: FileSummary, directory: Path,
           existing: Shard | None) -> Shard:
    issues = [issue for issue in report.issues if issue.file == summary.shown]
    root = summary.images_root or directory / "images"
    validation = Validation(
        passed=report.file_ok(summary), sha256=summary.sha256, errors=summary.errors,
        warnings=summary.warnings, checks=_outcomes(report, issues),
        images_root=relative_posix(root, directory),
    )
    split = existing.split if existing is not None and existing.split else summary.split
    return Shard(file=relative_posix(summary.path, directory), split=split,
                 images_root=relative_posix(root, directory), sha256=summary.sha256,
                 size_bytes=summary.size_bytes, records=summary.records,
                 images=summary.images, unlabeled=summary.unlabeled, validation=validation)


def _same_outcome(existing: Shard, entry: Shard) -> bool:
    """Whether ``entry`` says what ``existing`` says, the validation's time aside."""
    if existing.validation is None or entry.validation is None:
        return False
    stamp = {"validated_at": existing.validation.validated_at}
    return existing == entry.replace(validation=entry.validation.replace(**stamp))


def record_validation(report: ValidationReport) -> list[Path]:
    """Write the outcome of ``report`` into the manifest of each file's directory.

    Args:
        report: from :func:`phiv_data.validate.validate_paths`.

    Returns:
        The manifests that now record the outcome (a directory without a manifest whose
        files did not all pass gets none; one whose entries would not change is left
        untouched and still listed).

    Raises:
        ManifestError: when an existing manifest is damaged.
        OSError: when the directory is not writable.
    """
    by_directory: dict[Path, list[FileSummary]] = {}
    for summary in report.files:
        by_directory.setdefault(summary.path.parent, []).append(summary)
    written: list[Path] = []
    for directory, summaries in by_directory.items():
        exists = (directory / MANIFEST_NAME).is_file()
        if not exists and not all(report.file_ok(summary) for summary in summaries):
            continue
        manifest = load_manifest(directory) if exists else Manifest(
            producer={"tool": "phiv-data validate",
                      "note": "manifest created when validating files written elsewhere"})
        shards = list(manifest.shards)
        changed = not exists
        for summary in summaries:
            name = relative_posix(summary.path, directory)
            existing = manifest.shard(name)
            entry = _entry(report, summary, directory, existing)
            if existing is None:
                shards.append(entry)
                changed = True
            elif not _same_outcome(existing, entry):
                shards[shards.index(existing)] = entry
                changed = True
        if changed:
            save_manifest(directory, manifest.replace(shards=shards))
        written.append(directory / MANIFEST_NAME)
    return written
