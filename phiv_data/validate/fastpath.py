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

``meta`` is free (any JSON object), and phiv's own records carry one (frame provenance, all
DocVQA answers) that costs as much to build into dicts as the rest of the line.
:data:`decode_record` keeps it as raw JSON: msgspec still checks its syntax, and
:func:`meta_accepted` finishes the job for the few lines that have one: an object or null,
and valid UTF-8 (checked by :data:`decode_record_full` when the line is not ASCII).
"""

from __future__ import annotations

import types
import typing
from operator import attrgetter
from typing import Annotated, Any

import msgspec

NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]


class FastTurn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`phiv_data.schema.Turn`."""

    user: NonEmptyText
    assistant: NonEmptyText | None
    images: list[NonEmptyText] = []


NO_META = msgspec.Raw(b"")


class FastRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`phiv_data.schema.Record`, ``meta`` left as raw JSON (see above)."""

    id: NonEmptyText
    conversations: Annotated[list[FastTurn], msgspec.Meta(min_length=1)]
    source: str | None = None
    meta: msgspec.Raw = NO_META


class FullFastRecord(FastRecord, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`phiv_data.schema.Record`, ``meta`` decoded and checked."""

    meta: dict[str, Any] | None = None


decode_record = msgspec.json.Decoder(FastRecord).decode
"""``decode_record(line_bytes) -> FastRecord``; raises ``msgspec.DecodeError`` (or its
``ValidationError`` subclass) for any line the schema would reject, except for what
:func:`meta_accepted` checks."""

decode_record_full = msgspec.json.Decoder(FullFastRecord).decode
"""``decode_record_full(line_bytes) -> FullFastRecord``: raises for every line the schema
would reject."""

DecodeError = (msgspec.DecodeError, UnicodeDecodeError)
"""What the decoders raise for a rejected line (invalid UTF-8 raises the latter)."""


_META = attrgetter("meta")


def with_meta(records: list[FastRecord]) -> list[int]:
    """Indices of the records (all from :data:`decode_record`) that carry a ``meta``."""
    metas = list(map(_META, records))
    # msgspec fills an absent field with the default object itself: counting it is one C
    # pass of identity checks (the common case: no record has one).
    if metas.count(NO_META) == len(metas):
        return []
    return [index for index, meta in enumerate(metas) if len(meta)]


def meta_accepted(record: FastRecord, line: bytes, ascii_line: bool) -> bool:
    """Whether the raw ``meta`` of ``record`` (decoded from ``line``) is one pydantic takes."""
    if not ascii_line:  # invalid UTF-8 inside the raw JSON is only found by decoding it
        try:
            decode_record_full(line)
        except DecodeError:
            return False
        return True
    view = memoryview(record.meta)
    return view[:1] == b"{" or view == b"null"


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
    for fast, model in ((FastTurn, Turn), (FastRecord, Record), (FullFastRecord, Record)):
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
            if fast_field.type is msgspec.Raw:  # checked by meta_accepted
                continue
            if _nullable(pydantic_field.annotation) != _nullable(fast_field.type):
                problems.append(f"{model.__name__}.{name}: nullability differs")
        if model.model_config.get("extra") != "forbid":
            problems.append(f"{model.__name__}: pydantic model no longer forbids extra fields")
    return problems
