"""Generate the JSON Schema files in ``schemas/`` from the models (records: pydantic;
manifest: msgspec).

Run ``python -m phiv_data.jsonschema [DIR]`` after changing ``phiv_data/schema.py`` or
``phiv_data/manifest.py``; ``tests/test_schema_files.py`` fails while the files are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import orjson

from phiv_data.manifest import MANIFEST_VERSION, Manifest
from phiv_data.schema import ROOT_MODELS, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _struct_schema(struct: type) -> dict:
    """msgspec's schema with the root definition inlined (the layout pydantic writes) and
    unknown fields refused, as the decoder refuses them."""
    document = msgspec.json.schema(struct)
    definitions = document.pop("$defs", {})
    root = definitions.pop(document.pop("$ref").rsplit("/", 1)[-1])
    forbid = {"additionalProperties": False}
    return {**root, **forbid, "$defs": {name: {**value, **forbid}
                                         for name, value in definitions.items()}}


def schema_documents() -> dict[str, dict]:
    """File name -> JSON Schema document, for every exported model."""
    generated: dict[str, tuple[dict, str]] = {
        name: (model.model_json_schema(mode="validation"), SCHEMA_VERSION)
        for name, model in ROOT_MODELS.items()
    }
    generated["manifest"] = (_struct_schema(Manifest), str(MANIFEST_VERSION))
    documents: dict[str, dict] = {}
    for name, (document, version) in generated.items():
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://phiv.dev/schemas/{name}.v{version}.json",
            **document,
        }
        documents[f"{name}.schema.json"] = document
    return documents


def render(document: dict) -> bytes:
    """Stable bytes for one schema document."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema document into ``directory``; return the paths written."""
    from phiv_data.shards import atomic_write

    written = []
    for name, document in schema_documents().items():
        path = directory / name
        with atomic_write(path, "wb") as handle:
            handle.write(render(document))
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR
    for path in write_schemas(target):
        print(path)
