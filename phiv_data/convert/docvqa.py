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

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiv_data.convert.framework import (
    ConvertReport,
    Converted,
    Plan,
    RunOptions,
    Skipped,
    WorkItem,
    run_conversion,
)
from phiv_data.convert.native_images import ImageSource, check_option, image_media
from phiv_data.convert.native_io import (
    FileIndex,
    NativeRow,
    ParquetCell,
    RowProblem,
    check_template,
    clean_text,
    parquet_split,
    read_json_items,
    read_parquet_rows,
    resolve_image,
    source_path,
)
from phiv_data.convert.prompts import DOCVQA_PROMPT
from phiv_data.errors import DataError, UsageError, display_path
from phiv_data.schema import Record

NAME = "docvqa"
PROMPT_FIELDS = ("question",)
SPLIT_ORDER = ("train", "val", "test")
_ANNOTATION = re.compile(r"^(?P<split>[A-Za-z]+)_v\d+(?:\.\d+)*(?P<qt>_withQT)?\.json$")
_SPLIT_NAMES = {"validation": "val"}
_META_KEYS = ("docId", "ucsf_document_id", "ucsf_document_page_no")


@dataclass(frozen=True)
class DocVQAOptions:
    """What decides the output besides the input files.

    Attributes:
        prompt: the user text template, with the field ``{question}``.
        link: hard-link page images instead of copying them (same bytes either way).
        check: how images are checked before they are written: ``decode`` (every
            pixel) or ``verify`` (PNG chunk checksums, faster; see ``native_io.CHECKS``).
    """

    prompt: str = DOCVQA_PROMPT
    link: bool = False
    check: str = "decode"


Options = DocVQAOptions
"""The options class under a common name (the CLI uses it)."""


@dataclass
class SplitSource:
    """The files one split is read from."""

    split: str
    kind: str  # "official" or "parquet"
    files: list[Path]
    ignored: list[str] = field(default_factory=list)


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def find_sources(src: Path) -> list[SplitSource]:
    """The splits under ``src``, in train, val, test order.

    Raises:
        UsageError: when ``src`` holds no DocVQA files, or both official and parquet files.
    """
    if not src.is_dir():
        raise UsageError(f"--src {display_path(src)}: not a directory",
                         hint="point --src at the DocVQA folder as distributed")
    official: dict[str, list[tuple[bool, Path]]] = {}
    parquet: dict[str, list[Path]] = {}
    for path in sorted(src.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(src).parts):
            continue
        match = _ANNOTATION.match(path.name)
        if match and path.is_file():
            official.setdefault(match.group("split"), []).append((bool(match.group("qt")), path))
        elif path.suffix == ".parquet" and path.is_file():
            split = parquet_split(path)
            parquet.setdefault(_SPLIT_NAMES.get(split, split), []).append(path)
    if official and parquet:
        raise UsageError(f"--src {display_path(src)} holds both official annotation files and "
                         "parquet files", hint="point --src at one copy of the dataset")
    sources: list[SplitSource] = []
    for split, candidates in official.items():
        # the _withQT file holds every field of the plain one plus question_types
        candidates.sort(key=lambda candidate: (not candidate[0], str(candidate[1])))
        (_, chosen), *rest = candidates
        sources.append(SplitSource(split, "official", [chosen], [
            f"{path.relative_to(src).as_posix()} not read: "
            f"{chosen.relative_to(src).as_posix()} has the same questions" for _, path in rest]))
    for split, files in parquet.items():
        sources.append(SplitSource(split, "parquet", sorted(files)))
    if not sources:
        raise UsageError(f"--src {display_path(src)}: no DocVQA annotation files "
                         "({train,val,test}_v1.0[_withQT].json) or parquet files found",
                         hint="point --src at the DocVQA folder as distributed")
    return sorted(sources, key=lambda source: _split_key(source.split))


