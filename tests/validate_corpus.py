"""A corpus of malformed inputs for ``phiv-data validate``, each with the issue it must raise.

Every case is a whole file (bytes) built in code. Most put the bad line second, after a
valid one, so that line numbering is checked too. ``setup`` prepares the images root
(``images/`` beside the file already holds ``ok.jpg``) for cases about the file system.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import orjson


def record(record_id: str = "r1", *, images: list[str] | None = None, user: str = "What?",
           assistant: str | None = "yes", **extra: Any) -> dict[str, Any]:
    """A valid single-turn record dict (change a field to break it)."""
    data: dict[str, Any] = {"id": record_id, "conversations": [
        {"images": ["ok.jpg"] if images is None else images, "user": user,
         "assistant": assistant}]}
    data.update(extra)
    return data


def line(value: Any) -> bytes:
    """A JSONL line for a dict (or raw bytes as they are)."""
    return value if isinstance(value, bytes) else orjson.dumps(value)


def lines(*values: Any, ending: bytes = b"\n") -> bytes:
    """A file from records/raw lines, each ended with ``ending``."""
    return b"".join(line(value) + ending for value in values)


GOOD = record("r0")


def after_good(bad: Any) -> bytes:
    """A valid first line, then ``bad`` on line 2."""
    return lines(GOOD, bad)


def _turn(**fields: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {"images": [], "user": "u", "assistant": "a"}
    turn.update(fields)
    return turn


def _link_outside(root: Path) -> None:
    outside = root.parent / "outside.jpg"
    outside.write_bytes((root / "ok.jpg").read_bytes())
    os.symlink(outside, root / "escape.jpg")


def _directory_named_like_image(root: Path) -> None:
    (root / "folder.jpg").mkdir()


def _dangling_link(root: Path) -> None:
    os.symlink(root / "gone.jpg", root / "dangling.jpg")


@dataclass(frozen=True)
class Case:
    """One malformed input and the issue it must produce."""

    name: str
    content: bytes
    code: str
    line: int | None
    field: str | None = None
    options: dict[str, Any] = dataclass_field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


CASES: list[Case] = [
    # bytes and syntax
    Case("not_utf8", after_good(b'{"id": "r1\xff", "conversations": []}'), "E-UTF8", 2),
    Case("latin1_text", after_good(line(record("r1")).replace(b"What?", b"Caf\xe9")),
         "E-UTF8", 2),
    Case("byte_order_mark", b"\xef\xbb\xbf" + lines(GOOD), "E-BOM", 1),
    Case("truncated_json", after_good(b'{"id": "r1", "conversations": ['), "E-JSON", 2),
    Case("trailing_garbage", after_good(line(record("r1")) + b" x"), "E-JSON", 2),
    Case("single_quotes", after_good(b"{'id': 'r1'}"), "E-JSON", 2),
    Case("nan_in_meta", after_good(line(record("r1")).replace(b"}]}", b'}], "meta": {"x": NaN}}')),
         "E-JSON", 2),
    Case("array_line", after_good(b"[1, 2]"), "E-NOT-OBJECT", 2),
    Case("string_line", after_good(b'"just text"'), "E-NOT-OBJECT", 2),
    Case("null_line", after_good(b"null"), "E-NOT-OBJECT", 2),
    Case("blank_line", lines(GOOD, b"", record("r1")), "W-BLANK-LINE", 2),
    Case("whitespace_line", lines(GOOD, b"  \t ", record("r1")), "W-BLANK-LINE", 2),
    Case("crlf_endings", lines(GOOD, record("r1"), ending=b"\r\n"), "W-CRLF", 1),
    Case("absurdly_long_line", after_good(line(record("r1", user="x" * 5000))),
         "E-LINE-TOO-LONG", 2, options={"max_line_bytes": 2048}),
    Case("empty_file", b"", "E-EMPTY-FILE", None),
    Case("only_blank_lines", b"\n\n", "E-EMPTY-FILE", None),
    # schema
    Case("missing_id", after_good({"conversations": [_turn()]}), "E-SCHEMA-MISSING", 2, "id"),
    Case("id_is_number", after_good({"id": 42, "conversations": [_turn()]}), "E-SCHEMA-TYPE",
         2, "id"),
    Case("id_is_empty", after_good({"id": "", "conversations": [_turn()]}),
         "E-SCHEMA-EMPTY-TEXT", 2, "id"),
    Case("source_is_number", after_good(record("r1", source=7)), "E-SCHEMA-TYPE", 2, "source"),
    Case("unknown_record_field", after_good(record("r1", label="x")),
         "E-SCHEMA-UNKNOWN-FIELD", 2, "label"),
    Case("unknown_field_named_by_a_digit", after_good(record("r1", **{"²": 1, "x2": 2})),
         "E-SCHEMA-UNKNOWN-FIELD", 2, "²"),
    Case("unknown_turn_field", after_good({"id": "r1", "conversations": [_turn(question="q")]}),
         "E-SCHEMA-UNKNOWN-FIELD", 2, "conversations[0].question"),
    Case("empty_conversations", after_good({"id": "r1", "conversations": []}),
         "E-SCHEMA-EMPTY-CONVERSATIONS", 2, "conversations"),
    Case("conversations_is_object", after_good({"id": "r1", "conversations": _turn()}),
         "E-SCHEMA-TYPE", 2, "conversations"),
    Case("turn_is_string", after_good({"id": "r1", "conversations": ["hi"]}),
         "E-SCHEMA-TYPE", 2, "conversations[0]"),
    Case("empty_user", after_good(record("r1", user="")), "E-SCHEMA-EMPTY-TEXT", 2,
         "conversations[0].user"),
    Case("empty_assistant", after_good(record("r1", assistant="")), "E-SCHEMA-EMPTY-TEXT", 2,
         "conversations[0].assistant"),
    Case("missing_assistant", after_good({"id": "r1", "conversations": [{"user": "u"}]}),
         "E-SCHEMA-MISSING", 2, "conversations[0].assistant"),
    Case("images_is_string", after_good({"id": "r1", "conversations": [_turn(images="a.jpg")]}),
         "E-SCHEMA-TYPE", 2, "conversations[0].images"),
    Case("image_path_is_number", after_good({"id": "r1", "conversations": [_turn(images=[3])]}),
         "E-SCHEMA-TYPE", 2, "conversations[0].images[0]"),
    Case("image_path_is_empty", after_good({"id": "r1", "conversations": [_turn(images=[""])]}),
         "E-SCHEMA-EMPTY-TEXT", 2, "conversations[0].images[0]"),
    Case("meta_is_list", after_good(record("r1", meta=[1])), "E-SCHEMA-TYPE", 2, "meta"),
    Case("unlabeled_middle_turn", after_good({"id": "r1", "conversations": [
        _turn(assistant=None), _turn()]}), "E-SCHEMA-UNLABELED-TURN", 2,
        "conversations[0].assistant"),
    # text rules
    Case("blank_user", after_good(record("r1", user="   ")), "E-TEXT-BLANK", 2,
         "conversations[0].user"),
    Case("blank_assistant", after_good(record("r1", assistant="\n\t")), "E-TEXT-BLANK", 2,
         "conversations[0].assistant"),
    Case("placeholder_in_user", after_good(record("r1", user="<|image_1|>\nWhat?")),
         "E-TEXT-SPECIAL", 2, "conversations[0].user"),
    Case("end_tag_in_assistant", after_good(record("r1", assistant="yes<|end|>")),
         "E-TEXT-SPECIAL", 2, "conversations[0].assistant"),
    Case("bos_in_second_turn", after_good({"id": "r1", "conversations": [
        _turn(), _turn(user="again <s> please")]}), "E-TEXT-SPECIAL", 2,
        "conversations[1].user"),
    Case("control_character", after_good(record("r1", user="bell\u0007here")),
         "W-TEXT-CONTROL", 2, "conversations[0].user"),
    # dataset rules
    Case("duplicate_id", lines(GOOD, record("r1"), record("r0")), "E-ID-DUPLICATE", 3, "id"),
    Case("absolute_path", after_good(record("r1", images=["/etc/passwd"])), "E-PATH-ABSOLUTE",
         2, "conversations[0].images[0]"),
    Case("windows_drive_path", after_good(record("r1", images=["C:/data/a.jpg"])),
         "E-PATH-ABSOLUTE", 2, "conversations[0].images[0]"),
    Case("parent_segment", after_good(record("r1", images=["sub/../../x.jpg"])),
         "E-PATH-PARENT", 2, "conversations[0].images[0]"),
    Case("backslash_path", after_good(record("r1", images=["sub\\ok.jpg"])),
         "E-PATH-BACKSLASH", 2, "conversations[0].images[0]"),
    Case("missing_image", after_good(record("r1", images=["ok.jpg", "nope.jpg"])),
         "E-IMAGE-MISSING", 2, "conversations[0].images[1]"),
    Case("link_outside_root", after_good(record("r1", images=["escape.jpg"])),
         "E-PATH-OUTSIDE-ROOT", 2, "conversations[0].images[0]", setup=_link_outside),
    Case("dangling_link", after_good(record("r1", images=["dangling.jpg"])),
         "E-IMAGE-MISSING", 2, "conversations[0].images[0]", setup=_dangling_link),
    Case("image_is_directory", after_good(record("r1", images=["folder.jpg"])),
         "E-IMAGE-NOT-FILE", 2, "conversations[0].images[0]",
         setup=_directory_named_like_image),
    Case("unlabeled_record_noted", after_good(record("r1", assistant=None)), "I-UNLABELED", 2),
]
