"""Merge chunk results into per-file facts and the checks that span chunks and files.

Duplicate ids (reported on the later line), one CRLF and one unlabeled note per file, empty
files, a missing images root, and the cross-file checks: identical image content under
different names, and images shared between the files given together (train/eval leakage).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from phiv_data.validate.chunk import ChunkResult
from phiv_data.validate.issues import Issue
from phiv_data.validate.options import ValidationOptions
from phiv_data.validate.report import FileSummary

_ONCE_PER_IMAGE = frozenset({"W-IMAGE-MODE", "W-IMAGE-EXIF-ROTATED", "W-IMAGE-ASPECT"})
"""Warnings about an image itself: reported at its first use only, even across workers."""


class _IdIndex:
    """Ids seen so far in one file. A plain set while ids are unique (one hash per id);
    the first line of each id is only worked out once a duplicate shows up."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.chunks: list[tuple[int, list[str | None]]] = []
        self.first_line: dict[str, int] | None = None

    def add(self, ids: list[str | None], base: int, shown: str) -> list[Issue]:
        self.chunks.append((base, ids))
        if self.first_line is None:
            before = len(self.seen)
            self.seen.update(ids)
            self.seen.discard(None)  # type: ignore[arg-type]
            if len(self.seen) - before == len(ids) - ids.count(None):
                return []
            self.first_line = {}
            for chunk_base, chunk_ids in self.chunks[:-1]:
                self._index(chunk_ids, chunk_base, shown)
            self.seen = set()
        return self._index(ids, base, shown)

    def _index(self, ids: list[str | None], base: int, shown: str) -> list[Issue]:
        assert self.first_line is not None
        issues = []
        for line, record_id in enumerate(ids, start=base + 1):
            if record_id is None:
                continue
            first = self.first_line.setdefault(record_id, line)
            if first != line:
                issues.append(Issue("E-ID-DUPLICATE", f"duplicate id {record_id!r} (first used "
                                    f"on line {first}): give each record its own id", shown,
                                    line, "id", record_id))
        return issues


def _reference_lines(result: ChunkResult, base: int, wanted: set[str]) -> dict[str, int]:
    """First line of each wanted image path within a chunk."""
    found: dict[str, int] = {}
    paths = iter(result.references)
    for line, images in enumerate(result.reference_counts, start=base + 1):
        for _ in range(images):
            path = next(paths)
            if path in wanted and path not in found:
                found[path] = line
    return found


