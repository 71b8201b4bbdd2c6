"""The manifest: a dataset directory's statement of what it holds and what was checked.

``manifest.json`` is written last, after every shard is in place, so its presence means
the output is complete. Each shard entry carries the sha256 of its bytes, and, once
``phiv-data validate`` has passed, the validation outcome for exactly those bytes. The
trainer accepts only shards whose manifest says they were validated and whose bytes still
match.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from phiv_data.schema import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string (seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def tool_version() -> str:
    """phiv's version as installed (``0+unknown`` when running from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phiv")
    except PackageNotFoundError:
        return "0+unknown"


class CheckOutcome(BaseModel):
    """One family of validation checks and how it went."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="syntax, schema, dataset, media, tokens, ...")
    passed: bool
    errors: int = 0
    warnings: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class Validation(BaseModel):
    """The outcome of ``phiv-data validate`` for one shard's exact bytes."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    sha256: str = Field(description="sha256 of the shard bytes that were validated.")
    errors: int = 0
    warnings: int = 0
    checks: list[CheckOutcome] = Field(default_factory=list)
    images_root: str | None = Field(
        default=None, description="Images root used for the media checks."
    )
    tool_version: str = Field(default_factory=tool_version)
    schema_version: str = SCHEMA_VERSION
    validated_at: str = Field(default_factory=utc_now)


class Shard(BaseModel):
    """One JSONL file of records."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="Path relative to the manifest's directory, '/' separators.")
    split: str | None = Field(default=None, description="train, val, test, ... when known.")
    images_root: str = Field(
        default="images",
        description="Directory image paths are relative to: relative to the manifest's "
        "directory, or absolute when it lies elsewhere.",
    )
    sha256: str
    size_bytes: int
    records: int = Field(description="Number of records (= lines).")
    images: int = Field(description="Number of image references over all records.")
    unlabeled: int = Field(default=0, description="Records whose last answer is null.")
    validation: Validation | None = None


class Manifest(BaseModel):
    """``manifest.json`` of a dataset directory."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["phiv-manifest"] = "phiv-manifest"
    manifest_version: int = MANIFEST_VERSION
    schema_version: str = SCHEMA_VERSION
    tool_version: str = Field(default_factory=tool_version)
    created_at: str = Field(default_factory=utc_now)
    shards: list[Shard] = Field(default_factory=list)
    producer: dict[str, Any] | None = Field(
        default=None,
        description="What wrote the data: command, options, timings, host, workers. "
        "Everything specific to one run lives here and nowhere else.",
    )
    report: dict[str, Any] | None = Field(
        default=None, description="What was skipped or changed while producing the data, and why."
    )

    def shard(self, file: str) -> Shard | None:
        """The entry for ``file`` (relative to the manifest directory), if any."""
        return next((entry for entry in self.shards if entry.file == file), None)

    def splits(self) -> dict[str, list[Shard]]:
        """Shards grouped by split name (``None`` splits under ``""``)."""
        grouped: dict[str, list[Shard]] = {}
        for entry in self.shards:
            grouped.setdefault(entry.split or "", []).append(entry)
        return grouped
