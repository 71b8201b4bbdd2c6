"""The record schema: recipe lines validate unchanged, additions are optional, shape errors."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from phiv_data import SCHEMA_VERSION, Record, Turn
from phiv_data.phi3v import find_special_text, hd_grid, image_token_count

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
        ({"id": "x", "conversations": [{"user": "a"}]}, "missing", ("conversations", 0, "assistant")),
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
