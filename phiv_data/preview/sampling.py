"""One streaming pass over a shard: a uniform random sample of lines and dataset counts.

The file is read once, line by line, whatever its size. Every line feeds the streaming
counts (:class:`phiv_data.preview.stats.DatasetCounts`), parsed with ``orjson`` only (full
validation of a million lines is ``phiv-data validate``'s job); a reservoir (Vitter's
algorithm R) keeps a uniform random sample of the raw lines, so memory holds the sample and
the counters, never the file. The sample is drawn with ``random.Random(seed)``: the same
file and seed give the same preview.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from phiv_data.preview.stats import DatasetCounts
from phiv_data.shards import iter_lines


class Reservoir:
    """A uniform random sample of at most ``size`` items from a stream of unknown length."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.items: list[tuple[int, bytes]] = []
        self.seen = 0
        self._rng = rng

    def offer(self, item: tuple[int, bytes]) -> None:
        """Consider one more item; it is kept with probability ``size / seen``."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


@dataclass
class Scan:
    """What one pass over a shard found.

    Attributes:
        shown: the sampled lines to render, ``(line_number, raw_bytes)`` in file order.
        measured: a larger sample (the shown lines included) whose images' headers are
            read for the size and token-length plots, in file order.
        counts: dataset counts over every line.
    """

    shown: list[tuple[int, bytes]]
    measured: list[tuple[int, bytes]]
    counts: DatasetCounts = field(default_factory=DatasetCounts)


def scan(path: str | Path, *, sample: int, measure: int, seed: int) -> Scan:
    """Read ``path`` once: count every line and sample ``sample`` lines to show and
    ``max(sample, measure)`` lines to measure.

    Args:
        path: a JSONL shard.
        sample: how many records to show (all when the file has fewer).
        measure: how many records to read image headers for (plots of sizes and tokens).
        seed: seed of the random sample.

    Returns:
        The :class:`Scan`.
    """
    rng = random.Random(seed)
    reservoir = Reservoir(max(sample, measure), rng)
    counts = DatasetCounts()
    for number, raw in iter_lines(path):
        if not raw.strip():
            counts.blank_lines += 1
            continue
        counts.add_line(raw)
        reservoir.offer((number, raw))
    measured = sorted(reservoir.items)
    # A uniform subset of a uniform sample is a uniform sample.
    shown = measured if len(measured) <= sample else sorted(rng.sample(measured, sample))
    return Scan(shown=shown, measured=measured, counts=counts)
