"""Training throughput and peak memory of each phiv-train mode, beside the recipe's setup.

For each mode in ``--modes`` (full, freeze-vision, lora, qlora) and each setup in ``--setups``
it builds the model as ``phiv-train`` does (``phiv_train.modes``: precision, attention
fallback, ``prepare_model``; QLoRA through ``load_model``), turns on gradient checkpointing as
transformers' Trainer does, and times optimizer steps: forward under the run's autocast,
backward, clipping at 1.0, AdamW with the recipe's betas, eps and weight decay (none on biases
and norms, as the Trainer groups them) and its linear warm-up. It reports samples/s, tokens/s
(padding excluded), peak memory (``torch.cuda.max_memory_allocated`` and the reserved peak;
on the CPU the process's peak RSS so far), the loss, phiv's ratio to the recipe, and the
recipe's own table (8x A100-80GB, SPEC section 4). One model is alive at a time.

- ``recipe``: 1 sample per step, ``--recipe-attn`` (eager; flash-attention needs flash-attn),
  gradient checkpointing, and in freeze-vision mode the text embeddings frozen too (its
  shared-``wte`` defect). Its ZeRO-2 is not reproduced (one process, no DeepSpeed).
- ``phiv``: ``--batch`` samples per step padded by phiv's collator, ``--attn`` (SDPA),
  ``--gradient-checkpointing`` (on).

Inputs: synthetic document pages (``--pages``, default 1700x2200: 16 crops, 2509 image
tokens at ``--num-crops 16``) with DocVQA-style questions and answers, through phiv's
``Phi3VProcessor`` (tiny tokenizer unless ``--tokenizer DIR``) and ``Phi3VCollator``, prepared
before timing. ``--size full`` is the released architecture (4.15B parameters) initialised at
random directly on the device; QLoRA needs real weights to quantise, so a random bf16
checkpoint is written once (``--qlora-checkpoint``, default a temporary folder in /dev/shm
when it has room) and loaded by ``load_model`` as ``phiv-train --use-qlora`` loads one.
``--size tiny`` (6M parameters) is for CPU smoke runs.

Usage::

    python bench/train.py --device cuda --size full --dtype bf16 --num-crops 16 --batch 4 \\
        --json bench-train.json
    python bench/train.py --device cpu --size tiny --dtype fp32 --num-crops 16 --batch 2 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phiv_data.schema import Record
from phiv_train.config import TrainConfig
from phiv_train.modes import (
    load_model,
    prepare_model,
    resolve_attention,
    resolve_precision,
    trainable_summary,
)
from phiv_train.plan import MODES, RECIPE_MEASUREMENTS

RECIPE_IMAGES_PER_SECOND: dict[tuple[str, str], float] = {
    # images/s on 8x A100-80GB, DocVQA (mean 2443 tokens, num_crops 16), SPEC section 4
    ("full", "eager"): 5.04, ("full", "flash"): 8.66, ("freeze-vision", "flash"): 31.7,
    ("lora", "flash"): 12.1, ("qlora", "flash"): 10.5,
}
RECIPE_GPUS = 8
DECAY_EXCLUDED = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
"""Parameter-name patterns the Trainer exempts from weight decay (with LayerNorm modules)."""

QUESTIONS = (
    ("What is the date mentioned in this letter?", "March 3, 1998"),
    ("To whom is the memorandum addressed?", "Dr. R. L. Stevens, Director of Research"),
    ("What is the total amount due as shown in the invoice at the bottom of the page?", "$1,245.00"),
    ("Which company's name appears in the letterhead?", "Brown & Williamson Tobacco Corporation"),
)


@dataclass(frozen=True)
class Setup:
    """How one side of the comparison trains."""

    name: str  # "recipe" or "phiv"
    batch: int  # samples per optimizer step on the device
    attention: str  # attention asked for (falls back like phiv-train when it cannot run)
    gradient_checkpointing: bool
    embeddings_frozen_with_vision: bool  # the recipe's shared-wte defect


@functools.cache
def _bench_model_module() -> Any:
    """bench/model.py (not a package): its model dimensions are reused here."""
    spec = importlib.util.spec_from_file_location("phiv_bench_model", Path(__file__).with_name("model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw_page(width: int, height: int, seed: int) -> Any:
    """A white page with lines of dark 'text' blocks, like a scanned business document."""
    import random

    from PIL import Image, ImageDraw

    generator = random.Random(seed)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    margin, line = width // 10, max(height // 60, 4)
    for top in range(margin, height - margin, line * 2):
        left = margin
        while left < width - margin:
            word = generator.randint(line, 6 * line)
            draw.rectangle((left, top, min(left + word, width - margin), top + line), fill=(30, 30, 40))
            left += word + line
    return page


def make_samples(processor: Any, count: int, pages: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """``count`` encoded DocVQA-like samples (pages and questions taken in turn)."""
    samples = []
    for index in range(count):
        question, answer = QUESTIONS[index % len(QUESTIONS)]
        width, height = pages[index % len(pages)]
        record = Record.model_validate({
            "id": f"bench-{index}", "source": "docvqa",
            "conversations": [{"images": [f"pages/{index}.png"], "user": question, "assistant": answer}],
        })
        samples.append(processor.encode(record, images=[draw_page(width, height, index)]))
    return samples


def mode_config(mode: str, setup: Setup, args: argparse.Namespace, checkpoint: Path | None) -> TrainConfig:
    """The phiv-train configuration of one run (flags as a user would give them)."""
    return TrainConfig(
        model=str(checkpoint or "random-init"), output_dir=tempfile.gettempdir(), deepspeed="none",
        use_lora=mode in ("lora", "qlora"), use_qlora=mode == "qlora", freeze_vision=mode == "freeze-vision",
        bf16=args.dtype == "bf16", fp16=args.dtype == "fp16", attention=setup.attention,
        gradient_checkpointing=setup.gradient_checkpointing, per_device_batch_size=setup.batch,
        batch_size=setup.batch, lora_rank=args.lora_rank, num_crops=args.num_crops)


def build_model(config: TrainConfig, attention: str, args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The model phiv-train would train for ``config``, random weights, on ``device``."""
    from phiv_train.model import Phi3VForCausalLM

    if config.use_qlora:
        if device.type == "cuda":
            place: int | str = device.index if device.index is not None else torch.cuda.current_device()
        else:
            place = "cpu"
        model = load_model(config, attention=attention, device_map={"": place})
    else:
        dimensions = _bench_model_module().build_config(args.size)
        with torch.device(device):
            model = Phi3VForCausalLM._from_config(dimensions, dtype=resolve_precision(config).weights,
                                                  attn_implementation=attention)
        model.freeze_unused_vision_parameters()  # what from_pretrained does after loading
    model = prepare_model(model, config)
    if config.gradient_checkpointing:  # as transformers' Trainer turns it on
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def build_optimizer(model: nn.Module, config: TrainConfig, steps: int) -> tuple[Any, Any]:
    """AdamW and the linear warm-up schedule with the Trainer's weight-decay groups."""
    from transformers import get_scheduler
    from transformers.trainer_pt_utils import get_parameter_names

    decay = set(get_parameter_names(model, [nn.LayerNorm], DECAY_EXCLUDED))
    trained = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    groups = [{"params": [p for n, p in trained if n in decay], "weight_decay": config.weight_decay},
              {"params": [p for n, p in trained if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, eps=config.adam_epsilon,
                                  betas=(config.adam_beta1, config.adam_beta2))
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=max(steps, config.warmup_steps + 1))
    return optimizer, scheduler


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(mode: str, setup: Setup, args: argparse.Namespace, samples: list[dict[str, Any]],
            device: torch.device, checkpoint: Path | None) -> dict[str, Any]:
    """Build the model of ``mode`` for ``setup`` and time ``args.steps`` optimizer steps."""
    from phiv_train.processing.collator import Phi3VCollator

    result: dict[str, Any] = {"mode": mode, **asdict(setup)}
    config = mode_config(mode, setup, args, checkpoint)
    attention = resolve_attention(config, on_gpu=device.type == "cuda")
    precision = resolve_precision(config)
    result |= {"attention_used": attention, "precision": precision.name}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = build_model(config, attention, args, device)
    if setup.embeddings_frozen_with_vision and config.freeze_vision:
        model.get_input_embeddings().weight.requires_grad_(False)  # the recipe's defect, its memory
    _synchronize(device)
    result["build_seconds"] = round(time.perf_counter() - start, 2)
    result["parameters"] = trainable_summary(model)
    if device.type == "cuda":
        result["model_gb"] = torch.cuda.memory_allocated(device) / 2**30
    collator = Phi3VCollator(padding_side="right")
    batches = [_to_device(collator(samples[i:i + setup.batch]), device)
               for i in range(0, len(samples) - setup.batch + 1, setup.batch)]
    total = args.warmup + args.steps
    optimizer, scheduler = build_optimizer(model, config, total)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    autocast = (torch.autocast(device.type, dtype=precision.compute) if precision.name != "fp32"
                else contextlib.nullcontext())
    scaler = torch.amp.GradScaler(device.type) if precision.name == "fp16" else None
    losses, samples_done, tokens, padded = [], 0, 0, 0
    for step in range(total):
        if step == args.warmup:
            _synchronize(device)
            start = time.perf_counter()
        batch = batches[step % len(batches)]
        with autocast:
            loss = model(**batch).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if step >= args.warmup:
            samples_done += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    _synchronize(device)
    seconds = time.perf_counter() - start
    result |= {
        "step_seconds": seconds / args.steps, "samples_per_second": samples_done / seconds,
        "tokens_per_second": tokens / seconds, "tokens_per_sample": tokens / samples_done,
        "padding_fraction": 1 - tokens / padded, "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
    }
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
    else:  # ru_maxrss is KiB on Linux and the process's peak so far, not this run's alone
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def guarded_run(mode: str, setup: Setup, args: argparse.Namespace, samples: list[dict[str, Any]],
                device: torch.device, checkpoint: Path | None) -> dict[str, Any]:
    """``run_one``, recording a refusal or an out-of-memory instead of stopping the others;
    the run's model and optimizer are freed before the next one is built."""
    from pydantic import ValidationError

    from phiv_data.errors import PhivError

    try:
        return run_one(mode, setup, args, samples, device, checkpoint)
    except torch.cuda.OutOfMemoryError:
        error = "out of memory"
    except ValidationError as refused:  # phiv-train refuses the flags, e.g. flash-attention with fp16
        error = "refused: " + refused.errors()[0]["msg"].removeprefix("Value error, ")
    except (PhivError, ImportError) as refused:
        error = f"{type(refused).__name__}: {refused}"
    except RuntimeError as failure:  # a kernel or library failure: keep the other modes' figures, exit 1
        traceback.print_exc()
        error = f"failed: {type(failure).__name__}: {failure}"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"mode": mode, **asdict(setup), "error": error}


