"""Phi3VCollator: padding sides, attention from lengths, image concatenation order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from phiv_data.errors import DataError, UsageError
from phiv_train.processing import Phi3VCollator, Phi3VProcessor
from tests.fixtures_processing import noise_image, record, tiny_tokenizer


@pytest.fixture(scope="module")
def samples():
    processor = Phi3VProcessor(tiny_tokenizer(), num_crops=1)
    with_two = processor.encode(
        record([{"images": ["a", "b"], "user": "Same?", "assistant": "No."}], "two"),
        images=[noise_image(20, 10, seed=1), noise_image(10, 20, seed=2)])
    text_only = processor.encode(record([{"user": "Say hi.", "assistant": "Hi there."}], "text"))
    with_one = processor.encode(
        record([{"images": ["c"], "user": "What?", "assistant": "A cat."}], "one"),
        images=[noise_image(30, 30, seed=3)])
    return processor, [with_two, text_only, with_one]


@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_labels_and_attention_are_padded_on_the_chosen_side(samples, side):
    _, batch_samples = samples
    batch = Phi3VCollator(padding_side=side)(batch_samples)
    lengths = [len(s["input_ids"]) for s in batch_samples]
    width = max(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, width)
    assert batch["attention_mask"].dtype == torch.int64
    for row, (sample, length) in enumerate(zip(batch_samples, lengths)):
        real = slice(0, length) if side == "right" else slice(width - length, width)
        pad = slice(length, width) if side == "right" else slice(0, width - length)
        assert torch.equal(batch["input_ids"][row, real], sample["input_ids"])
        assert torch.equal(batch["labels"][row, real], sample["labels"])
        assert (batch["input_ids"][row, pad] == 32000).all()
        assert (batch["labels"][row, pad] == -100).all()
        assert batch["attention_mask"][row].sum() == length
        assert (batch["attention_mask"][row, real] == 1).all()


def test_real_endoftext_tokens_stay_attended(samples):
    _, batch_samples = samples
    batch = Phi3VCollator()(batch_samples)
    for row, sample in enumerate(batch_samples):
        last = len(sample["input_ids"]) - 1
        assert batch["input_ids"][row, last] == 32000  # the real <|endoftext|> = the pad id
        assert batch["attention_mask"][row, last] == 1
        assert batch["labels"][row, last] == 32000


def test_images_are_concatenated_in_sample_then_occurrence_order(samples):
    _, (with_two, text_only, with_one) = samples
    batch = Phi3VCollator()([with_one, text_only, with_two])
    assert batch["pixel_values"].shape == (3, 2, 3, 336, 336)
    assert torch.equal(batch["pixel_values"], torch.cat([with_one["pixel_values"],
                                                         with_two["pixel_values"]]))
    assert batch["image_sizes"].tolist() == (with_one["image_sizes"].tolist()
                                             + with_two["image_sizes"].tolist())
    # Image ids restart at -1 in every sample.
    assert batch["input_ids"][0].min() == -1 and batch["input_ids"][2].min() == -2


def test_text_only_batches_have_no_pixels_and_dropped_samples_are_skipped(samples):
    _, (_, text_only, _) = samples
    batch = Phi3VCollator(keep_record_ids=True)([None, text_only, None, text_only])
    assert batch["pixel_values"] is None and batch["image_sizes"] is None
    assert batch["input_ids"].shape[0] == 2 and batch["record_ids"] == ["text", "text"]
    with pytest.raises(DataError, match="every sample of this batch was dropped"):
        Phi3VCollator()([None, None])


def test_generation_prompts_batch_left_padded_without_labels(samples):
    processor, _ = samples
    prompts = [
        processor.encode_for_generation(record([{"images": ["a"], "user": "Describe it.",
                                                 "assistant": None}]),
                                        images=[Image.new("L", (8, 8), 3)]),
        processor.encode_for_generation(record([{"user": "Hi", "assistant": None}])),
    ]
    batch = Phi3VCollator(padding_side="left")(prompts)
    assert "labels" not in batch
    short = len(prompts[1]["input_ids"])
    assert torch.equal(batch["input_ids"][1, -short:], prompts[1]["input_ids"])
    assert batch["attention_mask"][1, :-short].sum() == 0
    assert batch["pixel_values"].shape[0] == 1


def test_mixing_training_and_generation_samples_or_crop_counts_is_an_error(samples):
    processor, (with_two, _, _) = samples
    prompt = processor.encode_for_generation(record([{"user": "Hi", "assistant": None}]))
    with pytest.raises(DataError, match="labels"):
        Phi3VCollator()([with_two, prompt])
    other = Phi3VProcessor(tiny_tokenizer(), num_crops=2).encode(
        record([{"images": ["x"], "user": "?", "assistant": "!"}]), images=[noise_image(9, 9)])
    with pytest.raises(DataError, match="different num_crops"):
        Phi3VCollator()([with_two, other])


def test_pad_to_multiple_of_and_option_checks(samples):
    _, batch_samples = samples
    batch = Phi3VCollator(pad_to_multiple_of=64)(batch_samples)
    assert batch["input_ids"].shape[1] % 64 == 0
    with pytest.raises(UsageError, match="padding_side"):
        Phi3VCollator(padding_side="middle")
