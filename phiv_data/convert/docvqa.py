"""DocVQA (single-page document VQA, Task 1) -> phiv records.

Source: the DocVQA challenge release (https://rrc.cvc.uab.es/?ch=17), or a Hugging Face copy
saved as parquet files (read from disk; nothing is downloaded).

Input layout (``--src``), either of::

    SRC/train/train_v1.0[_withQT].json   {"dataset_name", "dataset_split", "dataset_version",
    SRC/train/documents/<doc>_<page>.png  "data": [...]} or a bare list of items
    SRC/val/val_v1.0[_withQT].json ...     (annotation files may sit anywhere under SRC;
    SRC/test/test_v1.0.json ...             images are looked up next to the file, then by
                                            file name anywhere under SRC, e.g. spdocvqa_images/)

    SRC/data/{train,validation,test}-00000-of-0000N.parquet   (page as {"bytes", "path"})

Every split found is converted; ``validation`` is written as ``val``. When both
``train_v1.0.json`` and ``train_v1.0_withQT.json`` exist, the latter (a superset) is used.

Output: ``OUT/docvqa_<split>.jsonl``, pages in ``OUT/images/<split>/<page file name>``, each
page written once however many questions share it.

Example, ``val_v1.0.json`` item::

    {"questionId": 49153, "question": "What is the ‘actual’ value per 1000, during the year 1975?",
     "question_types": ["figure/diagram"], "image": "documents/pybv0228_81.png",
     "docId": 14465, "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81",
     "answers": ["0.28"], "data_split": "val"}

becomes (the 3rd item of the split)::

    {"id": "val-0000000002", "source": "docvqa", "conversations": [{"images":
     ["val/pybv0228_81.png"], "user": "What is the ‘actual’ value per 1000, during the year
     1975?", "assistant": "0.28"}], "meta": {"questionId": 49153, "answers": ["0.28"],
     "question_types": ["figure/diagram"], "docId": 14465, "ucsf_document_id": "pybv0228",
     "ucsf_document_page_no": "81"}}

Test items have no answers: they become unlabeled evaluation records (``"assistant": null``,
counted as ``unlabeled`` in the manifest), never training targets.
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
    read_json_items,
    read_parquet_rows,
)
from phiv_data.convert.native_plan import (
    NativeDataset,
    NativeOptions,
    RowImages,
    SplitSource,
    build_native_plan,
    order_splits,
    row_image,
    scan_sources,
)
from phiv_data.convert.prompts import DOCVQA_PROMPT
from phiv_data.errors import DataError
from phiv_data.schema import Record

NAME = "docvqa"
SPLIT_ORDER = ("train", "val", "test")
_ANNOTATION = re.compile(r"^(?P<split>[A-Za-z]+)_v\d+(?:\.\d+)*(?P<qt>_withQT)?\.json$")
_SPLIT_NAMES = {"validation": "val"}
_META_KEYS = ("docId", "ucsf_document_id", "ucsf_document_page_no")


@dataclass(frozen=True)
class DocVQAOptions(NativeOptions):
    """DocVQA's options: ``prompt`` has the field ``{question}`` (see ``NativeOptions``)."""

    prompt: str = DOCVQA_PROMPT


Options = DocVQAOptions
"""The options class under a common name (the CLI uses it)."""


def find_sources(src: Path) -> list[SplitSource]:
    """The splits under ``src``, in train, val, test order.

    Raises:
        UsageError: when ``src`` holds no DocVQA files, or both official and parquet files.
    """
    official, parquet = scan_sources(
        src, _ANNOTATION, title="DocVQA", expected="{train,val,test}_v1.0[_withQT].json",
        split_names=_SPLIT_NAMES)
    sources: list[SplitSource] = []
    for split, paths in official.items():
        # the _withQT file holds every field of the plain one plus question_types
        chosen, *rest = sorted(paths, key=lambda path: ("_withQT" not in path.name, str(path)))
        sources.append(SplitSource(split, "official", [chosen], [
            f"{path.relative_to(src).as_posix()} not read: "
            f"{chosen.relative_to(src).as_posix()} has the same questions" for path in rest]))
    sources += [SplitSource(split, "parquet", paths) for split, paths in parquet.items()]
    return order_splits(sources, SPLIT_ORDER)


