"""Converters from public datasets' native files to phiv shards.

``CONVERTERS`` maps a dataset name (as typed after ``phiv-data convert``) to the module
that converts it. Each module's docstring names its source, the expected input layout and
an example; each exposes ``convert(src, out, options) -> ConvertReport`` and a pure
function from one native row to one record.
"""

from __future__ import annotations

CONVERTERS: dict[str, str] = {
    "docvqa": "phiv_data.convert.docvqa",
    "nlvr2": "phiv_data.convert.nlvr2",
    "hateful-memes": "phiv_data.convert.hateful_memes",
    "ucf101": "phiv_data.convert.ucf101",
}
"""Dataset name -> module path (imported lazily so that the CLI starts fast)."""
