"""Media checks (--check-images decode), the image helpers, and leakage between files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from phiv_data.errors import MediaError
from phiv_data.media import images as image_helpers
from phiv_data.media.images import inspect_image, read_image_header
from phiv_data.validate import ValidationOptions, validate_paths


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with no pixel data worth decoding."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    data = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))
    path.write_bytes(data + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def noisy_jpeg(path: Path, size=(200, 150)) -> None:
    """A JPEG whose pixel data is much larger than its header tables."""
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def rotated_jpeg(path: Path, size=(64, 32), orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, (10, 200, 30)).save(path, exif=exif)


def make_images(root: Path) -> dict[str, str]:
    """Write one image per problem kind; return {file name: expected code}."""
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(root / "good.jpg")
    (root / "empty.jpg").write_bytes(b"")
    noisy_jpeg(root / "whole.jpg")
    data = (root / "whole.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "text.jpg").write_bytes(b"this is not an image at all")
    png_header_only(root / "bomb.png", 20000, 20000)
    Image.new("CMYK", (16, 16)).save(root / "cmyk.jpg")
    Image.new("P", (16, 16)).save(root / "palette.png")
    Image.new("RGBA", (16, 16)).save(root / "alpha.png")
    Image.new("I;16", (16, 16)).save(root / "deep.png")
    rotated_jpeg(root / "rotated.jpg")
    Image.new("RGB", (440, 20)).save(root / "wide.png")
    return {"empty.jpg": "E-IMAGE-EMPTY", "truncated.jpg": "E-IMAGE-TRUNCATED",
            "text.jpg": "E-IMAGE-UNREADABLE", "bomb.png": "E-IMAGE-BOMB",
            "cmyk.jpg": "W-IMAGE-MODE", "palette.png": "W-IMAGE-MODE",
            "alpha.png": "W-IMAGE-MODE", "deep.png": "W-IMAGE-MODE",
            "rotated.jpg": "W-IMAGE-EXIF-ROTATED", "wide.png": "W-IMAGE-ASPECT"}


def write_jsonl(path: Path, image_lists: list[list[str]], prefix: str = "r") -> Path:
    with open(path, "wb") as handle:
        handle.writelines(orjson.dumps({"id": f"{prefix}{index}", "conversations": [
                {"images": images, "user": "Describe.", "assistant": "ok"}]}) + b"\n" for index, images in enumerate(image_lists))
    return path


def test_every_media_problem_has_its_code_on_its_line(tmp_path):
    expected = make_images(tmp_path / "images")
    names = list(expected)
    path = write_jsonl(tmp_path / "data.jsonl", [["good.jpg", name] for name in names])
    report = validate_paths([path], ValidationOptions(workers=1, check_images="decode"))
    found = {(issue.code, issue.line, issue.field) for issue in report.issues}
    for line, name in enumerate(names, start=1):
        assert (expected[name], line, "conversations[0].images[1]") in found, (name, found)
    assert not report.ok
    assert report.errors == sum(code.startswith("E-") for code in expected.values())


REMEDIES = {"E-IMAGE-EMPTY": ("re-extract",), "E-IMAGE-TRUNCATED": ("re-extract",),
            "E-IMAGE-UNREADABLE": ("re-export it as JPEG or PNG",),
            "E-IMAGE-BOMB": ("downscale",), "W-IMAGE-MODE": ("re-export", "flatten it"),
            "W-IMAGE-EXIF-ROTATED": ("bake the rotation in",),
            "W-IMAGE-ASPECT": ("crop or split",)}


@pytest.mark.parametrize("check_images", ["decode", "exists"])
def test_media_messages_say_what_to_do(tmp_path, check_images):
    # With --max-length alone, image headers are read too (for the token counts): their
    # problems must read the same as with decoding.
    expected = make_images(tmp_path / "images")
    png_header_only(tmp_path / "images" / "huge.png", 30000, 30000)  # past Pillow's own limit
    expected["huge.png"] = "E-IMAGE-BOMB"
    path = write_jsonl(tmp_path / "data.jsonl", [[name] for name in expected])
    report = validate_paths([path], ValidationOptions(workers=1, check_images=check_images,
                                                      max_length=100_000))
    media = [issue for issue in report.issues if issue.code in REMEDIES]
    assert media and all(any(remedy in issue.message for remedy in REMEDIES[issue.code])
                         for issue in media), media
    assert not any("BytesIO" in issue.message for issue in media)
    bombs = [issue.message for issue in media if issue.code == "E-IMAGE-BOMB"]
    assert len(bombs) == 2 and "900,000,000 pixels exceeds" in bombs[1]


def test_exists_mode_does_not_open_images(tmp_path):
    make_images(tmp_path / "images")
    path = write_jsonl(tmp_path / "data.jsonl", [["truncated.jpg", "cmyk.jpg", "empty.jpg"]])
    report = validate_paths([path], ValidationOptions(workers=1))
    assert report.ok and report.issues == []


def test_bomb_is_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")

    def no_decoding(self):
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    report = inspect_image(tmp_path / "big.png", max_pixels=1000)
    assert [kind for kind, _ in report.problems] == ["bomb"]
    png_header_only(tmp_path / "huge.png", 30000, 30000)
    assert [kind for kind, _ in inspect_image(tmp_path / "huge.png").problems] == ["bomb"]


def test_header_reads_size_and_exif_orientation_without_decoding(tmp_path, monkeypatch):
    rotated_jpeg(tmp_path / "r.jpg", size=(64, 32), orientation=6)
    noisy_jpeg(tmp_path / "whole.jpg", size=(200, 100))
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load",
                        lambda self: (_ for _ in ()).throw(AssertionError("decoded")))
    header = read_image_header(tmp_path / "r.jpg")
    assert (header.width, header.height, header.orientation) == (64, 32, 6)
    assert header.oriented_size == (32, 64)
    assert read_image_header(tmp_path / "cut.jpg").oriented_size == (200, 100)


def test_header_errors_are_media_errors(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    with pytest.raises(MediaError, match="zero.jpg: empty file"):
        read_image_header(tmp_path / "zero.jpg")
    with pytest.raises(MediaError, match="junk.jpg: not a readable image"):
        read_image_header(tmp_path / "junk.jpg")
    with pytest.raises(MediaError, match="absent.jpg: cannot read"):
        read_image_header(tmp_path / "absent.jpg")


def test_good_images_never_build_a_display_path(tmp_path, monkeypatch):
    # display_path resolves paths (system calls): it is for error messages only, not for
    # every header the token budget reads.
    Image.new("RGB", (40, 30)).save(tmp_path / "good.jpg")
    monkeypatch.setattr(image_helpers, "display_path",
                        lambda path: (_ for _ in ()).throw(AssertionError("display_path")))
    assert read_image_header(tmp_path / "good.jpg").oriented_size == (40, 30)
    assert inspect_image(tmp_path / "good.jpg").problems == []


def test_mode_problem_names_each_mode():
    header = image_helpers.ImageHeader
    assert image_helpers.mode_problem(header(1, 1, "JPEG", "RGB")) is None
    assert image_helpers.mode_problem(header(1, 1, "PNG", "L")) is None
    assert "CMYK" in image_helpers.mode_problem(header(1, 1, "JPEG", "CMYK"))
    assert "palette" in image_helpers.mode_problem(header(1, 1, "PNG", "P"))
    assert "alpha" in image_helpers.mode_problem(header(1, 1, "PNG", "RGBA"))
    assert "16-bit" in image_helpers.mode_problem(header(1, 1, "PNG", "I;16"))


def test_identical_content_under_another_name_is_reported_on_the_later_line(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (20, 20), (5, 6, 7)).save(root / "a.png")
    (root / "copy_of_a.png").write_bytes((root / "a.png").read_bytes())
    Image.new("RGB", (20, 20), (8, 6, 7)).save(root / "b.png")
    path = write_jsonl(tmp_path / "data.jsonl", [["a.png"], ["b.png"], ["copy_of_a.png"],
                                                 ["a.png"]])
    report = validate_paths([path], ValidationOptions(workers=1, check_images="decode"))
    duplicates = [issue for issue in report.issues if issue.code == "W-IMAGE-DUPLICATE"]
    assert [(issue.line, issue.record_id) for issue in duplicates] == [(3, "r2")]
    assert "'a.png' (line 1)" in duplicates[0].message
    assert report.ok  # a warning only


def test_identical_frames_of_one_record_name_the_earlier_field(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (20, 20), (5, 6, 7)).save(root / "f.0.png")
    names = [f"f.{index}.png" for index in range(12)]
    for name in names[1:]:
        (root / name).write_bytes((root / "f.0.png").read_bytes())
    path = write_jsonl(tmp_path / "data.jsonl", [names])
    report = validate_paths([path], ValidationOptions(workers=1, check_images="decode"))
    duplicates = [issue for issue in report.issues if issue.code == "W-IMAGE-DUPLICATE"]
    assert [issue.field for issue in duplicates] == [
        f"conversations[0].images[{index}]" for index in range(1, 12)]
    assert all("as 'f.0.png' (line 1)" in issue.message for issue in duplicates)


def test_images_shared_between_files_are_leakage_warnings(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name, colour in (("t1.png", 1), ("t2.png", 2), ("v1.png", 3)):
        Image.new("RGB", (20, 20), (colour, 0, 0)).save(root / name)
    (root / "v_copy.png").write_bytes((root / "t2.png").read_bytes())
    train = write_jsonl(tmp_path / "x_train.jsonl", [["t1.png"], ["t2.png"]], "t")
    val = write_jsonl(tmp_path / "x_val.jsonl", [["v1.png"], ["v_copy.png"], ["t1.png"]], "v")
    report = validate_paths([train, val], ValidationOptions(workers=1, check_images="decode"))
    leaks = {(issue.code, issue.file, issue.line) for issue in report.issues}
    assert ("W-LEAK-SHARED", str(val), 3) in leaks or any(
        code == "W-LEAK-SHARED" and line == 3 and file.endswith("x_val.jsonl")
        for code, file, line in leaks)
    assert any(code == "W-LEAK-CONTENT" and line == 2 and file.endswith("x_val.jsonl")
               for code, file, line in leaks)
    assert report.ok and report.warnings == 2
    # Shared paths are found without decoding too.
    exists = validate_paths([train, val], ValidationOptions(workers=1))
    assert [issue.code for issue in exists.issues] == ["W-LEAK-SHARED"]


def test_leakage_warnings_come_in_the_same_order_in_every_process(tmp_path):
    # Several images shared on one line are listed by name, not in set order, which
    # follows str hashes and so changed from one run of phiv-data to the next.
    import os
    import subprocess
    import sys

    root = tmp_path / "images"
    root.mkdir()
    names = [f"frame{index}.png" for index in range(12)]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(root / name)
    train = write_jsonl(tmp_path / "x_train.jsonl", [names], "t")
    val = write_jsonl(tmp_path / "x_val.jsonl", [list(reversed(names))], "v")
    outputs = []
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-m", "phiv_data", "validate", str(train), str(val)],
            capture_output=True, text=True, check=False, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        outputs.append([line for line in done.stdout.splitlines() if "] " in line])
    shared = [line for line in outputs[0] if "[W-LEAK-SHARED]" in line]
    assert [line.split("'")[1] for line in shared] == sorted(names)
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_an_unusable_image_is_an_error_on_every_line_that_uses_it(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "empty.jpg").write_bytes(b"")
    Image.new("P", (8, 8)).save(root / "palette.png")
    path = write_jsonl(tmp_path / "data.jsonl", [["empty.jpg", "palette.png"],
                                                 ["palette.png"], ["empty.jpg"]])
    report = validate_paths([path], ValidationOptions(workers=1, check_images="decode"))
    found = [(issue.code, issue.line) for issue in report.issues]
    assert found == [("E-IMAGE-EMPTY", 1), ("W-IMAGE-MODE", 1), ("E-IMAGE-EMPTY", 3)]
