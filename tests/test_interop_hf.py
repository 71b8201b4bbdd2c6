"""Hugging Face `datasets` import/export: datasets made by `datasets` itself, local only."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from fixtures_interop import make_dataset, make_image, read_back
from PIL import Image

from phiv_data.errors import UsageError
from phiv_data.interop import ExportOptions, export_files, import_files


def test_export_is_a_dataset_with_an_image_sequence_feature(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    export_files("hf", [shard], tmp_path / "out", options=ExportOptions(hf_layout="disk"))
    dataset = datasets.load_from_disk(str(tmp_path / "out/demo_train"))
    assert isinstance(dataset.features["images"], datasets.List)
    assert isinstance(dataset.features["images"].feature, datasets.Image)
    first = dataset[0]
    assert [image.size for image in first["images"]] == [(40, 30), (48, 34), (56, 38)]
    assert first["messages"][0]["content"] == [
        {"type": "image", "text": None}, {"type": "image", "text": None},
        {"type": "text", "text": "Which is larger?"}]
    assert first["image_paths"] == ["a/one.jpg", "a/two.png", "b/three.jpg"]
    assert dataset[2]["messages"][-1]["role"] == "user"  # the unlabeled last turn
    parquet = export_files("hf", [shard], tmp_path / "pq")[0]
    assert parquet.outputs[0].endswith("demo_train.parquet")
    loaded = datasets.Dataset.from_parquet(str(tmp_path / "pq/demo_train.parquet"),
                                           cache_dir=str(tmp_path / "cache"))
    assert loaded.features["images"] == dataset.features["images"]


def _foreign_dataset(tmp_path: Path) -> datasets.Dataset:
    pictures = [Image.new("RGB", (20 + 10 * index, 20), colour)
                for index, colour in enumerate(["red", "blue", "green"])]
    return datasets.Dataset.from_dict(
        {
            "image": [pictures[0], pictures[1], None, pictures[2]],
            "messages": [
                [{"role": "user", "content": "<image>What colour?"},
                 {"role": "assistant", "content": "Red"}],
                [{"role": "user", "content": "What colour?"},  # no tag for its image
                 {"role": "assistant", "content": "Blue"}],
                [{"role": "user", "content": "No image"}, {"role": "assistant", "content": "Ok"}],
                [{"role": "user", "content": "<image>Colour?"},
                 {"role": "assistant", "content": "Green"}],
            ],
            "label": [0, 1, 2, 3],
        },
        features=datasets.Features({
            "image": datasets.Image(),
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "label": datasets.Value("int64"),
        }),
    )


@pytest.mark.parametrize("layout", ["disk", "parquet"])
def test_import_of_a_foreign_dataset(tmp_path: Path, layout: str):
    dataset = _foreign_dataset(tmp_path)
    if layout == "disk":
        source = tmp_path / "memes"
        dataset.save_to_disk(str(source))
    else:
        source = tmp_path / "memes.parquet"
        dataset.to_parquet(str(source))
    [report] = import_files("hf", [source], tmp_path / "out")
    assert (report.rows, report.written, report.rejected) == (4, 3, 1)
    assert [(issue.line, issue.code) for issue in report.issues] == [(2, "tag-count-mismatch")]
    records = read_back(tmp_path / "out/memes.jsonl")
    assert [record.id for record in records] == ["memes-0000000000", "memes-0000000002",
                                                 "memes-0000000003"]
    assert records[0].meta == {"extra_fields": {"label": 0}}
    first_image = records[0].conversations[0].images[0]
    assert first_image.startswith("memes/0000000001-0.")  # no stored name: row and position
    with Image.open(tmp_path / "out/images" / first_image) as image:
        assert image.size == (20, 20)
    with Image.open(tmp_path / "out/images" / records[2].conversations[0].images[0]) as image:
        assert image.size == (40, 20)


def test_path_only_images_resolve_against_the_images_root(tmp_path: Path):
    make_image(tmp_path / "pics/x.png", size=(9, 7))
    dataset = datasets.Dataset.from_dict({
        "images": [[{"bytes": None, "path": "x.png"}], [{"bytes": None, "path": "gone.png"}]],
        "conversations": [[{"from": "human", "value": "<image>\nQ"},
                           {"from": "gpt", "value": "A"}]] * 2,
    }, features=datasets.Features({
        "images": datasets.List(datasets.Image(decode=False)),
        "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
    }))
    dataset.to_parquet(str(tmp_path / "p.parquet"))
    [report] = import_files("hf", [tmp_path / "p.parquet"], tmp_path / "out",
                            images_root=tmp_path / "pics")
    assert report.written == 2 and report.by_code == {"missing-image": 1}
    assert (tmp_path / "out/images/x.png").read_bytes() == (tmp_path / "pics/x.png").read_bytes()


def test_a_dataset_dict_folder_asks_for_a_split(tmp_path: Path):
    dataset = _foreign_dataset(tmp_path)
    datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UsageError, match=r"DatasetDict \(test, train\).*dd/test"):
        import_files("hf", [tmp_path / "dd"], tmp_path / "out")


def test_export_leaves_out_rows_whose_images_are_missing(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    (tmp_path / "src/images/b/three.jpg").unlink()
    [report] = export_files("hf", [shard], tmp_path / "out")
    assert (report.written, report.rejected) == (2, 2)
    assert {issue.code for issue in report.issues} == {"missing-image"}


def test_a_rejected_row_writes_no_image(tmp_path: Path):
    dataset = datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (8, 8), "red")],
        "messages": [[{"role": "assistant", "content": "<image>first?"},
                      {"role": "user", "content": "then"}]],
    }, features=datasets.Features({
        "image": datasets.Image(),
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
    }))
    dataset.to_parquet(str(tmp_path / "r.parquet"))
    [report] = import_files("hf", [tmp_path / "r.parquet"], tmp_path / "out")
    assert report.rejected == 1 and report.issues[0].code == "bad-role"
    assert not (tmp_path / "out/images").exists()