def write_random_checkpoint(args: argparse.Namespace, device: torch.device) -> tuple[Path, bool]:
    """A random bf16 checkpoint for QLoRA to quantise; returns it and whether it is temporary."""
    from phiv_train.model import Phi3VForCausalLM

    if args.qlora_checkpoint and (Path(args.qlora_checkpoint) / "config.json").is_file():
        return Path(args.qlora_checkpoint), False
    if args.qlora_checkpoint:
        directory, temporary = Path(args.qlora_checkpoint), False
    else:
        shm, needed = Path("/dev/shm"), (12 if args.size == "full" else 1) * 2**30
        in_memory = shm.is_dir() and shutil.disk_usage(shm).free > needed  # faster to write and read
        directory = Path(tempfile.mkdtemp(prefix="phiv-bench-random-", dir=shm if in_memory else None))
        temporary = True
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = Phi3VForCausalLM._from_config(_bench_model_module().build_config(args.size), dtype=torch.bfloat16,
                                              attn_implementation="sdpa")
    model.save_pretrained(directory)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return directory, temporary


def recipe_figures(mode: str) -> str:
    """The recipe's memory and per-GPU throughput for ``mode`` (8x A100-80GB, batch 64)."""
    parts = []
    for attention in ("eager", "flash"):
        memory = [gb for m, gpu, count, kind, gb in RECIPE_MEASUREMENTS
                  if (m, gpu, count, kind) == (mode, "A100-80GB", RECIPE_GPUS, attention)]
        speed = RECIPE_IMAGES_PER_SECOND.get((mode, attention))
        text = f"{attention} {memory[0]:g} GB" if memory else f"{attention} -"
        parts.append(text + (f", {speed / RECIPE_GPUS:.2f} img/s/GPU" if speed else ""))
    return "; ".join(parts)


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per run, the ratio of phiv to the recipe, and the recipe's table."""
    print(f"{'mode':<14} {'setup':<7} {'attention':<32} {'batch':>5} {'step s':>7} {'samples/s':>9} "
          f"{'tokens/s':>9} {'pad %':>5} {'peak GB':>8} {'loss':>6} {'vs recipe':>16}")
    for mode in dict.fromkeys(result["mode"] for result in results):
        rows = [result for result in results if result["mode"] == mode]
        recipe = next((row for row in rows if row["name"] == "recipe" and "error" not in row), None)
        for row in rows:
            if "error" in row:
                print(f"{mode:<14} {row['name']:<7} {row['attention']:<32} {row['batch']:>5}  not run: {row['error']}")
                continue
            ratio = ""
            if recipe is not None and row is not recipe:
                ratio = f"{row['samples_per_second'] / recipe['samples_per_second']:.2f}x speed"
                if "reserved_gb" in row:  # on the CPU the peak is the process's so far: no ratio
                    ratio += f", {row['peak_gb'] / recipe['peak_gb']:.2f}x mem"
            used = row["attention_used"]
            label = used if used == row["attention"] else f"{used} (asked {row['attention']})"
            print(f"{mode:<14} {row['name']:<7} {label:<32} {row['batch']:>5} "
                  f"{row['step_seconds']:>7.3f} {row['samples_per_second']:>9.2f} {row['tokens_per_second']:>9.0f} "
                  f"{100 * row['padding_fraction']:>5.1f} {row['peak_gb']:>8.2f} {row['loss_last']:>6.2f} {ratio:>16}")
        print(f"{'':<14} recipe's table, 8x A100-80GB: {recipe_figures(mode)}")


