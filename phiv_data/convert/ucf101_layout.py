"""Finding UCF-101 videos and their splits: the recipe's subset or the official release.

See :mod:`phiv_data.convert.ucf101` for both layouts. Everything here is deterministic:
videos are sorted by path within a split, classes by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from phiv_data.errors import DataError, Location, UsageError, display_path

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg",
                              ".mpeg", ".wmv", ".flv", ".ogv"})
LISTS_DIR = "ucfTrainTestlist"
_GROUP = re.compile(r"_g(\d+)_c\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split."""

    video: str
    """Path relative to ``--src``, '/' separators."""
    class_name: str
    missing: bool = False
    listed_in: str | None = None


@dataclass
class Layout:
    """The videos found, by split, and what the prompt lists."""

    kind: str
    """``subset`` or ``official``."""
    videos: dict[str, list[VideoEntry]]
    prompt_classes: list[str]
    notes: list[str] = field(default_factory=list)


def group_of(video: str) -> int | None:
    """The group number of an official UCF-101 file name (``v_X_g08_c01.avi`` -> 8)."""
    match = _GROUP.search(Path(video).stem)
    return int(match.group(1)) if match else None


def _is_video(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in VIDEO_EXTENSIONS)


def _subset_split_dirs(src: Path) -> list[str]:
    return [split for split in SPLITS if (src / split).is_dir()
            and any(child.is_dir() for child in (src / split).iterdir())]


def _lists_dir(src: Path) -> Path | None:
    for candidate in (src / LISTS_DIR, src.parent / LISTS_DIR):
        if candidate.is_dir():
            return candidate
    return None


def _select_classes(found: list[str], classes: tuple[str, ...] | None, where: str
                    ) -> list[str]:
    if classes is None:
        return sorted(found)
    unknown = sorted(set(classes) - set(found))
    if unknown:
        shown = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
        raise UsageError(f"--classes: {', '.join(unknown)} not found in {where}",
                         hint=f"class names are folder names, case-sensitive: {shown}")
    return sorted(set(classes))


def find_videos(src: Path, *, fold: int = 1, val_groups: int = 2,
                classes: tuple[str, ...] | None = None) -> Layout:
    """Detect the layout under ``src`` and list its videos per split.

    Raises:
        UsageError: no known layout, both layouts, bad ``--fold`` or unknown ``--classes``.
        DataError: a malformed line in a split list (file and line given).
    """
    if not src.is_dir():
        raise UsageError(f"--src {display_path(src)} is not a directory")
    subset_splits, lists = _subset_split_dirs(src), _lists_dir(src)
    if subset_splits and lists is not None:
        raise UsageError(f"{display_path(src)} has both split folders ({', '.join(subset_splits)}"
                         f") and {LISTS_DIR}/: cannot tell which layout to use",
                         hint="point --src at one dataset tree")
    if subset_splits:
        return _subset(src, subset_splits, classes)
    if lists is not None:
        return _official(src, lists, fold, val_groups, classes)
    class_dirs = [child for child in src.iterdir() if child.is_dir()
                  and any(_is_video(path) for path in child.iterdir())]
    if class_dirs:
        raise UsageError(f"{display_path(src)} holds class folders but no {LISTS_DIR}/ saying "
                         "which videos are train and test",
                         hint="unzip UCF101TrainTestSplits-RecognitionTask.zip into it, or "
                         "arrange the videos as train/<Class>/, val/<Class>/, test/<Class>/")
    raise UsageError(f"no UCF-101 videos under {display_path(src)}",
                     hint="expected train/<Class>/*.avi (the recipe's subset) or <Class>/*.avi "
                     f"with {LISTS_DIR}/ (the official release)")


def _subset(src: Path, splits: list[str], classes: tuple[str, ...] | None) -> Layout:
    found: dict[str, list[VideoEntry]] = {}
    ignored = 0
    for split in splits:
        entries = []
        for child in (src / split).iterdir():
            if not child.is_dir():
                ignored += not child.name.startswith(".")
                continue
            for path in child.iterdir():
                if _is_video(path):
                    entries.append(VideoEntry(path.relative_to(src).as_posix(), child.name))
                elif not path.name.startswith("."):
                    ignored += 1
        found[split] = entries
    class_names = sorted({entry.class_name for entries in found.values() for entry in entries})
    prompt_classes = _select_classes(class_names, classes, display_path(src))
    keep = set(prompt_classes)
    videos = {split: sorted((entry for entry in entries if entry.class_name in keep),
                            key=lambda entry: entry.video) for split, entries in found.items()}
    notes = [(f"layout: the recipe's subset ({', '.join(f'{split}/' for split in splits)} of "
              "class folders)"),
             f"classes: {len(prompt_classes)} ({'--classes' if classes else 'class folders'})"]
    notes += [f"{split}: {len(videos.get(split, []))} videos" for split in splits]
    if ignored:
        notes.append(f"ignored {ignored} files that are not videos in class folders")
    return Layout("subset", videos, prompt_classes, notes)


