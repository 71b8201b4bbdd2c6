"""Hateful Memes (Facebook AI, 2020) -> phiv records.

Source: the Hateful Memes challenge release (``hateful_memes/`` as distributed).

Input layout (``--src``)::

    SRC/train.jsonl, dev_seen.jsonl, dev_unseen.jsonl, test_seen.jsonl, test_unseen.jsonl
    SRC/dev.jsonl, test.jsonl                (the older names; converted the same way)
    SRC/img/<id>.png

Lines: ``{"id": "08291", "img": "img/08291.png", "label": 1, "text": "..."}``. ``img`` is
resolved next to the ``.jsonl`` file, else by file name anywhere under SRC. Every file found
is converted as the split of its name. ``dev_seen`` and ``dev_unseen`` share records: the
report lists how many (by id) when both are converted.

Output: ``OUT/hateful_memes_<split>.jsonl`` and ``OUT/images/img/<id>.<ext>``, each meme
written once however many splits use it.

Example, a ``dev_seen.jsonl`` line::

    {"id": "08291", "img": "img/08291.png", "label": 1,
     "text": "white people is this a shooting range"}

becomes (the 1st line of the split)::

    {"id": "dev_seen-0000000000", "source": "hateful_memes", "conversations": [{"images":
     ["img/08291.png"], "user": "The text on this meme reads: white people is this a
     shooting range\\nIs this meme hateful? Answer yes or no.", "assistant": "yes"}],
     "meta": {"id": "08291"}}

The text goes into the prompt unchanged, character for character (control characters
included; JSON escaping only). The id stays a zero-padded string (an integer id is written
with the digits of its image name, or padded to 5 digits). A row without ``label`` becomes an
unlabeled evaluation record (``"assistant": null``), whatever its file is called: the final
test releases carry labels and convert as labelled data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phiv_data.convert.framework import ConvertReport, Plan, RunOptions, run_conversion
from phiv_data.convert.native_io import (
    FileIndex,
    RowProblem,
    clean_text,
    read_json_lines,
)
from phiv_data.convert.native_plan import (
    NativeDataset,
    NativeOptions,
    RowImages,
    SplitSource,
    build_native_plan,
    order_splits,
    row_image,
)
from phiv_data.convert.prompts import HATEFUL_MEMES_ANSWERS, HATEFUL_MEMES_PROMPT
from phiv_data.errors import UsageError, display_path
from phiv_data.schema import Record

NAME = "hateful_memes"
SPLIT_ORDER = ("train", "dev_seen", "dev_unseen", "dev", "test_seen", "test_unseen", "test")
IMAGE_FOLDER = "img"
_ANNOTATION = re.compile(r"^(?:train|dev|test)(?:_(?:seen|unseen))?\.jsonl$")
SHARED_SPLITS = ("dev_seen", "dev_unseen")


@dataclass(frozen=True)
class HatefulMemesOptions(NativeOptions):
    """Hateful Memes' options: ``prompt`` has the field ``{text}`` (see ``NativeOptions``)."""

    prompt: str = HATEFUL_MEMES_PROMPT


Options = HatefulMemesOptions
"""The options class under a common name (the CLI uses it)."""


def find_sources(src: Path) -> list[SplitSource]:
    """The ``.jsonl`` files directly under ``src``, in train, dev, test order.

    Raises:
        UsageError: when there are none.
    """
    sources = [SplitSource(path.stem, "official", [path]) for path in sorted(src.glob("*.jsonl"))
               if _ANNOTATION.match(path.name) and path.is_file()]
    if not sources:
        raise UsageError(f"--src {display_path(src)}: no Hateful Memes files (train.jsonl, "
                         "dev_seen.jsonl, test_unseen.jsonl, ...) found",
                         hint="point --src at the hateful_memes folder as distributed")
    return order_splits(sources, SPLIT_ORDER)


def iter_rows(source: SplitSource, src: Path, index: FileIndex) -> Iterator[RowImages]:
    """Every line of a split's file, in order, with its image (or why it has none): ``img``
    next to the ``.jsonl`` file, else the file of that name anywhere under ``--src``."""
    for path in source.files:
        for row in read_json_lines(path, path.relative_to(src).as_posix()):
            yield row_image(row, "img", path, src, index, near=src / IMAGE_FOLDER)


def build_plan(src: str | Path, options: HatefulMemesOptions = HatefulMemesOptions(),
               out: str | Path | None = None) -> Plan:
    """Every meme line under ``src`` as a work item, file by file, in line order, and a
    note on the records ``dev_seen`` and ``dev_unseen`` share.

    ``out``, when given, is where the plan will run: images already written there (and
    so already checked) are not decoded again.

    Raises:
        UsageError: no Hateful Memes files under ``src``, or a bad prompt template.
    """
    plan = build_native_plan(DATASET, src, options, out)
    rows_by_split: dict[str, dict[str, Mapping[str, Any]]] = {}
    for item in plan.items:
        if item.split in SHARED_SPLITS:
            by_id, row = rows_by_split.setdefault(item.split, {}), item.payload["row"]
            if row is not None:  # compared with the id as the string it stands for
                meme = _comparable_id(row)
                by_id.setdefault(meme, {**row, "id": meme})
    shared = shared_records(rows_by_split)
    if shared is not None:
        count = shared["count"]
        note = f"dev_seen and dev_unseen share {count} record{'' if count == 1 else 's'} by id"
        if count:
            note += (f" ({shared['identical']} identical, {len(shared['differing'])} differing): "
                     + _listed(shared["ids"]))
        if shared["differing"]:
            note += "; differing: " + _listed(shared["differing"])
        plan.notes.append(note)
    return plan


