"""Image tags and image lists: the one place where foreign conversations meet phiv turns.

Foreign formats mark where an image goes with a tag inside the text (``<image>`` in LLaVA
and LLaMA-Factory) or with an ``{"type": "image"}`` part (Hugging Face chat messages), and
keep the images themselves in a separate list. phiv has no tags: each turn lists its images,
which the model sees at the start of that turn, before the user text.

Both directions go through :class:`Message`, a role plus a list of parts (text strings and
:data:`IMAGE` slots), so every format shares the same rules:

* the number of image slots must equal the number of images, or the row is rejected;
* images may only sit in user messages (an image in an assistant message is rejected);
* slots at the start of a user message map exactly onto the turn's images; whitespace
  right after them is dropped (phiv puts each image on its own line);
* a slot after some text (``"Compare <image> with this"``) cannot be represented: the image
  moves to the start of its turn, the tag is removed, and the row carries a ``tag-moved``
  warning saying so (a lossy change, never a silent one);
* one optional system message at the start is kept in ``meta["system"]`` (phiv does not
  train on system prompts; the row carries a ``system-kept-in-meta`` warning);
* turns alternate user, assistant; a trailing user message is an unlabeled last turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from phiv_data.schema import Record
from phiv_data.shards import format_field_path

IMAGE_TAG = "<image>"
"""The tag LLaVA and LLaMA-Factory put in the text where an image goes."""

IMAGE = object()
"""An image slot among a message's parts."""

_TAG_SPLIT = re.compile(f"({re.escape(IMAGE_TAG)})")

