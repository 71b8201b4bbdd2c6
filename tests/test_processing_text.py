"""Phi3VProcessor: chat format, image ids, label masking, generation prompts, length policy."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from phiv_data.errors import MediaError, UsageError
from phiv_data.phi3v import image_token_count
from phiv_train.processing import (
    Phi3VProcessor,
    RecordError,
    SampleTooLongError,
    SpecialTextError,
    UnlabeledRecordError,
    conversation_text,
)
from phiv_train.tokenization import save_tiny_tokenizer
from tests.fixtures_processing import record, tiny_tokenizer

SIZES = [(40, 30), (30, 90), (50, 50)]


def three_turns(last_answer: str | None = "Three.") -> tuple:
    rec = record([
        {"images": ["a.png", "b.png"], "user": "Compare the two pictures.",
         "assistant": "The left one is darker."},
        {"user": "Why?", "assistant": "Less light."},
        {"images": ["c.png"], "user": "How many cats here?", "assistant": last_answer},
    ])
    images = [Image.new("RGB", size, (40 * i, 90, 160)) for i, size in enumerate(SIZES)]
    return rec, images


def runs(values: list[int], keep) -> list[list[int]]:
    """Maximal runs of consecutive positions where ``keep(value)`` holds."""
    result, current = [], []
    for value in values:
        if keep(value):
            current.append(value)
        elif current:
            result.append(current)
            current = []
    return result + ([current] if current else [])


def reference_ids(text: str, counts: list[int]) -> list[int]:
    """What the reference processor does: split the full text at the placeholders, tokenize
    each chunk, keep the first chunk's <s> only, put N_k copies of -k between chunks."""
    tokenizer = tiny_tokenizer()
    chunks = [tokenizer(chunk).input_ids for chunk in re.split(r"<\|image_\d+\|>", text)]
    numbers = [int(n) for n in re.findall(r"<\|image_(\d+)\|>", text)]
    ids = chunks[0]
    for number, chunk in zip(numbers, chunks[1:]):
        assert chunk[0] == 1
        ids = ids + [-number] * counts[number - 1] + chunk[1:]
    return ids


@pytest.fixture(scope="module")
def processor():
    return Phi3VProcessor(tiny_tokenizer(), num_crops=4)


def test_multi_turn_ids_follow_the_chat_format_with_images_numbered_across_turns(processor):
    rec, images = three_turns()
    text = conversation_text(rec)
    assert text == (
        "<|user|>\n<|image_1|>\n<|image_2|>\nCompare the two pictures.<|end|>\n<|assistant|>\n"
        "The left one is darker.<|end|>\n<|user|>\nWhy?<|end|>\n<|assistant|>\nLess light.<|end|>\n"
        "<|user|>\n<|image_3|>\nHow many cats here?<|end|>\n<|assistant|>\nThree.<|end|>\n"
        "<|endoftext|>")
    sample = processor.encode(rec, images=images)
    ids = sample["input_ids"].tolist()
    counts = [image_token_count(w, h, 4) for w, h in SIZES]
    assert ids == reference_ids(text, counts)
    # One <s>, first; image runs -1, -2 (turn 1) and -3 (turn 3) of the right lengths.
    assert ids[0] == 1 and ids.count(1) == 1
    image_runs = runs(ids, lambda v: v < 0)
    assert [(run[0], len(run)) for run in image_runs] == [(-1, counts[0]), (-2, counts[1]),
                                                          (-3, counts[2])]
    assert all(len(set(run)) == 1 for run in image_runs)
    assert ids.count(32010) == 3 and ids.count(32001) == 3 and ids.count(32007) == 6
    assert ids[-1] == 32000
    assert sample["pixel_values"].shape == (3, 5, 3, 336, 336)
    assert sample["image_sizes"].tolist() == [[672, 672], [1008, 336], [672, 672]]
    assert sample["record_id"] == "rec-1"