def _field_order(field: str | None) -> tuple:
    # Natural order: images[2] before images[10]; line-level issues first.
    if not field:
        return ()
    # isdecimal, not isdigit: '²' is a digit that int() refuses (an unknown field name).
    return tuple(int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", field))


def merge_results(chunk_results: Iterable[ChunkResult], summaries: list[FileSummary],
                  options: ValidationOptions) -> list[Issue]:
    """Fill ``summaries`` from chunk results (in task order, taken one at a time as they
    come) and return every issue, by file and line."""
    results: list[ChunkResult] = []
    issues: list[Issue] = []
    file_of_issue: list[int] = []
    bases: list[int] = []
    seen_ids = [_IdIndex() for _ in summaries]
    crlf: dict[int, tuple[int, int]] = {}
    unlabeled_first: dict[int, int] = {}
    lines_so_far = [0] * len(summaries)

    def add(index: int, found: list[Issue]) -> None:
        issues.extend(found)
        file_of_issue.extend([index] * len(found))

    for result in chunk_results:
        results.append(result)
        index = result.file_index
        summary = summaries[index]
        base = lines_so_far[index]
        bases.append(base)
        lines_so_far[index] += result.lines
        add(index, [issue.at(file=summary.shown, line_offset=base) for issue in result.issues])
        add(index, seen_ids[index].add(result.ids, base, summary.shown))
        summary.lines += result.lines
        summary.size_bytes += result.size
        summary.records += result.records
        summary.unlabeled += result.unlabeled
        summary.images += result.images
        summary.images_per_record.update(result.images_per_record)
        summary.labels.update(result.labels)
        summary.token_lengths.extend(result.token_lengths)
        if result.crlf:
            first = crlf.get(index, (0, result.first_crlf + base))[1]  # type: ignore[operator]
            crlf[index] = (crlf.get(index, (0, 0))[0] + result.crlf, first)
        if result.first_unlabeled is not None and index not in unlabeled_first:
            unlabeled_first[index] = result.first_unlabeled + base

    for index, summary in enumerate(summaries):
        if index in crlf:
            total, first = crlf[index]
            add(index, [Issue("W-CRLF", f"{total:,} line(s) end with CRLF (first here): "
                              "convert to LF line endings", summary.shown, first)])
        if index in unlabeled_first:
            add(index, [Issue("I-UNLABELED", f"{summary.unlabeled:,} record(s) have no answer "
                              "in their last turn (first here): usable for evaluation only",
                              summary.shown, unlabeled_first[index])])
        if summary.records == 0 and not any(
                issue.severity == "error" for issue, owner in zip(issues, file_of_issue)
                if owner == index):
            add(index, [Issue("E-EMPTY-FILE", "the file holds no records: write records into "
                              "it or leave it out", summary.shown)])
        if summary.images and options.check_images != "none" and not summary.images_root_exists:
            add(index, [Issue("E-IMAGES-ROOT-MISSING", f"images root {summary.images_root} "
                              "does not exist: pass --images-root DIR (image files were not "
                              "checked)", summary.shown)])
    add_cross_file(results, bases, summaries, add)

    # One report per image and code per file, even when several workers met the image.
    unique: list[tuple[int, Issue]] = []
    reported: set[tuple[int, str, str]] = set()
    for owner, issue in zip(file_of_issue, issues):
        if issue.code in _ONCE_PER_IMAGE:
            key = (owner, issue.code, issue.message)
            if key in reported:
                continue
            reported.add(key)
        unique.append((owner, issue))
    unique.sort(key=lambda pair: (pair[0], pair[1].line or 0, _field_order(pair[1].field)))
    for owner, issue in unique:
        if issue.severity == "error":
            summaries[owner].errors += 1
        elif issue.severity == "warning":
            summaries[owner].warnings += 1
    return [issue for _, issue in unique]


def add_cross_file(results: list[ChunkResult], bases: list[int],
                   summaries: list[FileSummary], add) -> None:
    """Identical content (W-IMAGE-DUPLICATE, W-LEAK-CONTENT) and shared images
    (W-LEAK-SHARED), each reported at the later occurrence."""
    first_content: dict[str, tuple[int, str, str, int]] = {}
    # Each worker lists an image at its first use in that worker: with several workers the
    # same (file, image) comes more than once and is reported at its first use only.
    reported: set[tuple[int, str]] = set()
    for result, base in zip(results, bases):
        index = result.file_index
        shown = summaries[index].shown
        for sha, path, line, field_path, record_id in result.content:
            if (index, path) in reported:
                continue
            reported.add((index, path))
            earlier = first_content.get(sha)
            where = line + base
            if earlier is None:
                first_content[sha] = (index, path, shown, where)
                continue
            other_index, other_path, other_shown, other_line = earlier
            if other_path == path:
                continue  # the same image in another file (W-LEAK-SHARED covers it)
            if other_index == index:
                add(index, [Issue("W-IMAGE-DUPLICATE", f"image {path!r} has the same content "
                                  f"as {other_path!r} (line {other_line}): drop the copy or "
                                  "refer to one file", shown, where, field_path, record_id)])
            else:
                add(index, [Issue("W-LEAK-CONTENT", f"image {path!r} has the same content as "
                                  f"{other_path!r} used by {other_shown}:{other_line}: "
                                  "train/eval leakage? keep it in one split only", shown, where,
                                  field_path, record_id)])
    if len(summaries) < 2:
        return
    owners: dict[str, tuple[int, str]] = {}
    for index, summary in enumerate(summaries):
        root = f"{summary.images_root}/" if summary.images_root else ""
        chunks = [(result, base) for result, base in zip(results, bases)
                  if result.file_index == index]
        mine = set()
        for result, _ in chunks:
            mine.update(map(root.__add__, result.references))
        shared = {path for path in mine if path in owners and owners[path][0] != index}
        if shared:
            relative = {path[len(root):] for path in shared}
            located: dict[str, int] = {}
            for result, base in chunks:
                for path, line in _reference_lines(result, base, relative).items():
                    located.setdefault(path, line)
            # By line, then name: set order would differ from run to run (str hashes).
            for path in sorted(relative, key=lambda item: (located.get(item, 0), item)):
                other_index, other_shown = owners[root + path]
                add(index, [Issue("W-LEAK-SHARED", f"image {path!r} is also used by "
                                  f"{other_shown}: train/eval leakage? keep it in one split "
                                  "only", summary.shown,
                                  located.get(path))])
        for path in mine:
            owners.setdefault(path, (index, summary.shown))