USER_ROLES = frozenset({"user", "human"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt"})
SYSTEM_ROLES = frozenset({"system"})


class RowRejected(ValueError):
    """A foreign row (or a record) that cannot be converted; reported with its line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RowWarning:
    """A change made to a row that was kept (``code`` is stable, ``message`` says what)."""

    code: str
    message: str


@dataclass
class Message:
    """One message of a foreign conversation: a role and its parts in order."""

    role: str
    parts: list[Any] = field(default_factory=list)

    @property
    def image_slots(self) -> int:
        return sum(part is IMAGE for part in self.parts)

    @property
    def text(self) -> str:
        return "".join(part for part in self.parts if part is not IMAGE)


def split_tags(text: str) -> list[Any]:
    """Split ``text`` at ``<image>`` tags: ``"<image>\\nHi"`` -> ``[IMAGE, "\\nHi"]``."""
    return [IMAGE if piece == IMAGE_TAG else piece
            for piece in _TAG_SPLIT.split(text) if piece != ""]


def content_parts(content: Any, where: str) -> list[Any]:
    """The parts of a message's content: a string with ``<image>`` tags, or a list of typed
    parts (``{"type": "image"}``, ``{"type": "text", "text": ...}``) as in Hugging Face chat
    messages. An ``<image>`` inside any text counts as an image slot.

    Raises:
        RowRejected: when the content is neither.
    """
    if isinstance(content, str):
        return split_tags(content)
    if not isinstance(content, list):
        raise RowRejected("bad-message", f"{where}: expected text or a list of parts, "
                                         f"got {type(content).__name__}")
    parts: list[Any] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append(IMAGE)
        elif kind == "text" and isinstance(part.get("text"), str):
            parts.extend(split_tags(part["text"]))
        else:
            raise RowRejected("bad-message", f"{where}[{index}]: expected a part of type "
                                             "'image' or 'text' (with a 'text' string)")
    return parts


def parse_messages(raw: Any, *, role_key: str, content_key: str, where: str) -> list[Message]:
    """Read a foreign message list (``[{role_key: ..., content_key: ...}, ...]``).

    Raises:
        RowRejected: when it is not a non-empty list of such objects.
    """
    if not isinstance(raw, list) or not raw:
        raise RowRejected("no-messages", f"{where}: expected a non-empty list of messages")
    messages = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get(role_key), str):
            raise RowRejected("bad-message", f"{here}: expected an object with a "
                                             f"{role_key!r} string")
        if content_key not in item:
            raise RowRejected("bad-message", f"{here}: no {content_key!r}")
        messages.append(Message(item[role_key].strip().lower(),
                                content_parts(item[content_key], f"{here}.{content_key}")))
    return messages


def tagged_text(parts: list[Any]) -> str:
    """The text of ``parts`` with each image slot written as an ``<image>`` tag."""
    return "".join(IMAGE_TAG if part is IMAGE else part for part in parts)


def _user_turn_text(message: Message, where: str, warnings: list[RowWarning]) -> str:
    parts = message.parts
    first_text = next((index for index, part in enumerate(parts)
                       if part is not IMAGE and part.strip()), len(parts))
    leading = sum(part is IMAGE for part in parts[:first_text])
    moved = message.image_slots - leading
    if moved:
        warnings.append(RowWarning(
            "tag-moved",
            f"{where}: {moved} image tag(s) after text moved to the start of the "
            "turn (phiv places a turn's images before its text)",
        ))
    text = message.text
    return text.lstrip() if leading else text


@dataclass
class TurnPlan:
    """A foreign conversation checked and laid out as phiv turns, before its images are
    placed: each turn's ``images`` is still a count of image slots."""

    turns: list[dict[str, Any]]
    system: str | None
    warnings: list[RowWarning]

    @property
    def image_count(self) -> int:
        return sum(turn["images"] for turn in self.turns)

    def check_image_count(self, images: int) -> None:
        """Raise ``RowRejected("tag-count-mismatch")`` unless there are ``images`` slots."""
        if self.image_count != images:
            raise RowRejected(
                "tag-count-mismatch",
                f"{self.image_count} image tag(s) in the text but {images} image(s) in the "
                "image list",
            )

    def to_record(self, images: list[str], *, record_id: str, source: str | None = None,
                  meta: dict[str, Any] | None = None) -> Record:
        """The record, with ``images`` (phiv paths, one per slot, in order) placed.

        Raises:
            RowRejected: when the count differs or the record is invalid.
        """
        self.check_image_count(len(images))
        meta = dict(meta) if meta else {}
        if self.system is not None:
            meta["system"] = self.system
        remaining = iter(images)
        turns = [{**turn, "images": [next(remaining) for _ in range(turn["images"])]}
                 for turn in self.turns]
        try:
            return Record.model_validate({"id": record_id, "source": source,
                                          "conversations": turns, "meta": meta or None})
        except ValidationError as error:
            first = error.errors()[0]
            raise RowRejected("invalid-record",
                              f"{format_field_path(first['loc'])}: {first['msg']}") from None


def plan_turns(messages: list[Message], field: str = "messages") -> TurnPlan:
    """Check a foreign conversation and lay it out as phiv turns.

    Args:
        messages: the conversation, roles already named ``user``/``human``,
            ``assistant``/``gpt`` or ``system``.
        field: the name of the message list in the foreign row, for messages.

    Returns:
        The :class:`TurnPlan` (with the warnings about changes made to fit phiv).

    Raises:
        RowRejected: when roles do not alternate, an image sits in an assistant or system
            message, a text is empty, or there is no user message.
    """
    warnings: list[RowWarning] = []
    system = None
    start = 0
    if messages and messages[0].role in SYSTEM_ROLES:
        if messages[0].image_slots:
            raise RowRejected("image-in-system", f"{field}[0]: an image tag in a system message")
        system = messages[0].text
        warnings.append(RowWarning(
            "system-kept-in-meta",
            "the system message is kept in meta.system (phiv does not train on system prompts)",
        ))
        start = 1
    turns: list[dict[str, Any]] = []
    for index in range(start, len(messages)):
        message = messages[index]
        where = f"{field}[{index}]"
        expect_user = (index - start) % 2 == 0
        roles = USER_ROLES if expect_user else ASSISTANT_ROLES
        if message.role not in roles:
            wanted = "user" if expect_user else "assistant"
            raise RowRejected(
                "bad-role",
                f"{where}: role {message.role!r} where a {wanted} message belongs "
                "(messages must alternate user, assistant)",
            )
        if expect_user:
            text = _user_turn_text(message, where, warnings)
            if not text.strip():
                raise RowRejected(
                    "empty-text",
                    f"{where}: no user text besides image tags (phiv needs text in "
                    "every user turn)",
                )
            turns.append({"images": message.image_slots, "user": text, "assistant": None})
        else:
            if message.image_slots:
                raise RowRejected("image-in-assistant",
                                  f"{where}: an image tag in an assistant message")
            if not message.text.strip():
                raise RowRejected("empty-text", f"{where}: empty assistant message")
            turns[-1]["assistant"] = message.text
    if not turns:
        raise RowRejected("no-messages", "the conversation has no user message")
    return TurnPlan(turns, system, warnings)


def messages_to_record(messages: list[Message], images: list[str], *, record_id: str,
                       source: str | None = None, meta: dict[str, Any] | None = None,
                       field: str = "messages") -> tuple[Record, list[RowWarning]]:
    """Build a phiv record from a foreign conversation and its image list
    (:func:`plan_turns`, then :meth:`TurnPlan.to_record`).

    Args:
        messages: the conversation (see :func:`plan_turns`).
        images: phiv image paths (relative to the images root), one per image slot, in order.
        record_id: the record's id.
        source: the record's ``source``.
        meta: the record's ``meta`` (a system message is added to it as ``"system"``).
        field: the name of the message list in the foreign row, for messages.

    Returns:
        The record and the warnings about changes that were made to fit it.

    Raises:
        RowRejected: when the slots and images disagree, roles do not alternate, an image
            sits in an assistant message, a text is empty, or the record is invalid.
    """
    plan = plan_turns(messages, field)
    return plan.to_record(images, record_id=record_id, source=source, meta=meta), plan.warnings


def record_to_messages(record: Record) -> list[Message]:
    """The conversation of a phiv record as messages with image slots at turn starts.

    Raises:
        RowRejected: when a text holds a literal ``<image>`` (it would read as a tag).
    """
    messages: list[Message] = []
    for index, turn in enumerate(record.conversations):
        for role, text in (("user", turn.user), ("assistant", turn.assistant)):
            if text is not None and IMAGE_TAG in text:
                raise RowRejected(
                    "literal-tag",
                    f"conversations[{index}].{role} holds the literal text {IMAGE_TAG!r}, which "
                    "the other format would read as an image tag",
                )
        messages.append(Message("user", [IMAGE] * len(turn.images) + [turn.user]))
        if turn.assistant is not None:
            messages.append(Message("assistant", [turn.assistant]))
    return messages


def leading_tags_text(message: Message, separator: str = "\n") -> str:
    """A user message as LLaVA writes it: one ``<image>`` per line, then the text."""
    return "".join(IMAGE_TAG + separator for _ in range(message.image_slots)) + message.text
