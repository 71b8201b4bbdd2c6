"""Build DocVQA, NLVR2 and Hateful Memes trees in their native formats, in code.

Used by the converter tests (tiny images) and by ``bench/convert.py`` (realistic sizes).
Every quirk the converters must handle is available as an option: DocVQA's wrapper or bare
list, with or without ``question_types``, an image folder that differs from the
``documents/`` prefix, Hugging Face parquet copies with image bytes; NLVR2's JSON Lines with
varying key order, train ``directory`` buckets, ``.png`` files holding JPEGs, the parquet
variants; Hateful Memes' zero-padded string ids, unlabeled test files, shared dev records and
text with control characters.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# --- images ---------------------------------------------------------------------------------

def document_page(width: int = 17, height: int = 23, seed: int = 0) -> Image.Image:
    """A grayscale scanned page: off-white paper, lines of "words" made of dark strokes,
    paragraph breaks and a few speckles (about 80 KB as PNG at 1700x2250, like a real page)."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width), 250, dtype=np.uint8)
    glyph = max(1, height // 160)  # stroke height of a text line
    pitch = glyph * 3
    margin = width // 12
    for top in range(pitch * 2, height - pitch * 2, pitch):
        if rng.random() < 0.15:
            continue  # paragraph break
        right = width - margin - int(rng.integers(0, max(1, width // 3)))
        column = margin
        while column < right:
            word = int(rng.integers(3, 12)) * max(1, glyph // 2 + 1)
            strokes = rng.integers(0, 2, size=word).astype(bool)
            end = min(right, column + word)
            page[top:top + glyph, column:end][:, strokes[: end - column]] = rng.integers(10, 80)
            column = end + max(2, glyph // 2 + 1)
    speckles = rng.random(page.shape) < 0.002
    page[speckles] = rng.integers(60, 200, size=int(speckles.sum()), dtype=np.uint8)
    return Image.fromarray(page, "L")


def photo(width: int = 16, height: int = 12, seed: int = 0, noise: float = 3.0) -> Image.Image:
    """An RGB picture with smooth gradients and sensor noise (a stand-in for a photo:
    about 500 KB as PNG, 55 KB as JPEG at 640x480)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        (np.sin(x / (7 + seed % 5)) + np.cos(y / (11 + seed % 3))) * 60 + 120,
        (x / max(1, width - 1)) * 200 + 20,
        (y / max(1, height - 1)) * 180 + 40,
    ]
    array = np.stack(channels, axis=-1) + rng.normal(0, noise, size=(height, width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, image_format: str, **save_options: Any) -> bytes:
    """``image`` encoded as ``PNG`` or ``JPEG`` bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save_options)
    return buffer.getvalue()


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but ``manifest.json`` (which records timings), by path."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "manifest.json"}


def assert_same_output_with_one_or_two_workers(convert: Any, src: Path, work: Path) -> None:
    """``convert(src, out, run=...)`` writes the same bytes and report with 1 or 2 workers."""
    from phiv_data.convert.framework import RunOptions

    reports = [convert(src, work / f"workers{count}",
                       run=RunOptions(workers=count, progress=False)).to_dict()
               for count in (1, 2)]
    assert tree_bytes(work / "workers1") == tree_bytes(work / "workers2")
    assert reports[0] == reports[1]


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_json_lines(path: Path, rows: Iterable[dict[str, Any]], *, ensure_ascii: bool = False,
                     crlf: bool = False) -> Path:
    """JSON Lines as the datasets ship them (one object per line, keys as given)."""
    ending = "\r\n" if crlf else "\n"
    text = "".join(json.dumps(row, ensure_ascii=ensure_ascii) + ending for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as a parquet file, the way ``datasets`` saves Hugging Face copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_parquet_with_datasets(path: Path, rows: list[dict[str, Any]],
                                features: dict[str, Any]) -> Path:
    """Rows saved by ``datasets`` itself (``Dataset.to_parquet``), with its feature metadata;
    ``features`` maps a column to a ``datasets`` feature (``datasets.Image()``, ...)."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows, features=datasets.Features(features))
    table.to_parquet(str(path))
    return path


def image_cell(data: bytes, path: str | None) -> dict[str, Any]:
    """A ``datasets`` Image feature as stored in parquet: ``{"bytes", "path"}``."""
    return {"bytes": data, "path": path}


# --- DocVQA ---------------------------------------------------------------------------------

@dataclass
class DocVQATree:
    root: Path
    questions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pages: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes


def docvqa_items(split: str, count: int, *, pages: int, start_id: int = 1000,
                 with_answers: bool = True, with_question_types: bool = True,
                 doc_offset: int = 0) -> list[dict[str, Any]]:
    """Question items as in ``{split}_v1.0.json``; several questions share each page."""
    items = []
    for index in range(count):
        page = index % pages
        doc = f"d{doc_offset + page:03d}x{split[:2]}"
        item: dict[str, Any] = {
            "questionId": start_id + index,
            "question": f"What is the total on page {page} (question {index})?",
            "image": f"documents/{doc}_{page + 1}.png",
            "docId": 100 + doc_offset + page,
            "ucsf_document_id": doc,
            "ucsf_document_page_no": str(page + 1),
            "data_split": split,
        }
        if with_question_types:
            item["question_types"] = ["table/list"] if index % 2 else ["form", "layout"]
        if with_answers:
            item["answers"] = [f"{index}.00", f"${index}.00", f"{index}"][: 1 + index % 3]
        items.append(item)
    return items


def make_docvqa_tree(root: Path, *, splits: dict[str, int] | None = None,
                     page_size: tuple[int, int] = (17, 23), pages_per_split: int = 3,
                     image_folder: str | None = None) -> DocVQATree:
    """The official release: ``train_v1.0_withQT.json`` (wrapper, question types),
    ``val_v1.0.json`` (bare list, no question types), ``test_v1.0.json`` (wrapper, no answers),
    each with its ``documents/`` folder beside it, or every page in ``image_folder`` (the
    later ``spdocvqa_images/`` layout, found by file name)."""
    splits = splits if splits is not None else {"train": 5, "val": 4, "test": 3}
    tree = DocVQATree(root)
    for number, (split, count) in enumerate(splits.items()):
        items = docvqa_items(split, count, pages=pages_per_split, start_id=1000 * (number + 1),
                             with_answers=split != "test",
                             with_question_types=split == "train", doc_offset=number * 10)
        tree.questions[split] = items
        base = root / split
        for item in items:
            name = item["image"].split("/")[-1]
            if name in tree.pages:
                continue
            seed = len(tree.pages)
            data = encode(document_page(*page_size, seed=seed), "PNG")
            tree.pages[name] = data
            folder = root / image_folder if image_folder else base / "documents"
            write_bytes(folder / name, data)
        if split == "train":
            document: Any = {"dataset_name": "docvqa", "dataset_split": split,
                             "dataset_version": "1.0", "data": items}
            file_name = "train_v1.0_withQT.json"
        elif split == "val":
            document, file_name = items, "val_v1.0.json"
        else:
            document = {"dataset_name": "docvqa", "dataset_split": split,
                        "dataset_version": "1.0", "data": items}
            file_name = f"{split}_v1.0.json"
        base.mkdir(parents=True, exist_ok=True)
        (base / file_name).write_text(json.dumps(document, indent=1), encoding="utf-8")
    return tree


def make_docvqa_parquet(root: Path, *, splits: dict[str, int] | None = None,
                        page_size: tuple[int, int] = (17, 23), pages_per_split: int = 2,
                        string_ids: bool = True, files_per_split: int = 1) -> DocVQATree:
    """A Hugging Face copy: ``data/{split}-0000i-of-0000n.parquet`` with the page as bytes
    (``{"bytes", "path"}``), ``questionId`` as a string, ``validation`` for the val split."""
    splits = splits if splits is not None else {"train": 4, "validation": 3, "test": 2}
    tree = DocVQATree(root)
    for number, (split, count) in enumerate(splits.items()):
        items = docvqa_items(split, count, pages=pages_per_split, start_id=1000 * (number + 1),
                             with_answers=split != "test", doc_offset=number * 10)
        rows = []
        for item in items:
            name = item["image"].split("/")[-1]
            if name not in tree.pages:
                tree.pages[name] = encode(document_page(*page_size, seed=len(tree.pages)), "PNG")
            row = dict(item)
            if string_ids:
                row["questionId"] = str(row["questionId"])
            row.setdefault("answers", None)
            row.pop("image")
            row["image"] = image_cell(tree.pages[name], None)
            rows.append(row)
        tree.questions[split] = items
        size = -(-len(rows) // files_per_split)
        for part in range(files_per_split):
            chunk = rows[part * size:(part + 1) * size]
            write_parquet(root / "data" / f"{split}-{part:05d}-of-{files_per_split:05d}.parquet",
                          chunk)
    return tree


# --- NLVR2 ----------------------------------------------------------------------------------

@dataclass
class NLVR2Tree:
    root: Path
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes


def nlvr2_rows(split: str, pairs: int, sentences_per_pair: int = 2, *,
               labeled: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Rows as in ``{split}.json``; key order shuffled per row, labels as strings."""
    rng = random.Random(seed)
    rows = []
    for pair in range(pairs):
        for sentence in range(sentences_per_pair):
            identifier = f"{split}-{100 + pair}-{pair % 2}-{sentence}"
            row: dict[str, Any] = {
                "validation": {"worker": "True"},
                "sentence": f"The left image has {pair + sentence} dogs.",
                "left_url": f"https://example.invalid/{pair}l.jpg",
                "writer": f"w{pair}",
                "label": "True" if (pair + sentence) % 2 == 0 else "False",
                "identifier": identifier,
                "right_url": f"https://example.invalid/{pair}r.jpg",
                "synset": "n02110341",
                "query": "dog",
            }
            if not labeled:
                row.pop("label")
            if split == "train":
                row["directory"] = pair % 3
            keys = list(row)
            rng.shuffle(keys)
            rows.append({key: row[key] for key in keys})
    return rows


def make_nlvr2_tree(root: Path, *, splits: dict[str, int] | None = None,
                    image_size: tuple[int, int] = (16, 12), jpeg_as_png: int = 1,
                    misplaced: int = 0) -> NLVR2Tree:
    """The official layout: ``{split}.json`` (JSON Lines) beside ``images/{split}/``, train
    images in ``images/train/<directory>/``. The first ``jpeg_as_png`` left images of each split
    are JPEG bytes under a ``.png`` name; the first ``misplaced`` train pairs sit in the wrong
    bucket (found by file name)."""
    splits = splits if splits is not None else {"train": 3, "dev": 2, "test1": 2}
    tree = NLVR2Tree(root)
    for number, (split, pairs) in enumerate(splits.items()):
        rows = nlvr2_rows(split, pairs, seed=number)
        tree.rows[split] = rows
        write_json_lines(root / f"{split}.json", rows)
        seen: set[str] = set()
        for row in rows:
            stem = row["identifier"].rsplit("-", 1)[0]
            if stem in seen:
                continue
            pair = len(seen)
            seen.add(stem)
            folder = root / "images" / split
            if split == "train":
                bucket = row["directory"] if pair >= misplaced else row["directory"] + 50
                folder = folder / str(bucket)
            for side in (0, 1):
                picture = photo(*image_size, seed=len(tree.images))
                is_jpeg = side == 0 and pair < jpeg_as_png
                data = encode(picture, "JPEG", quality=90) if is_jpeg else encode(picture, "PNG")
                name = f"{stem}-img{side}.png"
                tree.images[name] = data
                write_bytes(folder / name, data)
    return tree


def make_nlvr2_parquet(root: Path, *, layout: str = "columns",
                       splits: dict[str, int] | None = None,
                       image_size: tuple[int, int] = (16, 12)) -> NLVR2Tree:
    """A Hugging Face copy: ``data/{split}-00000-of-00001.parquet`` with ``left_image`` and
    ``right_image`` columns (``layout="columns"``) or one ``images`` list (``"list"``)."""
    splits = splits if splits is not None else {"train": 2, "validation": 2}
    tree = NLVR2Tree(root)
    for number, (split, pairs) in enumerate(splits.items()):
        rows = nlvr2_rows(split, pairs, seed=number)
        tree.rows[split] = rows
        records = []
        for row in rows:
            stem = row["identifier"].rsplit("-", 1)[0]
            cells = []
            for side in (0, 1):
                name = f"{stem}-img{side}.png"
                if name not in tree.images:
                    tree.images[name] = encode(photo(*image_size, seed=len(tree.images)), "PNG")
                cells.append(image_cell(tree.images[name], name))
            record = {key: value for key, value in row.items()
                      if key not in ("validation", "directory")}
            if layout == "columns":
                record["left_image"], record["right_image"] = cells
            else:
                record["images"] = cells
            records.append(record)
        write_parquet(root / "data" / f"{split}-00000-of-00001.parquet", records)
    return tree


# --- Hateful Memes --------------------------------------------------------------------------

TRICKY_TEXT = ("tab\there\u0000nul \u2028sep \u0085nel \x1bESC \"q\" \\ caf\u00e9 "
               "\U0001F600 \u202eRTL  ")


@dataclass
class HatefulMemesTree:
    root: Path
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def make_hateful_memes_tree(root: Path, *, files: dict[str, int] | None = None,
                            image_size: tuple[int, int] = (14, 10),
                            shared_dev: int = 1) -> HatefulMemesTree:
    """``{name}.jsonl`` files and ``img/``. ``test_seen`` has no labels; every other file is
    labelled (the final test releases carry labels). ``dev_unseen`` starts with the first
    ``shared_dev`` rows of ``dev_seen``. The first train row's text holds control characters and
    non-ASCII text (see ``TRICKY_TEXT``)."""
    files = files if files is not None else {"train": 4, "dev_seen": 3, "dev_unseen": 2,
                                             "test_seen": 2, "test_unseen": 2}
    tree = HatefulMemesTree(root)
    next_id = 1
    for name, count in files.items():
        rows: list[dict[str, Any]] = []
        if name == "dev_unseen" and "dev_seen" in tree.rows:
            rows.extend(dict(row) for row in tree.rows["dev_seen"][:shared_dev])
        while len(rows) < count + (shared_dev if name == "dev_unseen" else 0):
            meme_id = f"{next_id:05d}" if next_id % 2 else f"{next_id * 97 % 100000:05d}"
            next_id += 1
            row: dict[str, Any] = {"id": meme_id, "img": f"img/{meme_id}.png",
                                   "text": f"meme number {meme_id}"}
            if name != "test_seen":
                row["label"] = next_id % 2
            if name == "train" and not rows:
                row["text"] = TRICKY_TEXT
            image_name = f"{meme_id}.png"
            tree.images[image_name] = encode(photo(*image_size, seed=next_id), "PNG")
            write_bytes(root / "img" / image_name, tree.images[image_name])
            rows.append(row)
        tree.rows[name] = rows
        write_json_lines(root / f"{name}.jsonl", rows)
    return tree