def _listed(ids: list[str], most: int = 20) -> str:
    return ", ".join(ids[:most]) + (f", ... ({len(ids) - most} more)" if len(ids) > most else "")


def _comparable_id(row: Mapping[str, Any]) -> str:
    try:
        return meme_id(row)
    except RowProblem:
        return repr(row.get("id"))


def convert(src: str | Path, out: str | Path,
            options: HatefulMemesOptions = HatefulMemesOptions(),
            run: RunOptions | None = None) -> ConvertReport:
    """Convert a Hateful Memes folder into ``out`` (see the module docstring).

    Args:
        src: the dataset folder as distributed.
        out: output directory (new, empty, or an unfinished run of the same command).
        options: prompt template, linking, image check.
        run: workers, strictness, fan-out, progress.

    Returns:
        What was written and skipped (also in ``out/manifest.json``).

    Raises:
        UsageError: bad ``src``, template or ``out``.
        DataError: any skipped row under ``strict``.
    """
    return run_conversion(build_plan(src, options, out), out, run)


def meme_id(row: Mapping[str, Any]) -> str:
    """The meme's id as a zero-padded string.

    Strings are kept as they are. Some copies store the id as an integer, losing the leading
    zero: the digits of the image's name are used when they are the same number, else the
    number is padded to 5 digits (the release's width).

    Raises:
        RowProblem: when the id is missing or neither text nor an integer.
    """
    value = row.get("id")
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        image = row.get("img")
        stem = Path(image).stem if isinstance(image, str) else ""
        if stem.isdigit() and int(stem) == value:
            return stem
        return f"{value:05d}"
    raise RowProblem(f"id {value!r}: expected a zero-padded string such as \"08291\"")


def parse_label(value: Any) -> int | None:
    """0 or 1 (also as ``true``/``false`` or ``"0"``/``"1"``); ``None`` when missing.

    Raises:
        RowProblem: on anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise RowProblem(f"label {value!r}: expected 0 or 1")


def hateful_memes_record(row: Mapping[str, Any], *, record_id: str, image: str,
                         prompt: str = HATEFUL_MEMES_PROMPT) -> Record:
    """One meme as a record: the image, a prompt holding its text unchanged, yes/no.

    Args:
        row: the native ``.jsonl`` object.
        record_id: the record's id.
        image: the meme's path relative to the images root.
        prompt: template with the field ``{text}``.

    Returns:
        The record; unlabeled (``assistant`` null) when the row has no label.

    Raises:
        RowProblem: on a missing text, a bad id or label, or special-token strings.
    """
    text = clean_text(row.get("text"), "text", allow_empty=True)
    original_id = meme_id(row)
    label = parse_label(row.get("label"))
    user = clean_text(prompt.format(text=text), "prompt")
    answer = None if label is None else HATEFUL_MEMES_ANSWERS[label]
    return Record(id=record_id, source=NAME,
                  conversations=[{"images": [image], "user": user, "assistant": answer}],
                  meta={"id": original_id})


def shared_records(rows_by_split: Mapping[str, Mapping[str, Mapping[str, Any]]]
                   ) -> dict[str, Any] | None:
    """Records that ``dev_seen`` and ``dev_unseen`` share, by original id.

    Args:
        rows_by_split: split -> original id -> row, for the converted splits.

    Returns:
        ``{"splits", "count", "identical", "differing", "ids"}``, or ``None`` unless both
        splits were converted.
    """
    first, second = SHARED_SPLITS
    if first not in rows_by_split or second not in rows_by_split:
        return None
    common = sorted(set(rows_by_split[first]) & set(rows_by_split[second]))
    differing = [key for key in common if rows_by_split[first][key] != rows_by_split[second][key]]
    return {"splits": list(SHARED_SPLITS), "count": len(common),
            "identical": len(common) - len(differing), "differing": differing, "ids": common}


def _record(row: Mapping[str, Any], *, record_id: str, images: list[str], prompt: str
            ) -> Record:
    return hateful_memes_record(row, record_id=record_id, image=images[0], prompt=prompt)


DATASET = NativeDataset(name=NAME, title="Hateful Memes", prompt_field="text", unit="memes",
                        label_field="label", find_sources=find_sources, iter_rows=iter_rows,
                        record=_record, image_folder=IMAGE_FOLDER)
