"""Phi3VImageProcessor: sizes and token counts, crop layout, padding, modes, exactness."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from phiv_data.errors import MediaError, UsageError
from phiv_data.phi3v import hd_grid, hd_resized_size, image_token_count
from phiv_train.processing import Phi3VImageProcessor, load_image, to_model_mode
from phiv_train.processing.image import normalisation_table
from phiv_train.processing.reference import reference_process_image, reference_process_images
from tests.fixtures_processing import coordinate_image, coordinate_pixels, denormalise, noise_image

CROP = 336
WHITE_LEVELS = torch.tensor(normalisation_table()[:, 255]).view(3, 1, 1)


def padded_levels(views: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Reassemble the crops into the padded image and return its 8-bit levels (H, W, 3)."""
    rows, cols = height // CROP, width // CROP
    full = views[1:1 + rows * cols].view(rows, cols, 3, CROP, CROP).permute(2, 0, 3, 1, 4)
    full = full.reshape(3, height, width).numpy()
    return np.stack([denormalise(full[c], c) for c in range(3)], axis=-1)


SIZES = [(1, 1), (1, 3000), (3000, 1), (2, 3), (337, 335), (640, 480), (1700, 2250),
         (1024, 768), (100, 1000), (999, 101), (5000, 17)]


@pytest.mark.parametrize("num_crops", range(1, 17))
def test_sizes_and_token_counts_match_the_formula_and_the_crops_written(num_crops):
    images = [Image.new("L", size, 128) for size in SIZES]
    out = Phi3VImageProcessor(num_crops)(images)
    assert out["pixel_values"].shape == (len(SIZES), num_crops + 1, 3, CROP, CROP)
    assert out["pixel_values"].dtype == torch.float32
    for index, (width, height) in enumerate(SIZES):
        padded_height, padded_width = out["image_sizes"][index].tolist()
        assert (padded_height, padded_width) == hd_grid(width, height, num_crops)
        rows, cols = padded_height // CROP, padded_width // CROP
        assert rows * cols <= num_crops and padded_height % CROP == padded_width % CROP == 0
        # The long side is as large as num_crops allows: one step more would not fit.
        scale, ratio = max(rows, cols), max(width, height) / min(width, height)
        assert (scale + 1) * np.ceil((scale + 1) / ratio) > num_crops
        expected_tokens = (rows * cols + 1) * 144 + 1 + (rows + 1) * 12
        assert out["num_img_tokens"][index] == expected_tokens == \
            image_token_count(width, height, num_crops)
        views = out["pixel_values"][index]
        assert views[1:1 + rows * cols].abs().sum(dim=(1, 2, 3)).gt(0).all()
        assert not views[1 + rows * cols:].any()  # zero padding after the last crop


def test_known_token_counts():
    square = Image.new("RGB", (500, 500))
    assert Phi3VImageProcessor(4)(square)["num_img_tokens"] == [757]
    assert Phi3VImageProcessor(16)(square)["num_img_tokens"] == [2509]
    assert Phi3VImageProcessor(16)(square)["image_sizes"].tolist() == [[1344, 1344]]


@pytest.mark.parametrize(("size", "num_crops"), [((672, 504), 4), ((672, 503), 4),
                                                 ((504, 672), 4), ((503, 672), 4),
                                                 ((1008, 333), 3), ((1008, 335), 6),
                                                 ((336, 1008), 3)])
