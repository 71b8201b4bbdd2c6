"""Image tags against image lists: the reconciliation every format shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from phiv_data.errors import DataError
from phiv_data.interop.common import iter_json_rows, relative_image_path
from phiv_data.interop.tags import (
    IMAGE,
    Message,
    RowRejected,
    content_parts,
    messages_to_record,
    record_to_messages,
    split_tags,
)
from phiv_data.schema import Record


def user(text: str) -> Message:
    return Message("user", split_tags(text))


def answer(text: str) -> Message:
    return Message("assistant", [text])


def test_split_tags_keeps_order():
    assert split_tags("<image>\nA <image> B") == [IMAGE, "\nA ", IMAGE, " B"]
    assert split_tags("plain") == ["plain"]


def test_leading_tags_become_turn_images_and_whitespace_goes():
    record, warnings = messages_to_record(
        [user("<image>\n<image>\nWhat?"), answer("This."), user("<image>Next?"), answer("Ok")],
        ["a.jpg", "b.jpg", "c.jpg"], record_id="x")
    assert [turn.images for turn in record.conversations] == [["a.jpg", "b.jpg"], ["c.jpg"]]
    assert [turn.user for turn in record.conversations] == ["What?", "Next?"]
    assert warnings == []


def test_whitespace_is_only_dropped_after_leading_tags():
    record, warnings = messages_to_record([user("  indented"), answer("A"),
                                           user(" \n<image>\n Q"), answer("B")],
                                          ["a.jpg"], record_id="x")
    assert [turn.user for turn in record.conversations] == ["  indented", "Q"]
    assert record.conversations[1].images == ["a.jpg"] and warnings == []


def test_a_tag_after_text_moves_to_the_start_with_a_warning():
    record, warnings = messages_to_record([user("Compare <image> with that."), answer("Ok")],
                                          ["a.jpg"], record_id="x")
    assert record.conversations[0].images == ["a.jpg"]
    assert record.conversations[0].user == "Compare  with that."
    assert [warning.code for warning in warnings] == ["tag-moved"]
    assert "messages[0]" in warnings[0].message


@pytest.mark.parametrize(("messages", "images", "code", "match"), [
    ([user("<image>Q"), answer("A")], [], "tag-count-mismatch", "1 image tag.*but 0 image"),
    ([user("Q"), answer("A")], ["a.jpg"], "tag-count-mismatch", "0 image tag.*but 1 image"),
    ([user("<image><image>Q"), answer("A")], ["a.jpg"], "tag-count-mismatch", "2 image tag"),
    ([user("Q"), Message("assistant", [IMAGE, "A"])], ["a.jpg"], "image-in-assistant",
     r"messages\[1\]"),
    ([answer("A"), user("Q")], [], "bad-role", r"messages\[0\]: role 'assistant'"),
    ([user("Q"), user("Q2")], [], "bad-role", "alternate"),
    ([user("<image>\n  "), answer("A")], ["a.jpg"], "empty-text", "no user text"),
    ([user("Q"), answer("  ")], [], "empty-text", "empty assistant"),
    ([Message("function", ["x"])], [], "bad-role", "'function'"),
    ([Message("system", ["be brief"])], [], "no-messages", "no user message"),
])
def test_rows_that_cannot_be_records_are_rejected_with_a_reason(messages, images, code, match):
    with pytest.raises(RowRejected, match=match) as caught:
        messages_to_record(messages, images, record_id="x")
    assert caught.value.code == code


def test_system_message_is_kept_in_meta_and_trailing_user_is_unlabeled():
    record, warnings = messages_to_record(
        [Message("system", ["Be brief."]), user("<image>Q"), answer("A"), user("More?")],
        ["a.jpg"], record_id="x", meta={"k": 1}, field="conversations")
    assert record.meta == {"k": 1, "system": "Be brief."}
    assert not record.labeled and record.conversations[-1].user == "More?"
    assert [warning.code for warning in warnings] == ["system-kept-in-meta"]


def test_invalid_record_fields_are_rejected_not_raised():
    with pytest.raises(RowRejected, match="id") as caught:
        messages_to_record([user("Q"), answer("A")], [], record_id="")
    assert caught.value.code == "invalid-record"


def test_typed_parts_count_as_slots_and_bad_parts_are_rejected():
    assert content_parts([{"type": "image"}, {"type": "text", "text": "hi"}], "m") == [IMAGE, "hi"]
    with pytest.raises(RowRejected, match=r"m\[0\]: expected a part"):
        content_parts([{"type": "video"}], "m")


def test_record_to_messages_refuses_a_literal_tag():
    record = Record.model_validate({"id": "x", "conversations": [
        {"images": [], "user": "what is <image>?", "assistant": "a tag"}]})
    with pytest.raises(RowRejected, match=r"conversations\[0\]\.user holds the literal"):
        record_to_messages(record)


def test_json_array_rows_keep_the_line_they_start_on(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1,\n   "b": 2},\n\n  {"a": 3}, 5,\n  {"a": 4}\n]\n')
    assert list(iter_json_rows(path)) == [(2, {"a": 1, "b": 2}), (5, {"a": 3}), (5, 5),
                                         (6, {"a": 4})]


def test_json_lines_bad_line_is_a_rejected_row_and_the_rest_still_count(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{oops\n\n{"a": 2}\n')
    rows = list(iter_json_rows(path))
    assert [line for line, _ in rows] == [1, 2, 4]
    assert isinstance(rows[1][1], RowRejected) and rows[1][1].code == "bad-json"


def test_a_broken_json_array_names_its_line(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"a": 1},\n{"a": \n]\n')
    with pytest.raises(DataError, match=r"a\.json:4: not valid JSON"):
        list(iter_json_rows(path))


def test_image_paths_are_made_relative_to_the_root(tmp_path: Path):
    root = tmp_path / "root"
    assert relative_image_path("./x/../y/a.jpg", root) == "y/a.jpg"
    assert relative_image_path(str(root / "s" / "b.jpg"), root) == "s/b.jpg"
    for bad, code in [("../a.jpg", "image-outside-root"), ("/elsewhere/a.jpg",
                      "image-outside-root"), ("a\\b.jpg", "bad-image"), ("", "bad-image"),
                      (3, "bad-image")]:
        with pytest.raises(RowRejected) as caught:
            relative_image_path(bad, root)
        assert caught.value.code == code