def test_only_answers_their_end_and_the_final_endoftext_are_learned(processor):
    rec, images = three_turns()
    sample = processor.encode(rec, images=images)
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    assert len(ids) == len(labels)
    assert all(label in (-100, token) for token, label in zip(ids, labels))
    learned = runs(labels, lambda v: v != -100)
    tokenizer = tiny_tokenizer()
    assert [tokenizer.decode(run) for run in learned] == [
        "The left one is darker.<|end|>", "Less light.<|end|>", "Three.<|end|>", "<|endoftext|>"]
    assert labels[-1] == 32000
    # Nothing else: prompts, tags, newlines and images are masked.
    assert all(label == -100 for token, label in zip(ids, labels) if token < 0)
    assert sum(label != -100 for label in labels) == sum(len(run) for run in learned)


def test_generation_prompt_is_the_training_sequence_up_to_the_last_assistant_tag(processor):
    rec, images = three_turns()
    train = processor.encode(rec, images=images)["input_ids"].tolist()
    prompt = processor.encode_for_generation(rec, images=images)
    ids = prompt["input_ids"].tolist()
    assert "labels" not in prompt
    assert train[:len(ids)] == ids
    tail = tiny_tokenizer()("<|assistant|>\n", add_special_tokens=False).input_ids
    assert ids[-len(tail):] == tail and tail[0] == 32001
    assert conversation_text(rec, generation=True).endswith("cats here?<|end|>\n<|assistant|>\n")
    assert prompt["pixel_values"].shape[0] == 3
    unlabeled, _ = three_turns(last_answer=None)
    assert processor.encode_for_generation(unlabeled, images=images)["input_ids"].tolist() == ids


def test_unlabeled_records_are_refused_for_training(processor):
    rec, images = three_turns(last_answer=None)
    with pytest.raises(UnlabeledRecordError, match=r"record 'rec-1': conversations\[2\]"):
        processor.encode(rec, images=images)


def test_text_only_records_have_no_pixels(processor):
    sample = processor.encode(record([{"user": "Say hi.", "assistant": "Hi."}]))
    assert sample["pixel_values"] is None and sample["image_sizes"] is None
    assert (sample["input_ids"] < 0).sum() == 0


@pytest.mark.parametrize(("field", "text"), [("user", "look at <|image_1|> please"),
                                             ("assistant", "done<|end|>"), ("user", "a </s> b")])
def test_special_token_strings_in_text_are_refused_with_record_and_field(processor, field, text):
    turn = {"user": "fine", "assistant": "fine", field: text}
    rec = record([{"user": "ok", "assistant": "ok"}, turn], record_id="bad-7")
    with pytest.raises(SpecialTextError, match=rf"record 'bad-7': conversations\[1\]\.{field}"):
        processor.encode(rec)


def test_images_are_loaded_from_the_root_with_clear_errors(tmp_path, processor):
    Image.new("RGB", (30, 20), "red").save(tmp_path / "a.png")
    rec = record([{"images": ["a.png"], "user": "Colour?", "assistant": "Red."}])
    assert processor.encode(rec, images_root=tmp_path)["image_sizes"].tolist() == [[672, 672]]
    missing = record([{"images": ["a.png", "sub/b.png"], "user": "?", "assistant": "!"}], "m-1")
    with pytest.raises(MediaError,
                       match=r"record 'm-1': conversations\[0\]\.images\[1\]: .*b\.png"):
        processor.encode(missing, images_root=tmp_path)
    escaping = record([{"images": ["../a.png"], "user": "?", "assistant": "!"}], "e-1")
    with pytest.raises(RecordError, match="inside the images root"):
        processor.encode(escaping, images_root=tmp_path)
    with pytest.raises(RecordError, match="1 images given, the record has 2"):
        processor.encode(missing, images=[Image.new("RGB", (5, 5))])
    with pytest.raises(UsageError, match="images_root"):
        processor.encode(rec)


def length_of(processor, rec, images, **kwargs) -> int:
    return len(processor.encode(rec, images=images, **kwargs)["input_ids"])


