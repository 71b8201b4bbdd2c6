"""Training data: validated shards only, lazy reading, labels of multi-turn records, lengths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fixtures_train import colour_dataset, colour_record, write_dataset
from torch.utils.data import DataLoader

from phiv_data.errors import DataError, ManifestError, UsageError
from phiv_train.cli import main
from phiv_train.config import TrainConfig
from phiv_train.data import (
    RecordDataset,
    RecordIndex,
    refuse_unlabeled,
    resolve_sources,
    scan_lengths,
)
from phiv_train.processing.processor import Phi3VProcessor
from phiv_train.recipe import _evaluation_sources, _training_sources, default_num_crops


@pytest.fixture()
def processor(checkpoint):
    return Phi3VProcessor.from_pretrained(checkpoint, num_crops=1)


def test_directory_means_train_split_and_val_for_evaluation(tmp_path):
    data = colour_dataset(tmp_path / "d", train=3, val=2, test=2)
    config = TrainConfig(data=[str(data)])
    train = _training_sources(config)
    assert [source.path.name for source in train] == ["colours_train.jsonl"]
    assert [source.path.name for source in _evaluation_sources(config)] == ["colours_val.jsonl"]
    assert train[0].images_root == data / "images"
    # the manifest itself names the same shards
    by_manifest = TrainConfig(data=[str(data / "manifest.json")])
    assert [source.path for source in _training_sources(by_manifest)] == [source.path for source in train]
    assert [source.path.name for source in _evaluation_sources(by_manifest)] == ["colours_val.jsonl"]
    # explicit shard files are taken as given
    explicit = TrainConfig(data=[str(data / "colours_train.jsonl")],
                           eval_data=[str(data / "colours_test.jsonl")])
    assert [s.path.name for s in _evaluation_sources(explicit)] == ["colours_test.jsonl"]


def test_unvalidated_shards_are_refused_with_the_command_to_run(tmp_path, capsys):
    data = write_dataset(tmp_path / "d", {"train": [colour_record("train", 0, "red")]},
                         validate=False)
    with pytest.raises(ManifestError, match=r"never validated.*phiv-data validate .*colours_train.jsonl "
                                             r"--images-root .*images"):
        resolve_sources([data], split="train")
    with pytest.raises(ManifestError, match="never validated.*phiv-data validate"):
        resolve_sources([data / "colours_train.jsonl"], split=None)
    with pytest.raises(ManifestError, match="never validated.*phiv-data validate"):  # --eval-data
        _evaluation_sources(TrainConfig(eval_data=[str(data / "colours_train.jsonl")]))
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--output-dir", str(tmp_path / "out"), "--model", "unused"])
    assert exit_info.value.code == 1
    assert "phiv-data validate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_altered_shards_are_refused(tmp_path):
    data = colour_dataset(tmp_path / "d", train=2, val=0)
    shard = data / "colours_train.jsonl"
    shard.write_bytes(shard.read_bytes().replace(b'"red"', b'"blue"', 1))
    with pytest.raises(ManifestError, match="bytes changed.*phiv-data validate"):
        resolve_sources([data], split="train")
    with pytest.raises(ManifestError, match="bytes changed"):
        resolve_sources([shard], split=None)


def test_files_outside_a_manifest_are_refused(tmp_path):
    data = colour_dataset(tmp_path / "d", train=2, val=0)
    stray = data / "extra_train.jsonl"
    stray.write_bytes((data / "colours_train.jsonl").read_bytes())
    with pytest.raises(ManifestError, match="not listed in .*manifest.json.*phiv-data validate"):
        resolve_sources([stray], split=None)
    lone = tmp_path / "lone" / "x_train.jsonl"
    lone.parent.mkdir()
    lone.write_bytes(stray.read_bytes())
    with pytest.raises(ManifestError, match="no manifest.json beside it"):
        resolve_sources([lone], split=None)
    with pytest.raises(UsageError, match="no such file"):
        resolve_sources([tmp_path / "missing.jsonl"], split=None)


def test_no_train_split_is_explained(tmp_path):
    data = write_dataset(tmp_path / "d", {"val": [colour_record("val", 0, "red")]})
    with pytest.raises(UsageError, match=r"no train split in the manifest \(splits: val\)"):
        _training_sources(TrainConfig(data=[str(data)]))


def test_unlabeled_records_are_refused_for_training(tmp_path):
    data = write_dataset(tmp_path / "d", {"train": [colour_record("train", 0, "red"),
                                                    colour_record("train", 1, "red", labeled=False)]})
    with pytest.raises(DataError, match=r"cannot train on unlabeled records: .*1 of 2 records"):
        refuse_unlabeled(resolve_sources([data], split="train"))


def test_index_is_lazy_and_reads_by_offset(tmp_path):
    data = colour_dataset(tmp_path / "d", train=5, val=3)
    sources = resolve_sources([data], split=None)
    index = RecordIndex(sources)
    assert len(index) == 8
    # only offsets, lengths and line numbers are kept, no records
    assert all(isinstance(array, np.ndarray) for array in index._offsets + index._lengths)
    record, source, line = index.read(6)
    assert (record.id, source.path.name, line) == ("val-0000000001", "colours_val.jsonl", 2)
    assert [index.read(i)[0].id for i in range(5)] == [f"train-{i:010d}" for i in range(5)]
    assert len(RecordIndex(sources, limit=3)) == 3
    copy = pickle.loads(pickle.dumps(index))
    assert copy.read(7)[0].id == "val-0000000002"
    with pytest.raises(IndexError):
        index.read(8)


def test_records_are_encoded_in_data_loader_workers(tmp_path, processor):
    data = colour_dataset(tmp_path / "d", train=4, val=0)
    index = RecordIndex(resolve_sources([data], split="train"))

    def encode(record, images_root):
        import os

        sample = processor.encode(record, images_root)
        sample["pid"] = os.getpid()
        return sample

    dataset = RecordDataset(index, encode)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
    items = [item for batch in loader for item in batch]
    assert sorted(item["record_id"] for item in items) == [f"train-{i:010d}" for i in range(4)]
    import os

    assert all(item["pid"] != os.getpid() for item in items)
    assert items[0]["pixel_values"].shape == (1, 2, 3, 336, 336)


def test_multi_turn_record_learns_every_answer_and_nothing_else(tmp_path, processor):
    record = {"id": "train-0000000000", "conversations": [
        {"images": ["train/red/0.png"], "user": "What colour is the first image?",
         "assistant": "red"},
        {"images": [], "user": "Are you sure?", "assistant": "Yes, quite sure."},
        {"images": ["train/blue/1.png"], "user": "And this one?", "assistant": "blue"}]}
    data = write_dataset(tmp_path / "d", {"train": [record]})
    index = RecordIndex(resolve_sources([data], split="train"))
    sample = RecordDataset(index, processor.encode)[0]
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    learned = [position for position, label in enumerate(labels) if label != -100]
    assert all(labels[position] == ids[position] for position in learned)
    spans, current = [], [learned[0]]
    for position in learned[1:]:
        if position == current[-1] + 1:
            current.append(position)
        else:
            spans.append(current)
            current = [position]
    spans.append(current)
    decode = processor.tokenizer.decode
    texts = [decode([ids[p] for p in span]).strip() for span in spans]
    assert texts == ["red<|end|>", "Yes, quite sure.<|end|>", "blue<|end|>", "<|endoftext|>"]
    # images are numbered over the whole conversation, and never learned
    assert sorted({i for i in ids if i < 0}) == [-2, -1]
    assert all(labels[p] == -100 for p, i in enumerate(ids) if i < 0)
    # the prompt side (user turns, tags) is never learned
    prompt = decode([i for i, label in zip(ids, labels) if label == -100 and i >= 0])
    assert "What colour is the first image?" in prompt and "Are you sure?" in prompt


def test_length_scan_policies(tmp_path, processor):
    short = colour_record("train", 0, "red")
    long = {"id": "train-0000000001", "conversations": [
        {"images": ["train/red/1.png"], "user": "First?", "assistant": "red"},
        {"images": ["train/blue/2.png"], "user": "Second?", "assistant": "blue"}]}
    data = write_dataset(tmp_path / "d", {"train": [short, long]})
    index = RecordIndex(resolve_sources([data], split="train"))
    unlimited = scan_lengths(index, processor, max_length=None, policy="error")
    assert unlimited.keep == [0, 1]
    measured = scan_lengths(index, processor, max_length=10_000, policy="error")
    one_image = measured.lengths[0]
    assert measured.lengths[1] > 2 * 313 and one_image > 313  # 313 tokens per image at 1 crop
    # the scan counts exactly what the processor produces
    assert one_image == len(processor.encode(index.read(0)[0], index.read(0)[1].images_root)["input_ids"])
    limit = int(one_image) + 20
    with pytest.raises(DataError, match=r"1 training records exceed --max-length .*colours_train.jsonl:2 "
                                        r"\(train-0000000001"):
        scan_lengths(index, processor, max_length=limit, policy="error")
    dropped = scan_lengths(index, processor, max_length=limit, policy="drop")
    assert dropped.keep == [0] and dropped.too_long[0]["id"] == "train-0000000001"
    kept = scan_lengths(index, processor, max_length=limit, policy="truncate_turns")
    assert kept.keep == [0, 1]


def test_default_num_crops_follows_the_recipe(tmp_path):
    single = resolve_sources([colour_dataset(tmp_path / "a", train=2, val=0)], split="train")
    assert default_num_crops(single) == 16
    frames = {"id": "train-0000000000", "conversations": [
        {"images": [f"train/red/{k}.png" for k in range(8)], "user": "Which class?",
         "assistant": "red"}]}
    multi = resolve_sources([write_dataset(tmp_path / "b", {"train": [frames]})], split="train")
    assert default_num_crops(multi) == 4
