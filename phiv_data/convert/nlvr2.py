"""NLVR2 (Natural Language for Visual Reasoning for Real) -> phiv records.

Source: https://lil.nlp.cornell.edu/nlvr/ (annotations from github.com/lil-lab/nlvr, images
from the authors), or a Hugging Face copy saved as parquet files (read from disk).

Input layout (``--src``), either of::

    SRC/{train,dev,test1,test2}.json      JSON Lines despite the name (any folder under SRC)
    SRC/images/train/<directory>/<pair>-img0.png, -img1.png
    SRC/images/{dev,test1,test2}/<pair>-img0.png, -img1.png

    SRC/data/{train,validation,test}-00000-of-0000N.parquet   with ``left_image`` and
        ``right_image`` columns (or ``image_0``/``image_1``, ``img0``/``img1``), or one
        ``images`` list column; each image ``{"bytes", "path"}``

``<pair>`` is the identifier minus its last field (``dev-850-0-0`` -> ``dev-850-0``). An
image missing from its folder is found by file name anywhere under SRC. Some ``.png`` files
are JPEGs: images are identified by content and written with the right extension. Files such
as ``balanced_dev.json`` (subsets of dev/test1) are not splits and are left alone. Every
split found is converted; a parquet ``validation`` split is written as ``dev``.

Output: ``OUT/nlvr2_<split>.jsonl``, images in ``OUT/images/<split>/<pair>-img{0,1}.<ext>``,
each written once however many sentences share the pair.

Example, a ``dev.json`` line (keys in any order; the label is the STRING "True"/"False")::

    {"validation": {...}, "sentence": "One image shows exactly two brown acorns.",
     "left_url": "...", "writer": "103", "label": "False", "right_url": "...",
     "synset": "acorn", "query": "acorn 10", "identifier": "dev-850-0-0"}

becomes (the 1st line of the split)::

    {"id": "dev-0000000000", "source": "nlvr2", "conversations": [{"images":
     ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"], "user": "The first image is the
     left image and the second is the right image. Is this statement true? One image shows
     exactly two brown acorns.\\nAnswer True or False.", "assistant": "False"}],
     "meta": {"identifier": "dev-850-0-0"}}

A row without a label becomes an unlabeled evaluation record (``"assistant": null``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phiv_data.convert.framework import ConvertReport, Plan, RunOptions, run_conversion
from phiv_data.convert.native_images import ImageSource
from phiv_data.convert.native_io import (
    FileIndex,
    ParquetCell,
    RowProblem,
    clean_text,
    read_json_lines,
    read_parquet_rows,
    source_path,
)
from phiv_data.convert.native_plan import (
    NativeDataset,
    NativeOptions,
    RowImages,
    SplitSource,
    build_native_plan,
    order_splits,
    scan_sources,
)
from phiv_data.convert.prompts import NLVR2_ANSWERS, NLVR2_PROMPT
from phiv_data.errors import DataError, UsageError, display_path
from phiv_data.schema import Record

NAME = "nlvr2"
SPLIT_ORDER = ("train", "dev", "test1", "test2")
_ANNOTATION = re.compile(r"^(?P<split>train|dev|test\d*)\.json$")
_SPLIT_NAMES = {"validation": "dev"}
IMAGE_COLUMN_PAIRS = (("left_image", "right_image"), ("image_0", "image_1"), ("img0", "img1"))
IMAGE_LIST_COLUMN = "images"


@dataclass(frozen=True)
class NLVR2Options(NativeOptions):
    """NLVR2's options: ``prompt`` has the field ``{sentence}`` (see ``NativeOptions``)."""

    prompt: str = NLVR2_PROMPT


Options = NLVR2Options
"""The options class under a common name (the CLI uses it)."""


def find_sources(src: Path) -> list[SplitSource]:
    """The splits under ``src`` (not searching ``images/``), in train, dev, test1, test2
    order.

    Raises:
        UsageError: when ``src`` holds no NLVR2 files, both kinds, or one split twice.
    """
    official, parquet = scan_sources(
        src, _ANNOTATION, title="NLVR2", expected="{train,dev,test1,test2}.json",
        split_names=_SPLIT_NAMES, skip_top=("images",))
    for split, paths in official.items():
        if len(paths) > 1:
            raise UsageError(f"--src {display_path(src)}: split {split!r} found twice: "
                             + ", ".join(display_path(path) for path in paths),
                             hint="keep one copy of each annotation file")
    sources = [SplitSource(split, "official", paths) for split, paths in official.items()]
    sources += [SplitSource(split, "parquet", paths) for split, paths in parquet.items()]
    return order_splits(sources, SPLIT_ORDER)


def pair_stem(identifier: Any) -> str:
    """``dev-850-0-0`` -> ``dev-850-0``: the image pair's name.

    Raises:
        RowProblem: when the identifier is not ``split-set-pair-sentence``.
    """
    if not isinstance(identifier, str) or identifier.count("-") < 3:
        raise RowProblem(f"identifier {identifier!r}: expected 'split-set-pair-sentence'")
    return identifier.rsplit("-", 1)[0]


def image_columns(columns: list[str], shown: str) -> tuple[str, str | None]:
    """The left and right image columns of a parquet file (``right`` is ``None`` for a list
    column holding both).

    Raises:
        DataError: when the file has none of the known image columns.
    """
    for left, right in IMAGE_COLUMN_PAIRS:
        if left in columns and right in columns:
            return left, right
    if IMAGE_LIST_COLUMN in columns:
        return IMAGE_LIST_COLUMN, None
    known = ", ".join(f"{left}/{right}" for left, right in IMAGE_COLUMN_PAIRS)
    raise DataError(f"{shown}: no image columns (image columns found: {columns or 'none'})",
                    hint=f"expected {known} or a list column {IMAGE_LIST_COLUMN!r}")