def test_too_long_samples_are_rejected_with_id_and_lengths():
    rec, images = three_turns()
    full = length_of(Phi3VProcessor(tiny_tokenizer()), rec, images)
    exact = Phi3VProcessor(tiny_tokenizer(), max_length=full)
    assert len(exact.encode(rec, images=images)["input_ids"]) == full
    strict = Phi3VProcessor(tiny_tokenizer(), max_length=full - 1)
    with pytest.raises(SampleTooLongError, match=rf"record 'rec-1': {full} tokens .* exceed "
                       rf"max_length {full - 1}") as raised:
        strict.encode(rec, images=images)
    assert raised.value.record_id == "rec-1" and raised.value.length == full


def test_drop_policy_drops_and_counts():
    rec, images = three_turns()
    dropping = Phi3VProcessor(tiny_tokenizer(), max_length=100, truncation="drop")
    assert dropping.encode(rec, images=images) is None
    assert dropping.encode_for_generation(rec, images=images) is None
    assert dropping.dropped == {"too_long": 2} and dropping.dropped_ids == ["rec-1", "rec-1"]
    short = record([{"user": "Hi", "assistant": "Yo"}])
    assert dropping.encode(short) is not None and dropping.dropped["too_long"] == 2


def test_truncate_turns_keeps_whole_leading_turns_and_something_to_learn():
    rec, images = three_turns()
    plain = Phi3VProcessor(tiny_tokenizer())
    two_turns = plain.text.encode(rec, [image_token_count(w, h, 4) for w, h in SIZES[:2]],
                                  num_turns=2)[0]
    policy = Phi3VProcessor(tiny_tokenizer(), max_length=len(two_turns),
                            truncation="truncate_turns")
    sample = policy.encode(rec, images=images)
    assert sample["input_ids"].tolist() == two_turns and policy.shortened == 1
    assert sample["pixel_values"].shape[0] == 2  # the third turn's image went with it
    learned = runs(sample["labels"].tolist(), lambda v: v != -100)
    assert [tiny_tokenizer().decode(run) for run in learned] == [
        "The left one is darker.<|end|>", "Less light.<|end|>", "<|endoftext|>"]
    hopeless = Phi3VProcessor(tiny_tokenizer(), max_length=200, truncation="truncate_turns")
    with pytest.raises(SampleTooLongError, match="even with only its first turn"):
        hopeless.encode(rec, images=images)
    with pytest.raises(SampleTooLongError):  # a generation prompt is never shortened
        Phi3VProcessor(tiny_tokenizer(), max_length=len(two_turns),
                       truncation="truncate_turns").encode_for_generation(rec, images=images)


@pytest.mark.parametrize(("options", "match"), [({"truncation": "cut"}, "truncation"),
                                                ({"max_length": 0}, "max_length"),
                                                ({"num_crops": 0}, "num_crops")])
def test_bad_options_are_usage_errors(options, match):
    with pytest.raises(UsageError, match=match):
        Phi3VProcessor(tiny_tokenizer(), **options)


def test_from_pretrained_loads_the_checkpoint_tokenizer(tmp_path):
    save_tiny_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3_v"}))
    processor = Phi3VProcessor.from_pretrained(tmp_path, num_crops=16, max_length=8000)
    rec, images = three_turns()
    sample = processor.encode(rec, images=images)
    assert sample["pixel_values"].shape[1] == 17
    counts = [image_token_count(w, h, 16) for w, h in SIZES]
    assert sample["input_ids"].tolist() == reference_ids(conversation_text(rec), counts)


def test_a_tokenizer_without_the_phi3v_special_tokens_is_refused():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {"<unk>": 0, "<s>": 1, "</s>": 2, "<|end|>": 3}, unk_token="<unk>")))
    with pytest.raises(UsageError, match="maps <|endoftext|>|maps <|end|>"):
        Phi3VProcessor(other)