def iter_rows(source: SplitSource, src: Path, index: FileIndex) -> Iterator[RowImages]:
    """Every item of a split, in file order, with its page (or why it has none).

    Official files: ``image`` relative to the annotation file's folder, else the file of
    that name anywhere under ``--src`` (preferring one under the annotation's folder).
    Parquet: the ``image`` cell, named after the cell's path or
    ``<ucsf_document_id>_<ucsf_document_page_no>``.
    """
    for path in source.files:
        shown = path.relative_to(src).as_posix()
        if source.kind == "parquet":
            image_columns, rows = read_parquet_rows(path, shown)
            if "image" not in image_columns:
                raise DataError(f"{shown}: no image column (has {image_columns or 'none'})",
                                hint="expected a Hugging Face DocVQA copy with an 'image' "
                                     "column")
            for row, group, position in rows:
                item = row.data or {}
                page = item.get("ucsf_document_id"), item.get("ucsf_document_page_no")
                stem = f"{page[0]}_{page[1]}" if all(page) else f"q{item.get('questionId')}"
                cell = ParquetCell(str(path), group, position, "image")
                yield RowImages(row, [ImageSource(stem, "", f"{row.where}: image", cell=cell)])
            continue
        _, rows = read_json_items(path, shown)
        for row in rows:
            yield row_image(row, "image", path, src, index, near=path.parent)


def _record(item: Mapping[str, Any], *, record_id: str, images: list[str], prompt: str
            ) -> Record:
    return docvqa_record(item, record_id=record_id, image=images[0], prompt=prompt)


DATASET = NativeDataset(name=NAME, title="DocVQA", prompt_field="question", unit="questions",
                        label_field="answers", find_sources=find_sources, iter_rows=iter_rows,
                        record=_record)


def build_plan(src: str | Path, options: DocVQAOptions = DocVQAOptions(),
               out: str | Path | None = None) -> Plan:
    """Every question under ``src`` as a work item, split by split, in file order.

    ``out``, when given, is where the plan will run: images already written there (and
    so already checked) are not decoded again.

    Raises:
        UsageError: no DocVQA files under ``src``, or a bad prompt template.
        DataError: an annotation file that cannot be read at all.
    """
    return build_native_plan(DATASET, src, options, out)


def convert(src: str | Path, out: str | Path, options: DocVQAOptions = DocVQAOptions(),
            run: RunOptions | None = None) -> ConvertReport:
    """Convert a DocVQA folder into ``out`` (see the module docstring for both layouts).

    Args:
        src: the dataset folder as distributed.
        out: output directory (new, empty, or an unfinished run of the same command).
        options: prompt template, linking, image check.
        run: workers, strictness, fan-out, progress.

    Returns:
        What was written and skipped (also in ``out/manifest.json``).

    Raises:
        UsageError: bad ``src``, template or ``out``.
        DataError: an unreadable annotation file, or any skipped row under ``strict``.
    """
    return run_conversion(build_plan(src, options, out), out, run)


def _question_id(value: Any) -> Any:
    # Hugging Face copies store questionId as a string; keep the official integer form.
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def docvqa_record(item: Mapping[str, Any], *, record_id: str, image: str,
                  prompt: str = DOCVQA_PROMPT) -> Record:
    """One DocVQA item as a record: the page, the question, the first answer.

    Args:
        item: the native item (official JSON or parquet row).
        record_id: the record's id.
        image: the page's path relative to the images root.
        prompt: template with the field ``{question}``.

    Returns:
        The record; unlabeled (``assistant`` null) when the item has no answers.

    Raises:
        RowProblem: missing or empty question, answers that are not a list of text, an empty
            first answer, or special-token strings in the question or the first answer.
    """
    question = clean_text(item.get("question"), "question")
    answers = item.get("answers")
    if answers is not None and (not isinstance(answers, list)
                                or not all(isinstance(answer, str) for answer in answers)):
        raise RowProblem("answers: expected a list of strings")
    answer = None
    if answers:
        # only the first answer is text the model sees; the others are kept for ANLS as is
        answer = clean_text(answers[0], "answers[0]")
    user = clean_text(prompt.format(question=question), "prompt")
    meta: dict[str, Any] = {"questionId": _question_id(item.get("questionId"))}
    if answers:
        meta["answers"] = list(answers)
    if item.get("question_types") is not None:
        meta["question_types"] = list(item["question_types"])
    for key in _META_KEYS:
        if item.get(key) is not None:
            meta[key] = item[key]
    return Record(id=record_id, source=NAME,
                  conversations=[{"images": [image], "user": user, "assistant": answer}],
                  meta=meta)