def test_crops_are_row_major_views_of_the_white_centred_padded_image(size, num_crops):
    width, height = size
    # Sized so that the resize keeps every pixel: what lands in each crop is recognisable.
    assert hd_resized_size(width, height, num_crops) == (width, height)
    out = Phi3VImageProcessor(num_crops)(coordinate_image(width, height))
    padded_height, padded_width = out["image_sizes"][0].tolist()
    levels = padded_levels(out["pixel_values"][0], padded_height, padded_width)
    expected = np.full((padded_height, padded_width, 3), 255, dtype=np.uint8)
    top, left = (padded_height - height) // 2, (padded_width - width) // 2
    expected[top:top + height, left:left + width] = coordinate_pixels(width, height)
    assert np.array_equal(levels, expected)
    assert (top, left) == (((padded_height - height) // 2, 0) if width >= height
                           else (0, (padded_width - width) // 2))
    # Crop (r, c) is the block at rows r*336.., columns c*336.. (row-major order).
    rows, cols = padded_height // CROP, padded_width // CROP
    views = out["pixel_values"][0]
    for r in range(rows):
        for c in range(cols):
            block = expected[r * CROP:(r + 1) * CROP, c * CROP:(c + 1) * CROP]
            crop = views[1 + r * cols + c].numpy()
            assert np.array_equal(np.stack([denormalise(crop[k], k) for k in range(3)], -1), block)


def test_padding_is_white_and_centred_after_a_real_resize():
    # 800x300 at 6 crops: scale 4 would need 4 * ceil(4 / (800/300)) = 8 crops, so 3 crops
    # wide; resized to 1008 x int(1008 / (800/300)) = 1008 x 378, padded to 672 high.
    image = Image.new("RGB", (800, 300), (10, 200, 30))
    out = Phi3VImageProcessor(6)(image)
    assert out["image_sizes"].tolist() == [[672, 1008]]
    levels = padded_levels(out["pixel_values"][0], 672, 1008)
    top = (672 - 378) // 2
    assert (levels[:top] == 255).all() and (levels[top + 378:] == 255).all()
    assert (levels[top:top + 378] == (10, 200, 30)).all()


def test_global_view_is_the_bicubic_resize_of_the_padded_normalised_image():
    out = Phi3VImageProcessor(4)(noise_image(900, 500))
    height, width = out["image_sizes"][0].tolist()
    views = out["pixel_values"][0]
    rows, cols = height // CROP, width // CROP
    full = views[1:1 + rows * cols].view(rows, cols, 3, CROP, CROP).permute(2, 0, 3, 1, 4)
    full = full.reshape(1, 3, height, width)
    expected = F.interpolate(full, size=(CROP, CROP), mode="bicubic", align_corners=False)[0]
    assert torch.equal(views[0], expected)


MODES = ["RGB", "L", "RGBA", "LA", "La", "P", "PA", "CMYK", "1", "YCbCr", "HSV", "F", "I", "I;16", "I;16B"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("size", "num_crops"), [((37, 23), 4), ((23, 37), 3), ((1, 1), 1),
                                                 ((1, 700), 4), ((700, 1), 16),
                                                 ((400, 300), 2)])
def test_fast_path_equals_the_straightforward_reference_bit_for_bit(mode, size, num_crops):
    image = noise_image(*size, mode=mode)
    fast = Phi3VImageProcessor(num_crops)(image)
    views, padded = reference_process_image(image, num_crops)
    assert torch.equal(fast["pixel_values"][0], views)
    assert fast["image_sizes"][0].tolist() == padded


@pytest.mark.slow
def test_fast_path_equals_the_reference_on_pages_and_photos():
    images = [noise_image(1700, 2250, "L"), noise_image(2250, 1700, "L", seed=1),
              noise_image(640, 480), noise_image(768, 1024, seed=2)]
    for num_crops in (4, 16):
        fast = Phi3VImageProcessor(num_crops)(images)
        reference = reference_process_images(images, num_crops)
        assert torch.equal(fast["pixel_values"], reference["pixel_values"])
        assert torch.equal(fast["image_sizes"], reference["image_sizes"])


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "CMYK", "1", "YCbCr"])
def test_mode_conversion_is_what_convert_rgb_gives(mode):
    # The reference calls .convert("RGB"): alpha dropped, not composited on white.
    image = noise_image(17, 9, mode=mode)
    assert np.array_equal(np.asarray(to_model_mode(image).convert("RGB")),
                          np.asarray(image.convert("RGB")))


def test_palette_with_transparency_keeps_its_colours_without_a_warning(recwarn):
    image = noise_image(16, 16, mode="P")
    image.info["transparency"] = 3
    converted = to_model_mode(image)
    assert np.array_equal(np.asarray(converted), np.asarray(image.convert("RGBA").convert("RGB")))
    assert not [w for w in recwarn if "Transparency" in str(w.message)]


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    converted = to_model_mode(Image.fromarray(levels))
    assert converted.mode == "L"
    assert np.asarray(converted).tolist() == [[0, 1, 128, 255]]
    wide = Image.fromarray(levels.astype(np.int32))  # mode "I" holding 16-bit values
    assert np.asarray(to_model_mode(wide)).tolist() == [[0, 1, 128, 255]]
    small = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))  # "I" holding 8-bit values
    assert np.asarray(to_model_mode(small)).tolist() == [[0, 7, 255]]


def test_paths_are_loaded_by_content_with_exif_rotation(tmp_path):
    image = coordinate_image(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.png"  # a JPEG behind a .png name
    image.save(path, format="JPEG", exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (20, 60)
    out = Phi3VImageProcessor(4)([path, str(path)])
    assert out["image_sizes"].tolist() == [list(hd_grid(20, 60, 4))] * 2


@pytest.mark.parametrize(("content", "match"), [(None, "image file not found"),
                                                (b"not an image at all", "cannot decode"),
                                                ("truncated", "cannot decode")])
def test_unreadable_images_raise_media_errors_naming_the_path(tmp_path, content, match):
    path = tmp_path / "bad.png"
    if content == "truncated":
        buffer = io.BytesIO()
        noise_image(64, 64).save(buffer, format="PNG")
        content = buffer.getvalue()[:200]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=match) as raised:
        load_image(path)
    assert "bad.png" in str(raised.value)


@pytest.mark.parametrize("num_crops", [0, -1, 2.5, True, "4"])
def test_num_crops_must_be_a_positive_integer(num_crops):
    with pytest.raises(UsageError, match="num_crops"):
        Phi3VImageProcessor(num_crops)


def test_empty_input_gives_empty_tensors():
    out = Phi3VImageProcessor(4)([])
    assert out["pixel_values"].shape == (0, 5, 3, CROP, CROP)
    assert out["image_sizes"].shape == (0, 2) and out["num_img_tokens"] == []


def test_process_into_overwrites_every_view_of_a_dirty_buffer():
    image = noise_image(700, 300)  # 2 of 4 crops: two padding views
    out = torch.full((5, 3, CROP, CROP), float("nan"))
    padded = Phi3VImageProcessor(4).process_into(image, out)
    views, reference_padded = reference_process_image(image, 4)
    assert list(padded) == reference_padded
    assert torch.equal(out, views)
