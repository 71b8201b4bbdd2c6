"""Forward/backward throughput and peak memory of a randomly initialised Phi-3.5-vision.

For each attention implementation given (side by side, in one run, each on a fresh model
with the same seed and inputs) it times full fine-tuning steps (forward with loss, backward;
no optimizer) on a batch of samples that each hold one image of ``--grid`` crops plus
``--text`` text tokens, and reports steps/s, images/s, tokens/s, peak memory, and the
ratio to the first implementation measured.

- ``--size full``: the released dimensions (4.15B parameters; CLIP ViT-L/14-336, 32-layer
  3072-wide decoder, LongRoPE), initialised at random directly on the device in ``--dtype``.
- ``--size tiny``: the test double's dimensions (6M parameters), for CPU smoke runs.

Usage::

    python bench/model.py --device cuda --dtype bf16 --size full --attn eager,sdpa,flash_attention_2
    python bench/model.py --device cuda --dtype bf16 --size full --attn sdpa --batch 4 --grid 4x4 \\
        --gradient-checkpointing --json bench-model.json
    python bench/model.py --device cpu --dtype fp32 --size tiny --attn eager,sdpa

An implementation that cannot run here (``flash_attention_2`` without the flash-attn
package, off CUDA or in fp32) is reported as unavailable, with the reason, and the others
still run; ``auto`` runs what it resolves to (the table shows which). A run that fails
(out of memory, a kernel error) is reported as failed without losing the other runs'
figures, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import resource
import sys
import time
from typing import Any

import torch

from phiv_data.phi3v import CROP_SIZE
from phiv_train.model import Phi3VConfig, Phi3VForCausalLM, image_token_counts
from phiv_train.model.checkpoint import (
    ATTENTION_CHOICES,
    flash_attention_problem,
    resolve_attention,
)
from phiv_train.model.tiny import RELEASED_CONFIG, tiny_config_dict

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

def build_config(size: str) -> Phi3VConfig:
    """The benchmark model's configuration (``full``: the released one, or ``tiny``)."""
    fields = copy.deepcopy(RELEASED_CONFIG) if size == "full" else tiny_config_dict()
    # The dtype comes from --dtype; the rest are hints for the remote code.
    for key in ("_name_or_path", "auto_map", "_attn_implementation", "torch_dtype", "transformers_version"):
        fields.pop(key, None)
    return Phi3VConfig(**fields)


