"""The record schema: recipe lines validate unchanged, additions are optional, shape errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import orjson
import pytest
from PIL import Image
from pydantic import ValidationError

from phiv_data import SCHEMA_VERSION, Record, Turn, load_manifest, read_records
from phiv_data.phi3v import find_special_text, hd_grid, image_token_count
from phiv_data.validate import ValidationOptions, validate_paths

RECIPE_LINE = (
    b'{"id": "val-0000000300", "source": "ucf101", "conversations": [{"images": '
    b'["val/BabyCrawling/v_BabyCrawling_g21_c04.0.jpg", "val/BabyCrawling/v_BabyCrawling_g21_c04.1.jpg"], '
    b'"user": "Classify the video into one of the following classes: ApplyEyeMakeup, ApplyLipstick, '
    b'Archery, BabyCrawling, BalanceBeam, BandMarching, BaseballPitch, Basketball, BasketballDunk, '
    b'BenchPress.", "assistant": "BabyCrawling"}]}'
)


def test_recipe_line_validates_and_round_trips():
    record = Record.model_validate_json(RECIPE_LINE)
    assert record.id == "val-0000000300"
    assert record.images[1].endswith(".1.jpg")
    assert record.to_json_dict() == orjson.loads(RECIPE_LINE)
    assert SCHEMA_VERSION == "1.0"


SEED_CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
                "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress"]
SEED_PROMPT = ("Classify the video into one of the following classes: "
               + ", ".join(SEED_CLASSES) + ".")


def recipe_lines(split: str, count: int) -> list[str]:
    """Lines as the recipe's converter writes them: ``json.dumps`` defaults (", " and ": "
    separators, ASCII escapes), ids ``{split}-{i:010d}``, 8 frames per video."""
    lines = []
    for index in range(count):
        label = SEED_CLASSES[index % len(SEED_CLASSES)]
        stem = f"v_{label}_g{index % 25 + 1:02d}_c{index % 7 + 1:02d}"
        lines.append(json.dumps({
            "id": f"{split}-{index:010d}", "source": "ucf101",
            "conversations": [{"images": [f"{split}/{label}/{stem}.{k}.jpg" for k in range(8)],
                               "user": SEED_PROMPT, "assistant": label}]}))
    return lines


def test_every_recipe_line_validates_unchanged(tmp_path):
    # The two lines printed in the recipe's README, byte for byte, then generated ones.
    seed = [json.dumps({"id": f"val-000000030{n}", "source": "ucf101", "conversations": [{
        "images": [f"val/BabyCrawling/v_BabyCrawling_{clip}.{k}.jpg" for k in range(8)],
        "user": SEED_PROMPT, "assistant": "BabyCrawling"}]})
        for n, clip in ((0, "g21_c04"), (1, "g09_c06"))]
    assert seed[0].startswith('{"id": "val-0000000300", "source": "ucf101", "conversations": '
                              '[{"images": ["val/BabyCrawling/v_BabyCrawling_g21_c04.0.jpg", ')
    for split in ("train", "val", "test"):
        lines = (seed if split == "val" else []) + recipe_lines(split, 30)
        path = tmp_path / f"ucf101_{split}.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        for line in lines:
            for image in json.loads(line)["conversations"][0]["images"]:
                (tmp_path / "images" / image).parent.mkdir(parents=True, exist_ok=True)
                colour = tuple(hashlib.sha256(image.encode()).digest()[:3])
                Image.new("RGB", (32, 24), colour).save(tmp_path / "images" / image)
        assert [record.to_json_dict() for _, record in read_records(path)] == [
            json.loads(line) for line in lines]
    report = validate_paths([tmp_path], ValidationOptions(
        workers=1, check_images="decode", max_length=8192))
    assert report.ok and report.issues == [], report.render_text()
    assert [summary.records for summary in report.files] == [30, 30, 32]


def test_importing_phiv_data_does_not_import_torch():
    code = ("import sys, phiv_data, phiv_data.cli, phiv_data.validate, phiv_data.shards\n"
            "print(sorted(name for name in ('torch', 'transformers', 'tokenizers', 'cv2')"
            " if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_every_lazy_export_resolves():
    import phiv_data

    assert set(phiv_data.__all__) == {*phiv_data._MODULE_OF, "SCHEMA_VERSION", "__version__"}
    for name in phiv_data.__all__:
        assert getattr(phiv_data, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Recrod'"):
        phiv_data.Recrod  # noqa: B018


def test_validating_a_valid_file_builds_no_pydantic_model(tmp_path):
    """Start-up: the validator's fast path and the manifest (msgspec) need no pydantic; a
    command that imports it pays about 100 ms before reading a line."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "set_train.jsonl").write_text(
        '{"id": "a", "conversations": [{"images": ["a.jpg"], "user": "q", "assistant": "x"}]}\n')
    code = ("import sys\nfrom phiv_data.cli import app\n"
            f"try:\n    app([\"validate\", {str(tmp_path / 'set_train.jsonl')!r}])\n"
            "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "print(sorted(name for name in ('pydantic', 'phiv_data.schema') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert load_manifest(tmp_path).shard("set_train.jsonl").validation.passed


def test_optional_additions():
    record = Record(id="a", conversations=[Turn(user="q", assistant=None)],
                    meta={"answers": ["x", "y"]})
    assert not record.labeled
    assert record.to_json_dict()["meta"] == {"answers": ["x", "y"]}
    assert "source" not in record.to_json_dict()
    assert Record(id="b", conversations=[{"user": "hi", "assistant": "yo"}]).images == []


@pytest.mark.parametrize(
    ("payload", "error_type", "loc"),
    [
        ({"id": 7, "conversations": [{"user": "a", "assistant": "b"}]}, "string_type", ("id",)),
        ({"id": "x", "conversations": []}, "too_short", ("conversations",)),
        ({"id": "x", "conversations": [{"user": "", "assistant": "b"}]}, "string_too_short",
         ("conversations", 0, "user")),
        ({"id": "x", "conversations": [{"user": "a", "assistant": "b", "extra": 1}]},
         "extra_forbidden", ("conversations", 0, "extra")),
        ({"id": "x", "conversations": [{"user": "a"}]}, "missing",
         ("conversations", 0, "assistant")),
        ({"id": "x", "conversations": [{"images": "a.jpg", "user": "a", "assistant": "b"}]},
         "list_type", ("conversations", 0, "images")),
    ],
)
def test_shape_errors_carry_their_field(payload, error_type, loc):
    with pytest.raises(ValidationError) as caught:
        Record.model_validate_json(orjson.dumps(payload))
    errors = caught.value.errors()
    assert errors[0]["type"] == error_type
    assert errors[0]["loc"] == loc


def test_only_last_turn_may_be_unlabeled():
    with pytest.raises(ValidationError, match="only the last turn"):
        Record(id="x", conversations=[{"user": "a", "assistant": None},
                                      {"user": "b", "assistant": "c"}])


@pytest.mark.parametrize(
    ("size", "num_crops", "expected"),
    [((336, 336), 4, 757), ((1000, 1000), 16, 2509), ((336, 336), 1, 144 * 2 + 1 + 24)],
)
def test_image_token_count_known_values(size, num_crops, expected):
    assert image_token_count(*size, num_crops) == expected


def test_hd_grid_handles_degenerate_shapes():
    # 3000x1 would give a 0-pixel height in the reference code; phiv pads to one crop row.
    assert hd_grid(3000, 1, 4) == (336, 1344)
    assert hd_grid(1, 3000, 4) == (1344, 336)
    for num_crops in range(1, 17):
        height, width = hd_grid(1700, 2250, num_crops)
        assert (height // 336) * (width // 336) <= num_crops


def test_special_text_detection():
    assert find_special_text("look at <|image_1|> and <|end|>") == ["<|image_1|>", "<|end|>"]
    assert find_special_text("a <s> b") == ["<s>"]
    assert find_special_text("x < | y | >") == []
