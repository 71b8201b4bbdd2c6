"""Record rules: what the schema cannot say, one small named function per rule.

Each rule takes a record (a ``phiv_data.schema.Record`` or its fast-path mirror: both
have ``id``, ``conversations[i].images/user/assistant``) and returns issues placed on
``line``. The chunk validator runs them only on records that a cheap bulk test flagged.
"""

from __future__ import annotations

import re
from typing import Any

from phiv_data.phi3v import find_special_text
from phiv_data.validate.issues import Issue

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters (tab, newline and carriage return are allowed)."""

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")


def text_blank(text: str) -> str | None:
    """``E-TEXT-BLANK`` message when ``text`` is only whitespace."""
    return "only whitespace: write the text or drop the record" if text.isspace() else None


def text_special(text: str) -> str | None:
    """``E-TEXT-SPECIAL`` message when ``text`` holds placeholder/special-token strings.

    Such a string would be tokenized as a control token or an image placeholder, shifting
    the images or injecting turns.
    """
    found = find_special_text(text)
    if not found:
        return None
    shown = ", ".join(dict.fromkeys(found))
    return (f"contains special-token text {shown}: remove it (placeholders are added by the "
            "processor from 'images')")


def text_control(text: str) -> str | None:
    """``W-TEXT-CONTROL`` message when ``text`` holds control characters."""
    found = CONTROL_CHARACTERS.findall(text)
    if not found:
        return None
    shown = ", ".join(f"U+{ord(character):04X}" for character in dict.fromkeys(found))
    return f"contains control characters {shown}"


_TEXT_RULES = (("E-TEXT-BLANK", text_blank), ("E-TEXT-SPECIAL", text_special),
               ("W-TEXT-CONTROL", text_control))


def check_texts(record: Any, line: int) -> list[Issue]:
    """The text rules over every user and assistant text of a record."""
    issues: list[Issue] = []
    for index, turn in enumerate(record.conversations):
        for name in ("user", "assistant"):
            text = getattr(turn, name)
            if text is None:
                continue
            for code, rule in _TEXT_RULES:
                message = rule(text)
                if message:
                    issues.append(Issue(code, f"{name} text {message}", None, line,
                                        f"conversations[{index}].{name}", record.id))
    return issues


def check_unlabeled_turns(record: Any, line: int) -> list[Issue]:
    """``E-SCHEMA-UNLABELED-TURN`` for each turn but the last whose answer is null."""
    return [Issue("E-SCHEMA-UNLABELED-TURN",
                  "assistant is null in a turn that is not the last: only the last turn of "
                  "a record may be unlabeled", None, line,
                  f"conversations[{index}].assistant", record.id)
            for index, turn in enumerate(record.conversations[:-1]) if turn.assistant is None]


def path_syntax_problem(path: str) -> tuple[str, str] | None:
    """``(code, message)`` when an image path is not a clean relative ``/`` path.

    Absolute paths (``/x``, ``C:/x``), backslashes and ``..`` segments are errors: the
    images root must contain every image, and the data must work on every system.
    """
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return "E-PATH-ABSOLUTE", f"absolute path {path!r}: make it relative to the images root"
    if "\\" in path:
        return "E-PATH-BACKSLASH", f"backslash in {path!r}: use '/' separators"
    if ".." in path.split("/"):
        return "E-PATH-PARENT", f"'..' segment in {path!r}: paths must stay inside the images root"
    return None


def image_fields(record: Any) -> list[tuple[str, str]]:
    """``(field path, image path)`` for every image of a record, in order."""
    return [(f"conversations[{turn_index}].images[{image_index}]", path)
            for turn_index, turn in enumerate(record.conversations)
            for image_index, path in enumerate(turn.images)]
