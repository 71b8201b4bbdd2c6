"""The slow path for a line the fast path rejected: find every problem, with its field path.

Order of the checks: blank, UTF-8, JSON syntax (orjson is the judge), object, then every
pydantic error of :class:`phiv_data.schema.Record`, each mapped to a stable code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from phiv_data.shards import format_field_path, pydantic_schema
from phiv_data.validate.issues import Issue

if TYPE_CHECKING:
    from phiv_data.schema import Record

_RECORD_FIELDS = "id, source, conversations, meta"
_TURN_FIELDS = "images, user, assistant"
_UNLABELED_TURN = re.compile(r"conversations\[(\d+)\]\.assistant is null")
_ORJSON_POSITION = re.compile(r": line \d+ column (\d+) \(char \d+\)$")

_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
                    int: "a number", float: "a number", type(None): "null"}


def json_type_name(value: Any) -> str:
    """``an object``, ``a number`` ... for messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _record_id(raw: bytes) -> str | None:
    # Best effort for messages; the line may be far from valid.
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _schema_issue(error: dict[str, Any], line: int, record_id: str | None) -> Issue:
    kind = error["type"]
    loc = tuple(error["loc"])
    field = format_field_path(loc) or None
    name = loc[-1] if loc else None
    value = error.get("input")
    if kind == "value_error" and not loc:
        match = _UNLABELED_TURN.search(error["msg"])
        if match:
            return Issue("E-SCHEMA-UNLABELED-TURN",
                         "assistant is null in a turn that is not the last: only the last "
                         "turn of a record may be unlabeled", None, line,
                         f"conversations[{match.group(1)}].assistant", record_id)
    if kind == "missing":
        hint = " (use null for the unlabeled last turn of an evaluation record)" \
            if name == "assistant" else ""
        return Issue("E-SCHEMA-MISSING", f"required field {name!r} is missing: add it{hint}",
                     None, line, field, record_id)
    if kind == "extra_forbidden":
        known = _TURN_FIELDS if len(loc) == 3 else _RECORD_FIELDS
        return Issue("E-SCHEMA-UNKNOWN-FIELD",
                     f"unknown field {name!r} (known fields: {known}; put extra data under "
                     "'meta')", None, line, field, record_id)
    if kind == "too_short" and loc == ("conversations",):
        return Issue("E-SCHEMA-EMPTY-CONVERSATIONS",
                     "conversations is empty: a record needs at least one turn",
                     None, line, field, record_id)
    if kind == "string_too_short":
        what = name if isinstance(name, str) else "image path"
        return Issue("E-SCHEMA-EMPTY-TEXT", f"{what} is an empty string: write it or drop "
                     "the record", None, line, field, record_id)
    if kind.endswith("_type"):
        expected = error["msg"].replace("Input should be ", "should be ")
        message = f"{expected}, got {json_type_name(value)}"
        if name == "id" and len(loc) == 1:
            message += ": ids are JSON strings (write \"42\", not 42)"
        return Issue("E-SCHEMA-TYPE", message, None, line, field, record_id)
    return Issue("E-SCHEMA-INVALID", f"{error['msg']} (see schemas/record.schema.json)",
                 None, line, field, record_id)


def classify_line(raw: bytes, line: int) -> tuple[list[Issue], Record | None]:
    """Every problem of one line the fast path rejected.

    Args:
        raw: the line's bytes without its ``\\n`` (and without a trailing ``\\r``).
        line: its line number (as the caller counts them).

    Returns:
        ``(issues, record)``: ``record`` is the pydantic ``Record`` when the line is valid
        after all (the caller then runs the record rules on it), else ``None``.
    """
    if not raw.strip():
        return [Issue("W-BLANK-LINE", "blank line (remove it)", None, line)], None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        return [Issue("E-UTF8", f"byte 0x{byte:02x} at column {error.start + 1} is not "
                      "UTF-8 (re-encode the file as UTF-8)", None, line)], None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        message = _ORJSON_POSITION.sub(lambda m: f" at column {m.group(1)}", str(error))
        return [Issue("E-JSON", f"invalid JSON: {message} (repair the line or remove it)",
                      None, line)], None
    if not isinstance(value, dict):
        return [Issue("E-NOT-OBJECT", f"the line is {json_type_name(value)}, not a JSON "
                      "object (one record per line)", None, line)], None
    # pydantic is imported for the first line that needs it: valid files never do.
    model, validation_error = pydantic_schema()
    try:
        return [], model.model_validate_json(raw)
    except validation_error as error:
        record_id = value.get("id") if isinstance(value.get("id"), str) else None
        return [_schema_issue(detail, line, record_id) for detail in error.errors()], None
    except ValueError as error:  # pydantic's JSON parser disagreeing with orjson
        return [Issue("E-JSON", f"invalid JSON: {error} (repair the line or remove it)",
                      None, line, None, _record_id(raw))], None
