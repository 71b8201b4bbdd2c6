"""Token budget: image tokens from header sizes, estimated and exact text tokens."""

from __future__ import annotations

import orjson
import pytest
from PIL import Image

from phiv_data.errors import UsageError
from phiv_data.phi3v import image_token_count
from phiv_data.schema import Record
from phiv_data.validate import ValidationOptions, validate_paths
from phiv_data.validate.tokens import TokenCounter, record_length


def dataset(tmp_path, records):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (336, 336), (1, 1, 1)).save(root / "square.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.new("RGB", (672, 336), (2, 2, 2)).save(root / "turned.jpg", exif=exif)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path


def one(record_id, images, user="Which class?", assistant="Archery"):
    return {"id": record_id, "conversations": [{"images": images, "user": user,
                                                 "assistant": assistant}]}


def test_image_tokens_come_from_the_exif_rotated_header_size(tmp_path):
    path = dataset(tmp_path, [one("a", ["square.jpg"]), one("b", ["turned.jpg"])])
    report = validate_paths([path], ValidationOptions(workers=1, max_length=100_000))
    square, turned = report.files[0].token_lengths
    assert image_token_count(336, 336) == 757
    assert turned - square == image_token_count(336, 672) - 757 != 0
    assert image_token_count(336, 672) != image_token_count(672, 336)
    assert report.ok and report.tokens_estimated
    assert "estimated" in report.render_text()


def test_over_budget_warns_and_nothing_to_learn_fails(tmp_path):
    path = dataset(tmp_path, [one("short", []), one("long", ["square.jpg", "square.jpg"])])
    report = validate_paths([path], ValidationOptions(workers=1, max_length=1200))
    codes = [(issue.code, issue.line) for issue in report.issues]
    assert codes == [("W-TOKENS-OVER", 2), ("E-TOKENS-NOTHING-TO-LEARN", 2)]
    assert "estimated" in report.issues[0].message
    relaxed = validate_paths([path], ValidationOptions(workers=1, max_length=4000))
    assert relaxed.issues == [] and relaxed.ok
    longest = relaxed.totals()["token_lengths"]["max"]
    assert longest > 1514
    # Room for the prompt but not for the whole answer: a warning only.
    near = validate_paths([path], ValidationOptions(workers=1, max_length=longest - 1))
    assert [issue.code for issue in near.issues] == ["W-TOKENS-OVER"] and near.ok


def test_no_token_checks_without_max_length(tmp_path):
    path = dataset(tmp_path, [one("long", ["square.jpg"] * 8)])
    report = validate_paths([path], ValidationOptions(workers=1))
    assert report.issues == [] and report.files[0].token_lengths == []


def test_fewer_crops_give_fewer_tokens(tmp_path):
    path = dataset(tmp_path, [one("a", ["turned.jpg"])])
    four = validate_paths([path], ValidationOptions(workers=1, max_length=10**6))
    sixteen = validate_paths([path], ValidationOptions(workers=1, max_length=10**6,
                                                       num_crops=16))
    assert sixteen.files[0].token_lengths[0] > four.files[0].token_lengths[0]


def test_tokenizer_option_errors_are_usage_errors(tmp_path):
    path = dataset(tmp_path, [one("a", [])])
    with pytest.raises(UsageError, match="--max-length"):
        validate_paths([path], ValidationOptions(tokenizer=tmp_path))
    with pytest.raises(UsageError, match="no tokenizer.json"):
        validate_paths([path], ValidationOptions(tokenizer=tmp_path, max_length=10))


def test_exact_counts_match_the_trainer_processor(tmp_path):
    """Needs the [train] extra (tokenizers, transformers) and the tiny tokenizer."""
    from phiv_train.processing.conversation import ConversationTokenizer
    from phiv_train.tokenization import load_tokenizer, save_tiny_tokenizer

    folder = save_tiny_tokenizer(tmp_path / "tokenizer")
    records = [one("a", ["square.jpg"]),
               one("b", ["turned.jpg", "square.jpg"], user="What is the date on the letter?",
                   assistant="March 3, 1998"),
               {"id": "c", "conversations": [
                   {"images": ["square.jpg"], "user": "Is this a cat?", "assistant": "No."},
                   {"images": [], "user": "And now?", "assistant": "Yes, a cat."}]}]
    path = dataset(tmp_path, records)
    report = validate_paths([path], ValidationOptions(workers=1, max_length=10**6,
                                                      tokenizer=folder))
    assert not report.tokens_estimated and report.ok
    encoder = ConversationTokenizer(load_tokenizer(folder))
    sizes = {"square.jpg": (336, 336), "turned.jpg": (336, 672)}
    for record, length in zip(records, report.files[0].token_lengths):
        parsed = Record.model_validate(record)
        counts = [image_token_count(*sizes[name]) for name in parsed.images]
        input_ids, labels = encoder.encode(parsed, counts)
        assert length == len(input_ids)
        first_label = next(index for index, label in enumerate(labels) if label != -100)
        _, first_answer = record_length(parsed, counts, TokenCounter(folder))
        assert abs(first_answer - first_label) <= 1
