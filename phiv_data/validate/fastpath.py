"""The fast path: msgspec structs that accept exactly the lines ``phiv_data.schema`` accepts.

Most lines of a real file are valid, so the validator decodes each line straight into these
structs (one C call, no intermediate dicts). Only a line they reject goes through the slow
path (orjson, then pydantic) to find every problem with its field path. The structs mirror
the pydantic models field by field; :func:`check_agreement` compares the two (a test runs
it, so that a schema change cannot silently leave the fast path behind), and a property
test checks that both accept the same lines. Importing this module does not import pydantic,
which keeps the validator's start-up short.

What pydantic's ``model_validator`` checks (only the last turn may be unlabeled) is not
expressible here; the chunk validator checks it for multi-turn records.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

import msgspec

NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]


class FastTurn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`phiv_data.schema.Turn`."""

    user: NonEmptyText
    assistant: NonEmptyText | None
    images: list[NonEmptyText] = []


class FastRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`phiv_data.schema.Record`."""

    id: NonEmptyText
    conversations: Annotated[list[FastTurn], msgspec.Meta(min_length=1)]
    source: str | None = None
    meta: dict[str, Any] | None = None


decode_record = msgspec.json.Decoder(FastRecord).decode
"""``decode_record(line_bytes) -> FastRecord``; raises ``msgspec.DecodeError`` (or its
``ValidationError`` subclass) for any line the schema would reject."""

DecodeError = (msgspec.DecodeError, UnicodeDecodeError)
"""What ``decode_record`` raises for a rejected line (invalid UTF-8 raises the latter)."""

def _nullable(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return False


def check_agreement() -> list[str]:
    """Differences between the fast structs and the pydantic models (empty when in sync).

    Compares field names, which fields are required and which accept null.
    """
    from phiv_data.schema import Record, Turn

    problems: list[str] = []
    for fast, model in ((FastTurn, Turn), (FastRecord, Record)):
        info = msgspec.structs.fields(fast)
        fast_fields = {field.name: field for field in info}
        if set(fast_fields) != set(model.model_fields):
            problems.append(f"{model.__name__}: fields {sorted(model.model_fields)} != "
                            f"fast {sorted(fast_fields)}")
            continue
        for name, pydantic_field in model.model_fields.items():
            fast_field = fast_fields[name]
            fast_required = fast_field.required
            if pydantic_field.is_required() != fast_required:
                problems.append(f"{model.__name__}.{name}: required differs")
            if _nullable(pydantic_field.annotation) != _nullable(fast_field.type):
                problems.append(f"{model.__name__}.{name}: nullability differs")
        if model.model_config.get("extra") != "forbid":
            problems.append(f"{model.__name__}: pydantic model no longer forbids extra fields")
    return problems
