"""What the DocVQA, NLVR2 and Hateful Memes converters share: options, finding the splits
under ``--src``, turning native rows into the framework's plan, and the row function.

A dataset module describes itself with a :class:`NativeDataset` (its name, prompt field,
how it finds its splits and reads their rows, and its pure row -> record function) and
:func:`build_native_plan` does the rest the same way for all three:

- one work item per native row, in file order, split by split; rows that cannot be parsed
  or whose image is missing are items too, so that they are reported with their file and
  line (``train.jsonl:12``, ``train_v1.0.json: data[17]``, ``x.parquet: row 3``), counted,
  and fail the run under ``--strict``;
- record ids ``"{split}-{position in the split:010d}"``, stable when rows are skipped;
- a row without a label (DocVQA ``answers``, NLVR2 and Hateful Memes ``label``) becomes an
  unlabeled evaluation record (``"assistant": null``; counted as ``unlabeled`` in the
  manifest, which the trainer refuses): decided by the rows, never by the file name;
- each item's key holds a digest of its row and of where its images were found, so that
  resuming into an ``--out`` whose input rows have since changed (or whose missing images
  have appeared) is refused instead of mixing old and new records.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from phiv_data.convert.framework import IMAGES_DIR, Converted, Plan, Skipped, WorkItem
from phiv_data.convert.native_images import ImageSource, check_option, image_media
from phiv_data.convert.native_io import (
    FileIndex,
    NativeRow,
    RowProblem,
    check_template,
    parquet_split,
    resolve_image,
    source_path,
)
from phiv_data.errors import UsageError, display_path
from phiv_data.schema import Record


@dataclass(frozen=True)
class NativeOptions:
    """What decides the output besides the input files (each dataset sets its prompt).

    Attributes:
        prompt: the user text template (``str.format``, the dataset's one field).
        link: hard-link images instead of copying them (same bytes either way).
        check: how images are checked before they are written: ``decode`` (every pixel)
            or ``verify`` (PNG chunk checksums, faster; see ``native_images.CHECKS``).
    """

    prompt: str = ""
    link: bool = False
    check: str = "decode"


@dataclass
class SplitSource:
    """The files one split is read from."""

    split: str
    kind: str  # "official" or "parquet"
    files: list[Path]
    ignored: list[str] = field(default_factory=list)
    """Files found but not read, with the reason (for the report)."""


@dataclass(frozen=True)
class RowImages:
    """One native row, its images in record order, or why it cannot be converted."""

    row: NativeRow
    images: list[ImageSource] = field(default_factory=list)
    problem: RowProblem | None = None


RecordFunction = Callable[..., Record]
"""``(row, *, record_id, images, prompt) -> Record``: a module-level (picklable) function."""


@dataclass(frozen=True)
class NativeDataset:
    """What one dataset module tells :func:`build_native_plan`.

    Attributes:
        name: the converter's name, record ``source`` and shard prefix (``"docvqa"``).
        title: the name people know (``"DocVQA"``), for messages.
        prompt_field: the template's one field (``"question"``).
        unit: what a row is, for notes and progress (``"questions"``).
        label_field: the row field whose absence makes the row unlabeled (``"answers"``).
        find_sources: ``src -> [SplitSource]`` in output order.
        iter_rows: ``(source, src, index) -> RowImages...`` in file order.
        record: the pure row function (see ``RecordFunction``).
        image_folder: output folder under ``OUT/images``; ``None`` = the split's name.
    """

    name: str
    title: str
    prompt_field: str
    unit: str
    label_field: str
    find_sources: Callable[[Path], list[SplitSource]]
    iter_rows: Callable[[SplitSource, Path, FileIndex], Iterator[RowImages]]
    record: RecordFunction
    image_folder: str | None = None


def source_folder(src: str | Path, title: str) -> Path:
    """``src`` as an absolute path (workers may run in another directory).

    Raises:
        UsageError: when it is not a directory.
    """
    path = Path(src)
    if not path.is_dir():
        raise UsageError(f"--src {display_path(path)}: not a directory",
                         hint=f"point --src at the {title} folder as distributed")
    return path.absolute()


def scan_sources(src: Path, annotation: re.Pattern[str], *, title: str, expected: str,
                 split_names: Mapping[str, str], skip_top: tuple[str, ...] = ()
                 ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Annotation files (by ``annotation``'s ``split`` group) and parquet files under ``src``.

    Hidden files and folders, and top-level folders in ``skip_top`` (image folders), are
    not searched. Parquet splits are named by :func:`parquet_split` and ``split_names``.

    Returns:
        ``(official, parquet)``: split -> files, each in path order.

    Raises:
        UsageError: when ``src`` holds both kinds, or neither (``expected`` says what
            was looked for).
    """
    official: dict[str, list[Path]] = {}
    parquet: dict[str, list[Path]] = {}
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(src).parts
        if any(part.startswith(".") for part in relative) or relative[0] in skip_top:
            continue
        match = annotation.match(path.name)
        if match and path.is_file():
            official.setdefault(match.group("split"), []).append(path)
        elif path.suffix == ".parquet" and path.is_file():
            split = parquet_split(path)
            parquet.setdefault(split_names.get(split, split), []).append(path)
    if official and parquet:
        raise UsageError(f"--src {display_path(src)} holds both {title} annotation files and "
                         "parquet files", hint="point --src at one copy of the dataset")
    if not official and not parquet:
        raise UsageError(f"--src {display_path(src)}: no {title} files ({expected}) or parquet "
                         "files found", hint=f"point --src at the {title} folder as distributed")
    return official, parquet


def row_image(row: NativeRow, field_name: str, annotation_file: Path, src: Path,
              index: FileIndex, near: Path) -> RowImages:
    """A row naming one image in ``field_name``, with that image: relative to the annotation
    file's folder, else the file of that name anywhere under ``src`` (one under ``near``
    first).

    Returns:
        The row with its image, or with the problem (``invalid-row`` when the field is not a
        path, ``missing-image`` when no such file exists); a row that could not be parsed
        is returned as it is.
    """
    name = (row.data or {}).get(field_name)
    if row.data is None:
        return RowImages(row)
    if not isinstance(name, str) or not name.strip():
        return RowImages(row, problem=RowProblem(f"{field_name}: missing or not a path"))
    found = resolve_image(name, annotation_file.parent, index, near=near)
    if found is None:
        return RowImages(row, problem=RowProblem(
            f"{field_name} {name!r}: not found next to {annotation_file.name} nor by file "
            "name under --src", "missing-image"))
    return RowImages(row, [ImageSource(found.stem, found.suffix, source_path(found, src),
                                       path=str(found))])


def order_splits(sources: list[SplitSource], order: tuple[str, ...]) -> list[SplitSource]:
    """``sources`` in ``order``; splits not in it last, by name."""
    return sorted(sources, key=lambda source: (
        order.index(source.split) if source.split in order else len(order), source.split))


def _row_digest(entry: RowImages) -> str:
    # The row as parsed, where its images were found and what is wrong with it: a rerun
    # after any of these changed must not reuse the interrupted run's journal entry.
    content = orjson.dumps([entry.row.data, entry.row.problem,
                            [image.shown for image in entry.images],
                            entry.problem.detail if entry.problem else None], default=repr)
    return hashlib.blake2b(content, digest_size=6).hexdigest()


def is_labeled(row: Mapping[str, Any], label_field: str) -> bool:
    """Whether a row carries its label: present, not null, not an empty list."""
    return row.get(label_field) not in (None, [])


def build_native_plan(dataset: NativeDataset, src: str | Path, options: NativeOptions,
                      out: str | Path | None = None) -> Plan:
    """Every row of every split under ``src`` as a work item (see the module doc).

    ``out``, when given, is where the plan will run: images already written there were
    checked before they were written, and are not decoded again (by any worker).

    Raises:
        UsageError: a bad template or check option, or no dataset files under ``src``.
        DataError: an annotation file that cannot be read at all.
    """
    check_template(options.prompt, (dataset.prompt_field,))
    check_option(options.check)
    root = source_folder(src, dataset.title)
    index = FileIndex(root)
    items: list[WorkItem] = []
    notes: list[str] = []
    for source in dataset.find_sources(root):
        notes += source.ignored
        count = unlabeled = 0
        for entry in dataset.iter_rows(source, root, index):
            row, problem = entry.row, entry.problem
            if row.problem is not None:
                problem = RowProblem(row.problem, "unparseable-row")
            payload = {"id": f"{source.split}-{count:010d}", "row": row.data,
                       "images": entry.images,
                       "problem": (problem.reason, problem.detail) if problem else None}
            items.append(WorkItem(key=f"{row.where} #{_row_digest(entry)}", split=source.split,
                                  payload=payload, where=row.where))
            count += 1
            unlabeled += row.data is not None and not is_labeled(row.data, dataset.label_field)
        files = ", ".join(path.relative_to(root).as_posix() for path in source.files)
        notes.append(f"{source.split}: {count} {dataset.unit} from {files}")
        if unlabeled:
            notes.append(f"{source.split}: {unlabeled} of {count} {dataset.unit} have no "
                         f"{dataset.label_field}: written as unlabeled evaluation records "
                         "(assistant null)")
    images_root = str(Path(out).absolute() / IMAGES_DIR) if out is not None else None
    return Plan(dataset=dataset.name, items=items,
                process=functools.partial(process_item, record=dataset.record,
                                          image_folder=dataset.image_folder,
                                          prompt=options.prompt, link=options.link,
                                          check=options.check,
                                          images_root=images_root),
                options={"prompt": options.prompt, "check": options.check},
                shard_names={item.split: f"{dataset.name}_{item.split}.jsonl" for item in items},
                notes=notes, unit=dataset.unit, preload=(dataset.record.__module__,))


def process_item(item: WorkItem, *, record: RecordFunction, image_folder: str | None,
                 prompt: str, link: bool = False, check: str = "decode",
                 images_root: str | None = None) -> Converted | Skipped:
    """The framework's row function: check every image of the row, build the record.

    Returns:
        ``Converted`` with the images to write (and a note for each corrected extension),
        or ``Skipped`` with the row's problem.
    """
    payload = item.payload
    if payload["problem"]:
        return Skipped(*payload["problem"])
    try:
        media, notes = [], []
        for source in payload["images"]:
            file, note = image_media(source, image_folder or item.split, link=link, check=check,
                                     images_root=images_root)
            media.append(file)
            notes += [note] if note else []
        built = record(payload["row"], record_id=payload["id"],
                       images=[file.path for file in media], prompt=prompt)
    except RowProblem as problem:
        return Skipped(problem.reason, problem.detail)
    return Converted(built, media, notes)