def make_batch(batch: int, grid: tuple[int, int], text: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """One image of ``grid`` crops and ``text`` text tokens per sample; loss on the text."""
    generator = torch.Generator().manual_seed(seed)
    image_tokens = image_token_counts([grid])[0]
    rows, cols = grid
    ids = torch.randint(3, 32000, (batch, 1 + image_tokens + text), generator=generator)
    ids[:, 0] = 32010
    ids[:, 1 : 1 + image_tokens] = -1
    labels = ids.clone()
    labels[:, : 1 + image_tokens] = -100
    pixels = torch.randn(batch, 1 + rows * cols, 3, CROP_SIZE, CROP_SIZE, generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "pixel_values": pixels.to(device),
        "image_sizes": torch.tensor([[rows * CROP_SIZE, cols * CROP_SIZE]] * batch).to(device),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is KiB on Linux; it is the process peak so far, not per implementation.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_one(args: argparse.Namespace, attention: str, device: torch.device) -> dict[str, Any]:
    """Build a fresh model with ``attention`` and time ``args.steps`` training steps."""
    dtype = DTYPES[args.dtype]
    implementation = resolve_attention(attention, dtype)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    build_start = time.perf_counter()
    with torch.device(device):
        model = Phi3VForCausalLM._from_config(build_config(args.size), dtype=dtype, attn_implementation=implementation)
    model.train()
    if args.freeze_vision:
        for parameter in model.vision_parameters():
            parameter.requires_grad_(False)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    _synchronize(device)
    build_seconds = time.perf_counter() - build_start
    batch = make_batch(args.batch, args.grid, args.text, device, args.seed)

    for _ in range(args.warmup):
        _training_step(model, batch)
    _synchronize(device)
    start = time.perf_counter()
    losses = [_training_step(model, batch) for _ in range(args.steps)]
    _synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    tokens = batch["input_ids"].numel()
    result = {
        "requested": attention,
        "attention": implementation,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "build_seconds": round(build_seconds, 2),
        "step_seconds": seconds,
        "images_per_second": args.batch / seconds,
        "tokens_per_second": tokens / seconds,
        "peak_memory_gb": _peak_memory_gb(device),
        "loss": losses[-1],
    }
    return result


def unavailable_reason(attention: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``attention`` cannot run on ``device`` in ``dtype``, or None when it can."""
    if attention != "flash_attention_2":
        return None
    if device.type != "cuda":
        return f"it needs a CUDA device, not {device.type}"
    return flash_attention_problem(dtype)


def run_all(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Run every implementation in ``args.attn``; unavailable or failed ones get a reason."""
    results = []
    for attention in (name.strip() for name in args.attn.split(",")):
        if not attention:
            continue
        reason = unavailable_reason(attention, device, DTYPES[args.dtype])
        if reason is not None:
            print(f"# {attention}: unavailable, {reason}", flush=True)
            results.append({"requested": attention, "attention": attention, "unavailable": reason})
            continue
        try:
            results.append(run_one(args, attention, device))
        except (RuntimeError, ImportError) as error:
            # Out of memory and kernel failures are RuntimeErrors; keep the other figures.
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"# {attention}: failed, {message}", flush=True)
            results.append({"requested": attention, "attention": attention, "failed": message})
        gc.collect()  # the previous model is unreachable now; free it before the next
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _row(result: dict[str, Any], first: dict[str, Any] | None) -> str:
    label = result["attention"] if result["attention"] == result["requested"] else f"{result['attention']} (asked {result['requested']})"
    if "unavailable" in result:
        return f"{label:<34} unavailable: {result['unavailable']}"
    if "failed" in result:
        return f"{label:<34} failed: {result['failed']}"
    ratio = first["step_seconds"] / result["step_seconds"]
    return (
        f"{label:<34} {result['step_seconds']:>8.3f} {result['images_per_second']:>9.2f} "
        f"{result['tokens_per_second']:>10.0f} {result['peak_memory_gb']:>8.2f} {ratio:>7.2f}x"
    )


def _training_step(model: Phi3VForCausalLM, batch: dict[str, torch.Tensor]) -> float:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return float(loss.detach())


def _grid(text: str) -> tuple[int, int]:
    rows, cols = (int(part) for part in text.lower().split("x"))
    return rows, cols


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every attention implementation, print a table (and JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of weights and activations (no mixed precision: a throughput and memory figure)")
    parser.add_argument("--attn", default="eager,sdpa", help="comma-separated: eager, sdpa, flash_attention_2, auto")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="model dimensions")
    parser.add_argument("--batch", type=int, default=2, help="samples per step (one image each)")
    parser.add_argument("--grid", type=_grid, default=(2, 2), help="crops per image as ROWSxCOLS (2x2: 757 image tokens, 4x4: 2509)")
    parser.add_argument("--text", type=int, default=256, help="text tokens per sample")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint every decoder and CLIP layer")
    parser.add_argument("--freeze-vision", action="store_true", help="no gradients for the CLIP tower")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    unknown = [name.strip() for name in args.attn.split(",") if name.strip() not in ("", *ATTENTION_CHOICES)]
    if unknown:
        parser.error(f"--attn: unknown implementation {', '.join(unknown)} (choose from {', '.join(ATTENTION_CHOICES)})")
    device = torch.device(args.device)
    results = run_all(args, device)
    setting = (
        f"{args.size} model, {args.dtype}, device {device}"
        f" ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}),"
        f" batch {args.batch} x (1 image {args.grid[0]}x{args.grid[1]} crops + {args.text} text tokens),"
        f" gradient checkpointing {'on' if args.gradient_checkpointing else 'off'},"
        f" vision {'frozen' if args.freeze_vision else 'trained'}, {args.steps} steps after {args.warmup} warm-up"
    )
    print(setting)
    print(f"{'attention':<34} {'step s':>8} {'images/s':>9} {'tokens/s':>10} {'peak GB':>8} {'vs first':>8}")
    measured = [result for result in results if "step_seconds" in result]
    for result in results:
        print(_row(result, measured[0] if measured else None))
    if args.json:
        payload = {"setting": setting, "torch": torch.__version__, "results": results}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 1 if any("failed" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