def _pages(text: str) -> list[tuple[int, int]]:
    pages = []
    for item in text.split(","):
        width, height = (int(part) for part in item.lower().strip().split("x"))
        pages.append((width, height))
    return pages


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="model dimensions")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                        help="precision as phiv-train's --bf16/--fp16/neither (fp16: fp32 weights under fp16 autocast)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--setups", default="recipe,phiv", help="comma-separated: recipe, phiv")
    parser.add_argument("--batch", type=int, default=4, help="phiv's samples per step (padded together)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"], help="phiv's attention")
    parser.add_argument("--recipe-attn", default="eager", choices=["eager", "flash_attention_2"],
                        help="the recipe's attention (eager, or flash-attention where flash-attn is installed)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="phiv's gradient checkpointing (the recipe always used it)")
    parser.add_argument("--num-crops", type=int, default=16, help="most 336-pixel crops per page (DocVQA: 16)")
    parser.add_argument("--pages", type=_pages, default=[(1700, 2200)],
                        help="page sizes WxH, comma-separated, used in turn (1700x2200: letter at 200 dpi)")
    parser.add_argument("--lora-rank", type=int, default=64, help="LoRA rank (alpha = 2 x rank, the recipe's)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocates the optimizer state)")
    parser.add_argument("--tokenizer", help="a checkpoint folder whose tokenizer to use (default: phiv's tiny one)")
    parser.add_argument("--qlora-checkpoint", help="folder for the random checkpoint QLoRA loads (reused when present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    args.setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = [mode for mode in args.modes if mode not in MODES] + [
        name for name in args.setups if name not in ("recipe", "phiv")]
    if unknown or args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error(f"bad --modes/--setups/--batch/--steps/--warmup: {', '.join(unknown) or 'see --help'}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every mode for every setup, one model at a time; print a table (and JSON)."""
    from phiv_train.processing.processor import Phi3VProcessor
    from phiv_train.tokenization import build_tiny_tokenizer, load_tokenizer

    args = parse_args(argv)
    device = torch.device(args.device)
    setups = {"recipe": Setup("recipe", 1, args.recipe_attn, True, True),
              "phiv": Setup("phiv", args.batch, args.attn, args.gradient_checkpointing, False)}
    chosen = [setups[name] for name in args.setups]
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else build_tiny_tokenizer()
    processor = Phi3VProcessor(tokenizer, num_crops=args.num_crops)
    samples = make_samples(processor, max(setup.batch for setup in chosen), args.pages)
    checkpoint, temporary = (write_random_checkpoint(args, device) if "qlora" in args.modes else (None, False))
    results = []
    try:
        for mode in args.modes:
            for setup in chosen:
                results.append(guarded_run(mode, setup, args, samples, device, checkpoint if mode == "qlora" else None))
    finally:
        if temporary:
            shutil.rmtree(checkpoint, ignore_errors=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    setting = (f"{args.size} model, {args.dtype}, device {device} ({name}), num_crops {args.num_crops}, pages "
               f"{' '.join(f'{w}x{h}' for w, h in args.pages)}, {args.steps} steps after {args.warmup} warm-up, "
               f"phiv: batch {args.batch} {args.attn} checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
               f"recipe: batch 1 {args.recipe_attn} checkpointing on")
    print(setting)
    print_table(results)
    failed = [result for result in results if result.get("error", "").startswith("failed")]
    if args.json:
        payload = {"setting": setting, "arguments": {k: v for k, v in vars(args).items() if k != "json"},
                   "torch": torch.__version__, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
