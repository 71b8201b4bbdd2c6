"""phiv-data preview: streaming sample and counts, plots, the page's content, the CLI."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import orjson
import pytest
from fixtures_interop import make_dataset, make_image, sample_records
from typer.testing import CliRunner

from phiv_data.cli import app
from phiv_data.errors import UsageError
from phiv_data.preview import PreviewOptions, build_preview, plots
from phiv_data.preview.render import visible
from phiv_data.preview.sampling import Reservoir, scan
from phiv_data.preview.stats import CappedCounter, DatasetCounts, top_answers


def simple_record(index: int, images: int = 1, answer: str | None = "yes") -> dict:
    return {"id": f"r-{index}", "conversations": [
        {"images": [f"img/{index % 3}.png"] * images, "user": f"Question {index}?",
         "assistant": answer}]}


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path


def small_images(root: Path) -> None:
    for index in range(3):
        make_image(root / "images" / "img" / f"{index}.png", size=(30 + 10 * index, 20))


def test_reservoir_is_uniform_and_bounded():
    hits: Counter[int] = Counter()
    for seed in range(2000):
        reservoir = Reservoir(5, random.Random(seed))
        for item in range(50):
            reservoir.offer((item, b""))
        assert len(reservoir.items) == 5 and reservoir.seen == 50
        hits.update(item for item, _ in reservoir.items)
    # each item is kept with probability 5/50: 200 of 10000 draws expected, sd 13.4
    assert min(hits.values()) > 140 and max(hits.values()) < 260 and len(hits) == 50


def test_scan_counts_every_line_and_samples_with_the_seed(tmp_path: Path):
    records = [simple_record(index, images=index % 4,
                             answer=None if index % 10 == 0 else ["yes", "no"][index % 2])
               for index in range(300)]
    path = write_lines(tmp_path / "d.jsonl", records)
    with path.open("ab") as handle:
        handle.write(b"\n{not json\n[1, 2]\n")
    found = scan(path, sample=20, measure=60, seed=7)
    counts = found.counts
    assert (counts.records, counts.lines, counts.not_records, counts.blank_lines) == (
        300, 302, 2, 1)
    assert counts.images == sum(index % 4 for index in range(300))
    assert counts.images_per_record == Counter({0: 75, 1: 75, 2: 75, 3: 75})
    assert counts.unlabeled == 30
    assert counts.answers.counts == Counter({"no": 150, "yes": 120, "(unlabeled)": 30})
    assert len(found.shown) == 20 and len(found.measured) == 60
    assert {line for line, _ in found.shown} <= {line for line, _ in found.measured}
    assert [line for line, _ in found.shown] == sorted(line for line, _ in found.shown)
    assert scan(path, sample=20, measure=60, seed=7).shown == found.shown
    assert scan(path, sample=20, measure=60, seed=8).shown != found.shown


def test_answer_counter_stays_small_on_free_text():
    counter = CappedCounter(limit=10)
    for index in range(1000):
        counter.add(f"answer {index}")
    counter.add("answer 3")
    assert len(counter.counts) == 10 and counter.overflow == 990 and counter.total == 1001
    top = top_answers(counter, limit=3)
    assert top[0] == ("answer 3", 2)
    assert top[-1] == ("(7+ other answers)", 1001 - 4)


def test_odd_lines_are_counted_not_fatal():
    counts = DatasetCounts()
    for raw in [b'{"conversations": []}', b'{"conversations": 5}', b'"text"', b"\xff",
                b'{"conversations": [{"images": null, "assistant": "x"}]}']:
        counts.add_line(raw)
    assert (counts.lines, counts.records, counts.not_records) == (5, 1, 4)


def test_plots_are_well_formed_svg():
    charts = [
        plots.bar_chart([("0", 3), ("1", 10)], "Images <per> record", "images", "records"),
        plots.horizontal_bars([("a & b", 4), ("x" * 50, 1)], "Answers", "records"),
        plots.histogram([1, 2, 2, 3, 1000], "Tokens", "tokens", marker=500, marker_label="b"),
        plots.scatter([(10, 20), (300, 200)], "Sizes", "w", "h"),
        plots.histogram([], "Empty", "x"),
        plots.histogram([5, 5], "Constant", "x"),
    ]
    for chart in charts:
        root = ElementTree.fromstring(chart)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    bars = ElementTree.fromstring(charts[0]).findall(".//{http://www.w3.org/2000/svg}rect")
    assert len(bars) == 2 and float(bars[1].get("height")) > float(bars[0].get("height"))
    assert "Images &lt;per&gt; record" in charts[0]
    assert 'class="marker"' in charts[2]


def test_visible_escapes_and_shows_control_characters():
    assert visible('<b>"x"</b>\x01\x7f\nok') == "&lt;b&gt;&quot;x&quot;&lt;/b&gt;\u2401\u2421\nok"


def _articles(html: str) -> list[str]:
    return re.findall(r'<article class="record[^"]*"[^>]*data-line="(\d+)"', html)


def test_page_shows_records_images_issues_and_plots(tmp_path: Path):
    records = sample_records() + [
        {"id": "r-0", "conversations": [{"images": ["gone.jpg"], "user": "Q <|image_1|>",
                                         "assistant": "A"}]}]
    shard = make_dataset(tmp_path, records[:-1])
    with shard.open("ab") as handle:
        handle.write(json.dumps(records[-1]).encode() + b"\n" + b'{"id": 3}\n')
    result = build_preview(shard, tmp_path / "report.html", PreviewOptions(max_length=2000))
    html = (tmp_path / "report.html").read_text()
    assert _articles(html) == ["1", "2", "3", "4", "5", "6"]
    assert (result.records, result.shown, result.shown_images) == (5, 6, 7)
    # every readable image is embedded, in the order of its turn; the missing one says so
    assert html.count('<img src="data:image/jpeg;base64,') == result.embedded_images == 6
    first = html.split('data-line="1"')[1].split("</article>")[0]
    assert re.findall(r'alt="image (\d): ([^"]+)"', first) == [
        ("1", "a/one.jpg"), ("2", "a/two.png"), ("3", "b/three.jpg")]
    assert 'data-missing-image="1"' in html and "missing file" in html
    # the issues of each record sit in its article
    bad = html.split('data-line="5"')[1].split("</article>")[0]
    assert {"E-TEXT-SPECIAL", "E-IMAGE-MISSING", "E-ID-DUPLICATE"} <= set(
        re.findall(r'data-issue="([^"]+)"', bad))
    invalid = html.split('data-line="6"')[1].split("</article>")[0]
    assert "not a valid record" in invalid and "E-SCHEMA-MISSING" in invalid
    assert "W-TOKENS-OVER" in html.split('data-line="1"')[1].split("</article>")[0]
    assert html.count("<svg") == 5 and "budget 2000" in html
    # nothing is loaded from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<script" not in html and "<link" not in html


def test_default_sample_is_at_least_50_and_all_when_fewer(tmp_path: Path):
    small_images(tmp_path)
    path = write_lines(tmp_path / "d.jsonl", [simple_record(index) for index in range(80)])
    result = build_preview(path, tmp_path / "a.html", PreviewOptions(validate=False))
    assert result.shown == 50 >= PreviewOptions().sample
    html = (tmp_path / "a.html").read_text()
    assert len(_articles(html)) == 50 and "uniform random sample, seed 0" in html
    path = write_lines(tmp_path / "e.jsonl", [simple_record(index) for index in range(30)])
    result = build_preview(path, tmp_path / "b.html", PreviewOptions(validate=False))
    assert result.shown == 30 and result.embedded_images == 30
    assert _articles((tmp_path / "b.html").read_text()) == [str(line) for line in range(1, 31)]


def test_work_is_bounded_by_the_sample_not_the_file(tmp_path: Path, monkeypatch):
    """Thumbnails only for shown records, headers only for the measured sample."""
    from phiv_data.preview import stats, thumbnails

    small_images(tmp_path)
    records = [dict(simple_record(index), conversations=[{
        "images": [f"img/{index % 3}.png", f"img/{(index + 1) % 3}.png"],
        "user": "Q", "assistant": "A"}]) for index in range(2000)]
    path = write_lines(tmp_path / "d.jsonl", records)
    made, headers = [], []
    original_make, original_size = thumbnails.Thumbnails._make, stats.image_size
    monkeypatch.setattr(thumbnails.Thumbnails, "_make",
                        lambda self, image: made.append(image) or original_make(self, image))
    monkeypatch.setattr(stats, "image_size",
                        lambda image, cache: headers.append(image) or original_size(image, cache))
    result = build_preview(path, tmp_path / "r.html",
                           PreviewOptions(sample=10, measure=100, validate=False))
    assert result.shown == 10 and result.records == 2000
    assert len(made) <= 3  # distinct images of the shown records, each decoded once
    assert len(headers) == 200  # the images of the 100 measured records
    assert result.embedded_images == 20


def test_images_root_defaults_to_images_beside_the_file(tmp_path: Path):
    shard = make_dataset(tmp_path / "d")
    result = build_preview(shard, tmp_path / "r.html", PreviewOptions(validate=False))
    assert result.embedded_images == 6
    other = tmp_path / "elsewhere.jsonl"
    other.write_bytes(shard.read_bytes())
    result = build_preview(other, tmp_path / "s.html", PreviewOptions(
        validate=False, images_root=tmp_path / "d" / "images"))
    assert result.embedded_images == 6
    result = build_preview(other, tmp_path / "t.html", PreviewOptions(validate=False))
    assert result.embedded_images == 0 and any("does not exist" in note for note in result.notes)


def test_options_are_checked():
    with pytest.raises(UsageError, match="--sample must be at least 1"):
        PreviewOptions(sample=0).checked()
    with pytest.raises(UsageError, match="--check-images must be exists or decode"):
        PreviewOptions(check_images="none").checked()


def test_cli(tmp_path: Path):
    shard = make_dataset(tmp_path / "d")
    runner = CliRunner()
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["preview", str(shard), "--out", str(out), "--sample", "2",
                                 "--seed", "3", "--max-length", "4000", "--num-crops", "16"])
    assert result.exit_code == 0, result.output
    assert "2 records" in result.output and out.is_file()
    assert len(_articles(out.read_text())) == 2 and "num_crops 16" in out.read_text()
    result = runner.invoke(app, ["preview", str(tmp_path / "no.jsonl"), "--out", str(out)])
    assert result.exit_code == 2 and "no such file" in result.output
