"""schemas/ is generated from the models and must not go stale."""

from __future__ import annotations

from phiv_data.jsonschema import SCHEMA_DIR, render, schema_documents


def test_schema_files_are_current():
    documents = schema_documents()
    for name, document in documents.items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"{path} missing: run `python -m phiv_data.jsonschema`"
        assert path.read_bytes() == render(document), (
            f"{path} is stale: run `python -m phiv_data.jsonschema`"
        )
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(documents)
