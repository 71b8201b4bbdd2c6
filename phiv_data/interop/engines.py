"""Run any converter's row function at scale on an engine you already use.

Every phiv converter has a pure function from one native row to one record
(``phiv_data.convert.hateful_memes.hateful_memes_record``, ``nlvr2_record``, ...). Where
your data already lives in an engine with parallel map (Hugging Face ``datasets``, Spark,
Beam, Ray), wrap that function in a :class:`RecordMapper`: it never raises for a bad row,
it returns the record as a JSON line or the reason the row failed, so the engine keeps every
row. Then :func:`write_mapped` writes the records as a phiv shard (atomically, validated
again on the way) and counts every failed row with its index and reason. With ``datasets``::

    mapper = RecordMapper(functools.partial(meme_record, src=src))   # (row, index) -> Record
    mapped = dataset.map(mapper, with_indices=True, num_proc=8,
                         remove_columns=dataset.column_names)
    report = write_mapped(mapped, "out/hateful_memes_train.jsonl", split="train")

``examples/datasets_map.py`` runs this end to end. The mapper must be picklable for
``num_proc > 1``: build it from module-level functions and ``functools.partial``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiv_data.errors import DataError, PhivError
from phiv_data.manifest import Shard
from phiv_data.schema import Record
from phiv_data.shards import ShardWriter, record_to_line

RECORD_COLUMN = "phiv_record"
PROBLEM_COLUMN = "phiv_problem"


class RecordMapper:
    """A ``(row, index) -> {phiv_record, phiv_problem}`` function for an engine's map.

    Args:
        build: ``(native_row, index) -> Record`` (or a dict valid as one); raises
            ``ValueError`` (the converters' ``RowProblem``, pydantic's errors) or a
            ``PhivError`` for a row that cannot become a record.
    """

    def __init__(self, build: Callable[[Mapping[str, Any], int], Record | dict[str, Any]]
                 ) -> None:
        self.build = build

    def __call__(self, row: Mapping[str, Any], index: int) -> dict[str, str | None]:
        try:
            record = self.build(row, index)
            line = record_to_line(record)
        except (ValueError, PhivError) as problem:
            return {RECORD_COLUMN: None, PROBLEM_COLUMN: f"{type(problem).__name__}: {problem}"}
        return {RECORD_COLUMN: line[:-1].decode("utf-8"), PROBLEM_COLUMN: None}


@dataclass
class MappedReport:
    """What :func:`write_mapped` wrote and which rows failed."""

    shard: Shard
    written: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)


def write_mapped(rows: Iterable[Mapping[str, Any]], path: str | Path, *,
                 split: str | None = None, images_root: str = "images",
                 strict: bool = False) -> MappedReport:
    """Write the records of mapped rows (``phiv_record`` / ``phiv_problem``) to a shard.

    Args:
        rows: the mapped rows, in order (a ``datasets.Dataset`` iterates as such).
        path: the shard to write (atomically).
        split: the shard's split for its manifest entry.
        images_root: the shard's images root for its manifest entry.
        strict: fail, writing nothing, when any row failed.

    Returns:
        The :class:`MappedReport` (failed rows by their 0-based index, with the reason).

    Raises:
        DataError: under ``strict`` when a row failed.
    """
    problems: list[tuple[int, str]] = []
    written = 0
    with ShardWriter(path, split=split, images_root=images_root) as writer:
        for index, row in enumerate(rows):
            if row.get(PROBLEM_COLUMN):
                problems.append((index, row[PROBLEM_COLUMN]))
                continue
            writer.write(Record.model_validate_json(row[RECORD_COLUMN]))
            written += 1
        if strict and problems:
            index, reason = problems[0]
            raise DataError(f"{len(problems)} row(s) could not be converted; row {index}: "
                            f"{reason}", hint="fix the rows or run without strict")
    assert writer.shard is not None
    return MappedReport(shard=writer.shard, written=written, problems=problems)
