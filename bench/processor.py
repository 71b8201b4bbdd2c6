"""Images per second of ``Phi3VImageProcessor`` next to a straightforward implementation.

Inputs, made in memory (decoding is the same for both and is left out):

- ``page``: document-like grayscale pages, 1700x2250 (DocVQA's usual size), text-like dark
  strokes on white;
- ``photo``: RGB photos 640x480 (landscape) and 768x1024 (portrait), smooth gradients plus
  noise.

For each input kind and ``num_crops`` (4 and 16) the two implementations process the same
list of images, alternating, ``--repeat`` times each; the median time per image is
reported, with the ratio. Before timing, the outputs are asserted identical bit for bit
(``torch.equal`` on ``pixel_values`` and ``image_sizes``).

- ``baseline``: :func:`phiv_train.processing.reference.reference_process_images`, one image
  at a time with PIL and torch, step by step as the reference processor does it
  (torchvision's resize/pad/ToTensor/Normalize written out with PIL and torch, since
  torchvision does not import beside this CPU torch build).
- ``phiv``: :class:`phiv_train.processing.Phi3VImageProcessor`.

Usage::

    python bench/processor.py                  # 8 images per kind, 5 repeats
    python bench/processor.py --images 4 --repeat 3 --threads 1
    python bench/processor.py --device cuda    # also moves each output to the device

Processing runs on the CPU whatever ``--device`` is; with a GPU device both
implementations' outputs are copied to it inside the timed region.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phiv_train.processing import Phi3VImageProcessor
from phiv_train.processing.reference import reference_process_images


def make_page(seed: int, width: int = 1700, height: int = 2250) -> Image.Image:
    """A grayscale page: white, with lines of dark word-like strokes."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width), 250, dtype=np.uint8)
    for top in range(120, height - 120, 38):
        left = 150
        while left < width - 200:
            word = int(rng.integers(30, 140))
            page[top:top + 18, left:left + word] = rng.integers(0, 70)
            left += word + int(rng.integers(12, 25))
    noise = rng.integers(0, 6, page.shape, dtype=np.uint8)
    return Image.fromarray(page - np.minimum(page, noise), "L")


def make_photo(seed: int, width: int, height: int) -> Image.Image:
    """An RGB photo-like image: smooth colour gradients with noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width, ys / height, (xs + ys) / (width + height)], axis=-1) * 200
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def inputs(count: int) -> dict[str, list[Image.Image]]:
    photos = [make_photo(i, 640, 480) if i % 2 == 0 else make_photo(i, 768, 1024)
              for i in range(count)]
    return {"page": [make_page(i) for i in range(count)], "photo": photos}


def timed(function: Callable[[], dict], device: torch.device) -> float:
    start = time.perf_counter()
    out = function()
    if device.type != "cpu":
        out["pixel_values"].to(device)
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per input kind")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per implementation")
    parser.add_argument("--crops", type=int, nargs="+", default=[4, 16], help="num_crops values")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="where outputs go (processing is on CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# python {platform.python_version()}, torch {torch.__version__}, "
          f"Pillow {Image.__version__}, numpy {np.__version__}, torch threads "
          f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"device {device}")
    print(f"# {args.images} images per kind, median of {args.repeat} runs each, alternating; "
          f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'input':<34} {'crops':>5} {'baseline img/s':>15} {'phiv img/s':>11} {'ratio':>6}")
    for kind, images in inputs(args.images).items():
        for num_crops in args.crops:
            processor = Phi3VImageProcessor(num_crops)
            fast = processor(images)
            reference = reference_process_images(images, num_crops)
            assert torch.equal(fast["pixel_values"], reference["pixel_values"]), (kind, num_crops)
            assert torch.equal(fast["image_sizes"], reference["image_sizes"]), (kind, num_crops)
            del fast, reference
            baseline_times, phiv_times = [], []
            run_baseline = functools.partial(reference_process_images, images, num_crops)
            run_phiv = functools.partial(processor, images)
            for _ in range(args.repeat):
                baseline_times.append(timed(run_baseline, device))
                phiv_times.append(timed(run_phiv, device))
            baseline = len(images) / statistics.median(baseline_times)
            phiv = len(images) / statistics.median(phiv_times)
            label = ("page 1700x2250 L" if kind == "page"
                     else "photo 640x480 + 768x1024 RGB")
            print(f"{label:<34} {num_crops:>5} {baseline:>15.1f} {phiv:>11.1f} "
                  f"{phiv / baseline:>5.2f}x", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
