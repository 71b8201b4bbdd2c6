"""The manifest: a dataset directory's statement of what it holds and what was checked.

``manifest.json`` is written last, after every shard is in place, so its presence means
the output is complete. Each shard entry carries the sha256 of its bytes, and, once
``phiv-data validate`` has passed, the validation outcome for exactly those bytes. The
trainer accepts only shards whose manifest says they were validated and whose bytes still
match.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec

from phiv_data._version import SCHEMA_VERSION, __version__

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string (seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def tool_version() -> str:
    """phiv's version (``pyproject.toml`` reads it from ``phiv_data._version``)."""
    return __version__


def _described(kind: Any, description: str) -> Any:
    return Annotated[kind, msgspec.Meta(description=description)]


# msgspec structs, not pydantic models: the manifest is phiv's own bookkeeping, read and
# written by every validation and every training start, and msgspec keeps pydantic's import
# and model building (half of `phiv-data validate`'s start-up) off those paths. The record
# format (phiv_data.schema), the contract other pipelines import, stays pydantic.
class _Entry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (what pydantic calls ``model_copy(update=...)``)."""
        return msgspec.structs.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written to ``manifest.json`` (fields in declaration order;
        paths in the free ``producer``/``report`` objects become strings)."""
        return msgspec.to_builtins(self, enc_hook=_encode_other)


def _encode_other(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} cannot be written to a manifest: {value!r}")


class CheckOutcome(_Entry, kw_only=True, forbid_unknown_fields=True):
    """One family of validation checks and how it went."""

    name: _described(str, "syntax, schema, dataset, media, tokens, ...")
    passed: bool
    errors: int = 0
    warnings: int = 0
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class Validation(_Entry, kw_only=True, forbid_unknown_fields=True):
    """The outcome of ``phiv-data validate`` for one shard's exact bytes."""

    passed: bool
    sha256: _described(str, "sha256 of the shard bytes that were validated.")
    errors: int = 0
    warnings: int = 0
    checks: list[CheckOutcome] = msgspec.field(default_factory=list)
    images_root: _described(str | None, "Images root used for the media checks.") = None
    tool_version: str = msgspec.field(default_factory=tool_version)
    schema_version: str = SCHEMA_VERSION
    validated_at: str = msgspec.field(default_factory=utc_now)


class Shard(_Entry, kw_only=True, forbid_unknown_fields=True):
    """One JSONL file of records."""

    file: _described(str, "Path relative to the manifest's directory, '/' separators.")
    split: _described(str | None, "train, val, test, ... when known.") = None
    images_root: _described(
        str, "Directory image paths are relative to: relative to the manifest's directory, "
        "or absolute when it lies elsewhere.") = "images"
    sha256: str
    size_bytes: int
    records: _described(int, "Number of records (= lines).")
    images: _described(int, "Number of image references over all records.")
    unlabeled: _described(int, "Records whose last answer is null.") = 0
    validation: Validation | None = None


class Manifest(_Entry, kw_only=True, forbid_unknown_fields=True):
    """``manifest.json`` of a dataset directory."""

    format: Literal["phiv-manifest"] = "phiv-manifest"
    manifest_version: int = MANIFEST_VERSION
    schema_version: str = SCHEMA_VERSION
    tool_version: str = msgspec.field(default_factory=tool_version)
    created_at: str = msgspec.field(default_factory=utc_now)
    shards: list[Shard] = msgspec.field(default_factory=list)
    producer: _described(
        dict[str, Any] | None, "What wrote the data: command, options, timings, host, "
        "workers. Everything specific to one run lives here and nowhere else.") = None
    report: _described(
        dict[str, Any] | None,
        "What was skipped or changed while producing the data, and why.") = None

    def shard(self, file: str) -> Shard | None:
        """The entry for ``file`` (relative to the manifest directory), if any."""
        return next((entry for entry in self.shards if entry.file == file), None)

    def splits(self) -> dict[str, list[Shard]]:
        """Shards grouped by split name (``None`` splits under ``""``)."""
        grouped: dict[str, list[Shard]] = {}
        for entry in self.shards:
            grouped.setdefault(entry.split or "", []).append(entry)
        return grouped