def _find_pair_image(name: str, bucket: Any, split: str, annotation_file: Path, src: Path,
                     index: FileIndex) -> Path | None:
    for base in dict.fromkeys((annotation_file.parent, src)):
        folder = base / "images" / split
        candidates = [folder / str(bucket) / name] if bucket is not None else []
        for candidate in [*candidates, folder / name]:
            if candidate.is_file():
                return candidate
    return index.find(name, near=src / "images" / split)


def _parquet_rows(path: Path, shown: str) -> Iterator[RowImages]:
    columns, rows = read_parquet_rows(path, shown)
    left, right = image_columns(columns, shown)
    for row, group, position in rows:
        try:
            stem = pair_stem((row.data or {}).get("identifier"))
        except RowProblem as problem:
            yield RowImages(row, problem=problem)
            continue
        cells = ([ParquetCell(str(path), group, position, left, item) for item in (0, 1)]
                 if right is None else
                 [ParquetCell(str(path), group, position, column) for column in (left, right)])
        yield RowImages(row, [ImageSource(f"{stem}-img{side}", "", f"{row.where}: image {side}",
                                          cell=cell) for side, cell in enumerate(cells)])


def iter_rows(source: SplitSource, src: Path, index: FileIndex) -> Iterator[RowImages]:
    """Every row of a split, in file order, with its two images (or why it has none).

    Official files: ``images/<split>/[<directory>/]<pair>-img{0,1}.png`` under the
    annotation file's folder or under ``--src``, else the file of that name anywhere under
    ``--src``. Parquet: the two image cells (or the two items of the list cell).
    """
    for path in source.files:
        shown = path.relative_to(src).as_posix()
        if source.kind == "parquet":
            yield from _parquet_rows(path, shown)
            continue
        for row in read_json_lines(path, shown):
            if row.data is None:
                yield RowImages(row)
                continue
            try:
                stem = pair_stem(row.data.get("identifier"))
            except RowProblem as problem:
                yield RowImages(row, problem=problem)
                continue
            bucket = row.data.get("directory")
            images: list[ImageSource] = []
            for side in (0, 1):
                name = f"{stem}-img{side}.png"
                found = _find_pair_image(name, bucket, source.split, path, src, index)
                if found is None:
                    folder = f"images/{source.split}/" + (f"{bucket}/" if bucket is not None
                                                          else "")
                    yield RowImages(row, problem=RowProblem(
                        f"image {name!r}: not in {folder} nor found by name under --src",
                        "missing-image"))
                    break
                images.append(ImageSource(found.stem, found.suffix, source_path(found, src),
                                          path=str(found)))
            else:
                yield RowImages(row, images)


def build_plan(src: str | Path, options: NLVR2Options = NLVR2Options(),
               out: str | Path | None = None) -> Plan:
    """Every sentence under ``src`` as a work item, split by split, in file order.

    ``out``, when given, is where the plan will run: images already written there (and
    so already checked) are not decoded again.

    Raises:
        UsageError: no NLVR2 files under ``src``, or a bad prompt template.
        DataError: a parquet file without image columns.
    """
    return build_native_plan(DATASET, src, options, out)


def convert(src: str | Path, out: str | Path, options: NLVR2Options = NLVR2Options(),
            run: RunOptions | None = None) -> ConvertReport:
    """Convert an NLVR2 folder into ``out`` (see the module docstring for both layouts).

    Args:
        src: the dataset folder as distributed.
        out: output directory (new, empty, or an unfinished run of the same command).
        options: prompt template, linking, image check.
        run: workers, strictness, fan-out, progress.

    Returns:
        What was written and skipped (also in ``out/manifest.json``).

    Raises:
        UsageError: bad ``src``, template or ``out``.
        DataError: a parquet file without image columns, or any skipped row under ``strict``.
    """
    return run_conversion(build_plan(src, options, out), out, run)


def parse_label(value: Any) -> bool | None:
    """``"True"``/``"False"`` (the official strings), a bool or 0/1; ``None`` when missing.

    Raises:
        RowProblem: on anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RowProblem(f"label {value!r}: expected \"True\" or \"False\"")


def nlvr2_record(row: Mapping[str, Any], *, record_id: str, images: list[str],
                 prompt: str = NLVR2_PROMPT) -> Record:
    """One NLVR2 row as a record: left and right image, the sentence, "True"/"False".

    Args:
        row: the native row (JSON Lines object or parquet row).
        record_id: the record's id.
        images: ``[left, right]`` paths relative to the images root.
        prompt: template with the field ``{sentence}``.

    Returns:
        The record; unlabeled (``assistant`` null) when the row has no label.

    Raises:
        RowProblem: on a missing sentence, a bad label or special-token strings.
    """
    sentence = clean_text(row.get("sentence"), "sentence")
    label = parse_label(row.get("label"))
    user = clean_text(prompt.format(sentence=sentence), "prompt")
    answer = None if label is None else NLVR2_ANSWERS[label]
    return Record(id=record_id, source=NAME,
                  conversations=[{"images": list(images), "user": user, "assistant": answer}],
                  meta={"identifier": row.get("identifier")})


DATASET = NativeDataset(name=NAME, title="NLVR2", prompt_field="sentence", unit="sentences",
                        label_field="label", find_sources=find_sources, iter_rows=iter_rows,
                        record=nlvr2_record)
