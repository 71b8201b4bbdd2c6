"""Moving records between phiv and other tools' formats (``phiv-data import`` / ``export``).

``FORMATS`` maps a format name to its module: ``llava`` (LLaVA JSON), ``sharegpt``
(ShareGPT / LLaMA-Factory multimodal JSON) and ``hf`` (Hugging Face ``datasets``, local
parquet or ``save_to_disk``). Image tags and image lists are reconciled in one place,
``phiv_data.interop.tags``; every row problem is reported with its line and never dropped
silently (``phiv_data.interop.common``). Library use::

    from phiv_data.interop import export_files, import_files
    reports = import_files("llava", ["llava_train.json"], "data/imported")
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from phiv_data.errors import UsageError
from phiv_data.interop.common import InteropReport
from phiv_data.interop.runner import (
    EXPORT_IMAGE_MODES,
    HF_LAYOUTS,
    ExportOptions,
    input_stem,
)

FORMATS: dict[str, str] = {
    "llava": "phiv_data.interop.llava",
    "sharegpt": "phiv_data.interop.sharegpt",
    "hf": "phiv_data.interop.hf",
}

__all__ = ["EXPORT_IMAGE_MODES", "FORMATS", "HF_LAYOUTS", "ExportOptions", "InteropReport",
           "export_files", "format_module", "import_files"]


def format_module(name: str) -> ModuleType:
    """The module of a format name.

    Raises:
        UsageError: on an unknown name.
    """
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}", hint=f"use one of {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name])


def _check_inputs(files: Iterable[str | Path]) -> list[Path]:
    paths = [Path(file) for file in files]
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
    stems = [input_stem(path) for path in paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise UsageError(f"several inputs would write {', '.join(duplicates)}",
                         hint="give files with different names, or one call per output folder")
    return paths


def import_files(format_name: str, files: Iterable[str | Path], out: str | Path, *,
                 images_root: str | Path | None = None, strict: bool = False
                 ) -> list[InteropReport]:
    """Import foreign files into phiv shards ``OUT/<stem>.jsonl`` plus ``OUT/manifest.json``.

    Args:
        format_name: ``llava``, ``sharegpt`` or ``hf``.
        files: the input files (for ``hf``: parquet files or ``save_to_disk`` folders).
        out: the output folder (created when missing; its manifest is updated).
        images_root: what image paths are relative to (default: each input's folder).
        strict: fail, writing nothing more, on the first file with any problem.

    Returns:
        One report per input.

    Raises:
        UsageError: on an unknown format or missing input.
        DataError: under ``strict``, or when an input cannot be read at all.
    """
    from phiv_data.interop.runner import import_file, update_manifest

    fmt = format_module(format_name)
    out = Path(out)
    reports, shards = [], []
    for path in _check_inputs(files):
        report, shard = import_file(fmt, path, out, images_root=images_root, strict=strict)
        reports.append(report)
        shards.append(shard)
    inputs = " ".join(str(path) for path in files)
    update_manifest(out, shards, reports, f"phiv-data import {format_name} {inputs}")
    return reports


def export_files(format_name: str, files: Iterable[str | Path], out: str | Path, *,
                 images_root: str | Path | None = None, options: ExportOptions | None = None,
                 strict: bool = False) -> list[InteropReport]:
    """Export phiv shards into one data file per input in ``out`` (plus side files).

    Args:
        format_name: ``llava``, ``sharegpt`` or ``hf``.
        files: phiv JSONL shards.
        out: the output folder.
        images_root: the shards' images root (default: from the manifest, else ``images/``
            beside each shard).
        options: image handling (link, copy, none) and the Hugging Face layout.
        strict: fail on the first file with any problem.

    Returns:
        One report per input.

    Raises:
        UsageError: on an unknown format, image mode or missing input.
        DataError: under ``strict``.
    """
    from phiv_data.interop.runner import export_file

    fmt = format_module(format_name)
    options = options or ExportOptions()
    if options.images not in EXPORT_IMAGE_MODES:
        raise UsageError(f"unknown image mode {options.images!r}",
                         hint=f"use one of {', '.join(EXPORT_IMAGE_MODES)}")
    if options.hf_layout not in HF_LAYOUTS:
        raise UsageError(f"unknown Hugging Face layout {options.hf_layout!r}",
                         hint=f"use one of {', '.join(HF_LAYOUTS)}")
    return [export_file(fmt, path, out, images_root=images_root, options=options, strict=strict)
            for path in _check_inputs(files)]