def iter_rows(source: SplitSource, src: Path, index: FileIndex
              ) -> Iterator[tuple[NativeRow, ImageSource | None, RowProblem | None]]:
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
                yield row, ImageSource(stem, "", f"{row.where}: image", cell=cell), None
            continue
        _, rows = read_json_items(path, shown)
        for row in rows:
            name = (row.data or {}).get("image")
            if row.data is None:
                yield row, None, None
            elif not isinstance(name, str) or not name.strip():
                yield row, None, RowProblem("image: missing or not a path")
            else:
                found = resolve_image(name, path.parent, index, near=path.parent)
                if found is None:
                    yield row, None, RowProblem(f"image {name!r}: not found next to {path.name} "
                                                "nor by file name under --src", "missing-image")
                else:
                    yield row, ImageSource(found.stem, found.suffix, source_path(found, src),
                                           path=str(found)), None


def _has_answers(item: Mapping[str, Any] | None) -> bool:
    return bool(item and item.get("answers"))


def build_plan(src: str | Path, options: DocVQAOptions = DocVQAOptions()) -> Plan:
    """Every question under ``src`` as a work item, split by split, in file order.

    Raises:
        UsageError: no DocVQA files under ``src``, or a bad prompt template.
        DataError: an annotation file that cannot be read at all.
    """
    check_template(options.prompt, PROMPT_FIELDS)
    check_option(options.check)
    src = Path(src).absolute()  # workers may run in another directory
    index = FileIndex(src)
    items: list[WorkItem] = []
    notes: list[str] = []
    for source in find_sources(src):
        notes += source.ignored
        count = unlabeled = 0
        for row, image, problem in iter_rows(source, src, index):
            if row.problem is not None:
                problem = RowProblem(row.problem, "unparseable-row")
            payload = {"id": f"{source.split}-{count:010d}", "row": row.data, "image": image,
                       "problem": (problem.reason, problem.detail) if problem else None}
            items.append(WorkItem(key=row.where, split=source.split, payload=payload,
                                  where=row.where))
            count += 1
            unlabeled += row.data is not None and not _has_answers(row.data)
        files = ", ".join(path.relative_to(src).as_posix() for path in source.files)
        notes.append(f"{source.split}: {count} questions from {files}")
        if unlabeled:
            notes.append(f"{source.split}: {unlabeled} of {count} questions have no answers: "
                         "written as unlabeled evaluation records (assistant null)")
    return Plan(dataset=NAME, items=items,
                process=functools.partial(process_item, prompt=options.prompt,
                                          link=options.link, check=options.check),
                options={"prompt": options.prompt, "check": options.check},
                shard_names={item.split: f"{NAME}_{item.split}.jsonl" for item in items},
                notes=notes, unit="questions")


def process_item(item: WorkItem, *, prompt: str = DOCVQA_PROMPT, link: bool = False,
                 check: str = "decode") -> Converted | Skipped:
    """The framework's row function: check the page, build the record."""
    payload = item.payload
    if payload["problem"]:
        return Skipped(*payload["problem"])
    try:
        media, note = image_media(payload["image"], item.split, link=link, check=check)
        record = docvqa_record(payload["row"], record_id=payload["id"], image=media.path,
                               prompt=prompt)
    except RowProblem as problem:
        return Skipped(problem.reason, problem.detail)
    return Converted(record, [media], [note] if note else [])


def convert(src: str | Path, out: str | Path, options: DocVQAOptions = DocVQAOptions(),
            run: RunOptions | None = None) -> ConvertReport:
    """Convert a DocVQA folder into ``out`` (see the module docstring for both layouts).

    Args:
        src: the dataset folder as distributed.
        out: output directory (new, empty, or an unfinished run of the same command).
        options: prompt template and linking.
        run: workers, strictness, fan-out, progress.

    Returns:
        What was written and skipped (also in ``out/manifest.json``).

    Raises:
        UsageError: bad ``src``, template or ``out``.
        DataError: an unreadable annotation file, or any skipped row under ``strict``.
    """
    return run_conversion(build_plan(src, options), out, run)


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
