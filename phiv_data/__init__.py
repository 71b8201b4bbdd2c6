"""phiv_data: the record schema, validation, converters and shards for Phi-3.5-vision data.

Other pipelines import the schema from here::

    from phiv_data import Record, read_records, write_records

This package never imports torch.
"""

from phiv_data.errors import DataError, ManifestError, MediaError, PhivError, UsageError
from phiv_data.manifest import Manifest, Shard, Validation
from phiv_data.schema import SCHEMA_VERSION, Record, Turn
from phiv_data.shards import (
    ShardWriter,
    atomic_write,
    load_manifest,
    read_records,
    save_manifest,
    verify_dataset,
    write_records,
)

__all__ = [
    "SCHEMA_VERSION",
    "DataError",
    "Manifest",
    "ManifestError",
    "MediaError",
    "PhivError",
    "Record",
    "Shard",
    "ShardWriter",
    "Turn",
    "UsageError",
    "Validation",
    "atomic_write",
    "load_manifest",
    "read_records",
    "save_manifest",
    "verify_dataset",
    "write_records",
]
