"""phiv_data: the record schema, validation, converters and shards for Phi-3.5-vision data.

Other pipelines import the schema from here::

    from phiv_data import Record, read_records, write_records

This package never imports torch. Its names are imported on first use (PEP 562): the
validator and the manifest code start without importing pydantic or building the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from phiv_data._version import SCHEMA_VERSION, __version__

if TYPE_CHECKING:
    from phiv_data.errors import DataError, ManifestError, MediaError, PhivError, UsageError
    from phiv_data.manifest import Manifest, Shard, Validation
    from phiv_data.schema import Record, Turn
    from phiv_data.shards import (
        ShardWriter,
        atomic_write,
        load_manifest,
        read_records,
        save_manifest,
        verify_dataset,
        write_records,
    )

_EXPORTS = {
    "phiv_data.errors": ("DataError", "ManifestError", "MediaError", "PhivError", "UsageError"),
    "phiv_data.manifest": ("Manifest", "Shard", "Validation"),
    "phiv_data.schema": ("Record", "Turn"),
    "phiv_data.shards": ("ShardWriter", "atomic_write", "load_manifest", "read_records",
                         "save_manifest", "verify_dataset", "write_records"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "SCHEMA_VERSION", "DataError", "Manifest", "ManifestError", "MediaError", "PhivError",
    "Record", "Shard", "ShardWriter", "Turn", "UsageError", "Validation", "__version__",
    "atomic_write", "load_manifest", "read_records", "save_manifest", "verify_dataset",
    "write_records",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'phiv_data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