def _read_list(path: Path) -> list[tuple[int, list[str]]]:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()]


def _resolve(root: Path, relative: str, cache: dict[Path, dict[str, str]]) -> str | None:
    """The on-disk relative path of a listed video, tolerating a different letter case."""
    if (root / relative).is_file():
        return relative
    folder, _, name = relative.rpartition("/")
    directory = root / folder
    if directory not in cache:
        cache[directory] = ({child.name.lower(): child.name for child in directory.iterdir()}
                            if directory.is_dir() else {})
    actual = cache[directory].get(name.lower())
    return f"{folder}/{actual}" if actual else None


def _official(src: Path, lists: Path, fold: int, val_groups: int,
              classes: tuple[str, ...] | None) -> Layout:
    if fold not in (1, 2, 3):
        raise UsageError(f"--fold must be 1, 2 or 3, not {fold}")
    if val_groups < 0:
        raise UsageError(f"--val-groups must be 0 or more, not {val_groups}")
    root = src / "UCF-101" if (src / "UCF-101").is_dir() else src
    prefix = "" if root == src else "UCF-101/"
    class_index: list[str] = []
    if (lists / "classInd.txt").is_file():
        for number, parts in _read_list(lists / "classInd.txt"):
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError("expected '<index> <ClassName>'",
                                location=Location(display_path(lists / "classInd.txt"), number))
            class_index.append(parts[1])
    listed: dict[str, list[VideoEntry]] = {"train": [], "test": []}
    cache: dict[Path, dict[str, str]] = {}
    seen: set[tuple[str, str]] = set()
    repeated = 0
    for split in ("train", "test"):
        path = lists / f"{split}list0{fold}.txt"
        if not path.is_file():
            raise UsageError(f"{display_path(path)} not found",
                             hint=f"{LISTS_DIR}/ must hold trainlist0{fold}.txt and "
                             f"testlist0{fold}.txt for --fold {fold}")
        for number, parts in _read_list(path):
            relative = parts[0].replace("\\", "/")
            if len(parts) > 2 or relative.count("/") != 1 or relative.startswith("/"):
                raise DataError(f"expected 'Class/video.avi' (and a label index), got "
                                f"{' '.join(parts)!r}",
                                location=Location(display_path(path), number))
            if (split, relative) in seen:
                repeated += 1
                continue
            seen.add((split, relative))
            resolved = _resolve(root, relative, cache)
            listed[split].append(VideoEntry(prefix + (resolved or relative),
                                            relative.split("/")[0], missing=resolved is None,
                                            listed_in=path.name))
    found_classes = class_index or sorted({entry.class_name for entries in listed.values()
                                           for entry in entries})
    prompt_classes = _select_classes(found_classes, classes, display_path(lists / "classInd.txt"))
    keep = set(prompt_classes)
    train = [entry for entry in listed["train"] if entry.class_name in keep]
    groups = sorted({group for entry in train if (group := group_of(entry.video)) is not None})
    val_set = set(groups[-val_groups:]) if val_groups else set()
    videos = {
        "train": sorted((entry for entry in train if group_of(entry.video) not in val_set),
                        key=lambda entry: entry.video),
        "val": sorted((entry for entry in train if group_of(entry.video) in val_set),
                      key=lambda entry: entry.video),
        "test": sorted((entry for entry in listed["test"] if entry.class_name in keep),
                       key=lambda entry: entry.video),
    }
    notes = [f"layout: official UCF-101 release ({display_path(lists)}/), fold {fold}",
             f"classes: {len(prompt_classes)} (" + ("--classes" if classes else
                                                   "classInd.txt" if class_index else
                                                   "split lists") + ")",
             (f"val: groups {', '.join(f'g{group:02d}' for group in sorted(val_set)) or 'none'}"
              f" carved from trainlist0{fold}.txt")]
    notes += [f"{split}: {len(videos[split])} videos" for split in SPLITS]
    missing = sum(entry.missing for entries in videos.values() for entry in entries)
    if missing:
        notes.append(f"{missing} listed videos are missing (see skipped)")
    if repeated:
        notes.append(f"{repeated} repeated lines in the split lists were ignored")
    return Layout("official", {split: entries for split, entries in videos.items() if entries},
                  prompt_classes, notes)
