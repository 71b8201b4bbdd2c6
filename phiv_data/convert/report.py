"""What a conversion wrote, skipped and changed: the report in ``manifest.json``.

Deterministic by design (no timings, hosts or worker counts: those live in the manifest's
``producer``), so two runs of the same conversion give equal reports, and the parts of a
fan-out merge into exactly the report of a single run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phiv_data.errors import display_path

__all__ = ["ConvertReport", "ItemNote", "SkippedItem"]


@dataclass(frozen=True)
class SkippedItem:
    """An item left out of the output, and why."""

    position: int
    key: str
    split: str
    reason: str
    detail: str
    where: str


@dataclass(frozen=True)
class ItemNote:
    """Something the converter changed or assumed for one item that was written."""

    position: int
    key: str
    split: str
    note: str


@dataclass
class ConvertReport:
    """What a conversion wrote, skipped and changed (deterministic: no timings)."""

    dataset: str
    out: Path
    planned: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)
    changed: list[ItemNote] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    part: tuple[int, int] | None = None
    """(shard_index, num_shards) for one part of a fan-out; None for a whole dataset."""

    def skipped_by_reason(self) -> dict[str, int]:
        """Number of skipped items per reason code, sorted by code."""
        counts: dict[str, int] = {}
        for entry in self.skipped:
            counts[entry.reason] = counts.get(entry.reason, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        """The report as stored in ``manifest.json`` (``report``)."""
        return {
            "dataset": self.dataset,
            "part": list(self.part) if self.part else None,
            "notes": list(self.notes),
            "planned": dict(self.planned),
            "records": dict(self.records),
            "images": dict(self.images),
            "skipped_by_reason": self.skipped_by_reason(),
            "skipped": [asdict(entry) for entry in self.skipped],
            "changed": [asdict(entry) for entry in self.changed],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], out: Path) -> ConvertReport:
        """Rebuild a report from a manifest's ``report``."""
        return cls(
            dataset=data["dataset"], out=out, planned=dict(data.get("planned", {})),
            records=dict(data.get("records", {})), images=dict(data.get("images", {})),
            skipped=[SkippedItem(**entry) for entry in data.get("skipped", [])],
            changed=[ItemNote(**entry) for entry in data.get("changed", [])],
            notes=list(data.get("notes", [])),
            part=tuple(data["part"]) if data.get("part") else None,  # type: ignore[arg-type]
        )

    def summary(self, *, max_listed: int = 10, notes: bool = True) -> str:
        """A few human-readable lines: counts per split, skips by reason, first skips
        (and the plan's notes unless ``notes`` is false)."""
        lines = [f"{self.dataset}: {display_path(self.out)}"
                 + (f" (part {self.part[0] + 1} of {self.part[1]})" if self.part else "")]
        lines += [f"  {note}" for note in self.notes] if notes else []
        for split, planned in self.planned.items():
            lines.append(f"  {split}: {self.records.get(split, 0)} records, "
                         f"{self.images.get(split, 0)} images ({planned} planned)")
        if self.changed:
            lines.append(f"  changed: {len(self.changed)} item(s), see manifest.json report")
        if self.skipped:
            reasons = ", ".join(f"{reason} {count}" for reason, count
                                in self.skipped_by_reason().items())
            lines.append(f"  skipped: {len(self.skipped)} item(s): {reasons}")
            for entry in self.skipped[:max_listed]:
                lines.append(f"    {entry.where}: {entry.reason}: {entry.detail}")
            if len(self.skipped) > max_listed:
                lines.append(f"    ... {len(self.skipped) - max_listed} more in manifest.json")
        return "\n".join(lines)
