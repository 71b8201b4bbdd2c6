"""``phiv-train plan``: which mode fits on which GPUs, and how much memory each one needs.

The estimate adds up, per GPU and for one micro-batch:

- weights: 2 bytes per parameter in 16-bit runs; 4 for LoRA under fp16 mixed precision
  (the base stays fp32, as in the recipe); QLoRA: 0.516 bytes per quantised parameter
  (nf4 + double-quantised scales) and 4 bytes for the rest (PEFT upcasts it);
- trained parameters: full fine-tuning keeps 16-bit gradients (2 B/param) and ZeRO-2
  partitions the rest over the GPUs (``ZERO_PARTITION_BYTES`` per parameter divided by
  the number of GPUs: fp32 master weights, Adam moments, fp32 gradient partition and
  DeepSpeed's buffers); LoRA keeps 16 B per adapter parameter (fp32 weight, gradient, Adam);
- activations: per token (checkpoint boundaries and logits), per image crop through a
  trained vision tower, and the attention matrices of eager attention
  (``heads * tokens^2 * 2`` bytes per matrix), which flash-attention never stores;
- 1 GiB for the CUDA context and allocator.

The per-token figure follows from the architecture; the per-crop, eager-attention and
ZeRO-partition figures were fitted by least squares on the recipe's measured table (8x
A100-80GB, batch 64, DocVQA at 2443 tokens and num_crops 16). ``recipe_comparison()``
shows every measured figure next to its estimate; ``tests/test_plan.py`` keeps them within
10%. The recipe's runs without flash-attention are taken as its V100-style command
(fp16 mixed precision), which is what their figures imply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from phiv_data.errors import UsageError

GIB = 2**30
MODES = ("full", "freeze-vision", "lora", "qlora")

# Fitted on the recipe's A100 table (see the module docstring); bytes unless stated.
ZERO_PARTITION_BYTES = 22.0
"""Per trained parameter, divided over the GPUs by ZeRO-2."""
TOKEN_ACTIVATION_BYTES = 0.7e6
"""Per token: 32 checkpointed layer inputs (196 KB), logits in 16 and 32 bits, one layer."""
CROP_ACTIVATION_BYTES = {"full": 383e6, "lora": 194e6}
"""Per 336-pixel crop through a trained CLIP tower (fully trained, or with LoRA)."""
EAGER_ATTENTION_MATRICES = {"deepspeed": 6.0, "lora": 65.4}
"""Eager attention matrices alive at the peak: one recomputed layer (checkpointed), or
two per layer when the recipe's LoRA runs kept them all."""
OVERHEAD_BYTES = 1 * GIB
TIGHT_FACTOR = 1.3
"""Estimates up to this multiple of a card's memory may still fit: the recipe measured ~32 GB
on V100-32GB for runs that showed 42-50 GB on A100-80GB, because PyTorch's caching allocator
keeps blocks while memory is plentiful and gives them back when it is not."""


@dataclass(frozen=True)
class ModelShape:
    """Phi-3.5-vision's dimensions (SPEC section 3)."""

    vocab: int = 32064
    hidden: int = 3072
    intermediate: int = 8192
    layers: int = 32
    heads: int = 32
    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    vision_tokens: int = 577  # 24x24 patches + class token at 336 pixels

    @property
    def decoder_linear(self) -> int:
        """Weights of the decoder's linear layers (attention and MLP)."""
        h, i = self.hidden, self.intermediate
        return self.layers * (h * 3 * h + h * h + h * 2 * i + i * h)

    @property
    def decoder(self) -> int:
        """Decoder parameters: embeddings, layers, norms, lm_head."""
        return 2 * self.vocab * self.hidden + self.decoder_linear + (2 * self.layers + 1) * self.hidden

    @property
    def vision_layer(self) -> int:
        """One CLIP encoder layer."""
        d, i = self.vision_hidden, self.vision_intermediate
        return 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d

    @property
    def vision_linear(self) -> int:
        """Weights of CLIP's linear layers (what 4-bit quantisation converts)."""
        d, i = self.vision_hidden, self.vision_intermediate
        return self.vision_layers * (4 * d * d + 2 * d * i)

    @property
    def projector_linear(self) -> int:
        """Weights of the two projection layers."""
        return 4 * self.vision_hidden * self.hidden + self.hidden * self.hidden

    @property
    def vision(self) -> int:
        """The CLIP ViT-L/14-336 tower."""
        d = self.vision_hidden
        embeddings = 3 * 14 * 14 * d + d + self.vision_tokens * d
        return embeddings + 2 * d + self.vision_layers * self.vision_layer + 2 * d

    @property
    def projector(self) -> int:
        """Image projection MLP and the two learned separators."""
        d, h = 4 * self.vision_hidden, self.hidden
        return d * h + h + h * h + h + 2 * d

    @property
    def total(self) -> int:
        """All parameters (about 4.15 billion)."""
        return self.decoder + self.vision + self.projector

    def lora(self, rank: int, *, vision: bool) -> int:
        """Adapter parameters of the recipe's LoRA targets at this rank."""
        h, i, d = self.hidden, self.intermediate, self.vision_hidden
        count = self.layers * rank * ((h + 3 * h) + (h + h) + (h + 2 * i) + (i + h))
        count += rank * (h + self.vocab)  # lm_head
        if vision:  # every CLIP layer but the unused last one, and the projector
            per_layer = rank * (4 * 2 * d + 2 * (d + self.vision_intermediate))
            count += (self.vision_layers - 1) * per_layer + rank * (4 * d + 3 * h)
        return count


@dataclass(frozen=True)
class Workload:
    """What one sample looks like and how the run is set up."""

    tokens: int = 2443  # DocVQA's mean at num_crops 16 (the recipe's benchmark)
    crops: int = 17  # images x (num_crops + 1): the global view and 16 crops
    per_device_batch: int = 1
    lora_rank: int = 64


@dataclass(frozen=True)
class Estimate:
    """Memory per GPU of one configuration, by term, in GiB."""

    mode: str
    attention: str
    precision: str
    gpus: int
    terms: dict[str, float]

    @property
    def total(self) -> float:
        """Sum of the terms in GiB."""
        return sum(self.terms.values())


def estimate_memory(mode: str, *, gpus: int, attention: str = "flash", precision: str = "bf16",
                    workload: Workload = Workload(), shape: ModelShape = ModelShape()) -> Estimate:
    """Estimate peak memory per GPU.

    Args:
        mode: ``full``, ``freeze-vision``, ``lora`` or ``qlora``.
        gpus: data-parallel GPUs in total (ZeRO-2 partitions over all of them).
        attention: ``flash`` or ``eager`` (SDPA's memory-efficient kernel is close to flash).
        precision: ``bf16``, ``fp16`` (mixed) or ``fp32``.
        workload: tokens, crops, per-device batch and LoRA rank.
        shape: the model's dimensions.

    Returns:
        The estimate with its terms.

    Raises:
        ValueError: for an unknown mode, attention or precision.
    """
    if mode not in MODES or attention not in ("flash", "eager", "sdpa") or precision not in (
            "bf16", "fp16", "fp32"):
        raise ValueError(f"unknown configuration {mode}/{attention}/{precision}")
    batch = workload.per_device_batch
    terms: dict[str, float] = {}
    weight_bytes = 4 if precision == "fp32" else 2
    trains_vision = mode in ("full", "lora", "qlora")
    if mode in ("full", "freeze-vision"):
        trained = (shape.total - shape.vision_layer - 2 * shape.vision_hidden if mode == "full"
                   else shape.decoder + shape.projector)
        terms["weights"] = weight_bytes * shape.total
        terms["gradients (16-bit)"] = 2 * trained
        terms["ZeRO-2 partition"] = ZERO_PARTITION_BYTES * trained / gpus
        family = "deepspeed"
    else:
        adapters = shape.lora(workload.lora_rank, vision=True)
        if mode == "lora":
            terms["weights"] = (2 if precision == "bf16" else 4) * shape.total
        else:
            quantised = shape.decoder_linear + shape.vision_linear + shape.projector_linear
            terms["weights"] = 0.516 * quantised + 4 * (shape.total - quantised)
        terms["LoRA adapters and Adam"] = 16 * adapters
        family = "lora"
    terms["activations (tokens)"] = TOKEN_ACTIVATION_BYTES * workload.tokens * batch
    if trains_vision:
        per_crop = CROP_ACTIVATION_BYTES["full" if mode == "full" else "lora"]
        terms["activations (vision)"] = per_crop * workload.crops * batch
    if attention == "eager":
        matrix = shape.heads * workload.tokens**2 * 2 * batch
        terms["eager attention"] = EAGER_ATTENTION_MATRICES[family] * matrix
        if mode == "full":  # CLIP's own attention probabilities, kept for its backward
            terms["eager attention"] += (shape.vision_layers * workload.crops * shape.vision_heads
                                         * shape.vision_tokens**2 * 2 * batch)
    terms["CUDA context"] = OVERHEAD_BYTES
    return Estimate(mode, attention, precision, gpus, {k: v / GIB for k, v in terms.items()})


RECIPE_MEASUREMENTS: tuple[tuple[str, str, int, str, float], ...] = (
    # (mode, GPU, GPUs in total, attention, measured GB per GPU), SPEC section 4
    ("full", "A100-80GB", 8, "eager", 42), ("full", "A100-80GB", 8, "flash", 36),
    ("full", "A100-80GB", 16, "flash", 29), ("full", "A100-80GB", 32, "flash", 26),
    ("freeze-vision", "A100-80GB", 8, "eager", 29), ("freeze-vision", "A100-80GB", 8, "flash", 27),
    ("lora", "A100-80GB", 8, "eager", 50), ("lora", "A100-80GB", 8, "flash", 16),
    ("qlora", "A100-80GB", 8, "eager", 32), ("qlora", "A100-80GB", 8, "flash", 10),
    ("full", "V100-32GB", 8, "eager", 32), ("freeze-vision", "V100-32GB", 8, "eager", 27),
    ("lora", "V100-32GB", 8, "eager", 30),
)


def recipe_comparison() -> list[dict[str, object]]:
    """Each measured figure of the recipe next to this module's estimate.

    Runs with flash-attention are bf16; runs without it fp16 mixed precision (V100-style).
    On V100-32GB the card's size caps what the allocator keeps, so estimates above 32 GB
    there mean "fits only tightly".
    """
    rows = []
    for mode, gpu, count, attention, measured in RECIPE_MEASUREMENTS:
        precision = "bf16" if attention == "flash" else "fp16"
        estimate = estimate_memory(mode, gpus=count, attention=attention, precision=precision)
        rows.append({"mode": mode, "gpus": f"{count}x{gpu}", "attention": attention,
                     "precision": precision, "measured_gb": measured,
                     "estimated_gb": round(estimate.total, 1),
                     "error_percent": round(100 * (estimate.total - measured) / measured)})
    return rows


@dataclass(frozen=True)
class GpuKind:
    """What matters about a GPU model for the recipe's guidance."""

    memory_gb: float
    bf16: bool  # Ampere or newer: bf16 and flash-attention 2
    qlora: bool  # Turing or newer (the recipe's requirement for 4-bit QLoRA)


GPU_KINDS: dict[str, GpuKind] = {
    "H200": GpuKind(141, True, True), "H100": GpuKind(80, True, True),
    "A100": GpuKind(80, True, True), "A800": GpuKind(80, True, True),
    "L40S": GpuKind(48, True, True), "L40": GpuKind(48, True, True),
    "A6000": GpuKind(48, True, True), "A10G": GpuKind(24, True, True),
    "A10": GpuKind(24, True, True), "L4": GpuKind(24, True, True),
    "RTX4090": GpuKind(24, True, True), "RTX3090": GpuKind(24, True, True),
    "RTX8000": GpuKind(48, False, True), "RTX6000": GpuKind(24, False, True),
    "T4": GpuKind(16, False, True), "V100": GpuKind(32, False, False),
}
"""Known GPU models; ``--gpus NxNAME-MEMGB`` may name others when it states the memory."""


@dataclass(frozen=True)
class GpuSetup:
    """The GPUs a run would use."""

    count: int  # per node
    name: str
    memory_gb: float
    kind: GpuKind
    nodes: int = 1

    @property
    def total(self) -> int:
        """GPUs over all nodes."""
        return self.count * self.nodes


def parse_gpus(text: str, *, nodes: int = 1) -> GpuSetup:
    """Parse ``8xA100-80GB`` (count, model, optional memory).

    Raises:
        UsageError: when the text does not have that form or names an unknown model
            without its memory.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9 ]+?)(?:[- ](\d+(?:\.\d+)?)\s*G[Bi]?B?)?\s*", text)
    if not match or int(match[1]) < 1:
        raise UsageError(f"--gpus {text!r}: expected COUNTxMODEL[-MEMORYGB], e.g. 8xA100-80GB")
    name = re.sub(r"[\s-]", "", match[2]).upper().removeprefix("NVIDIA")
    known = next((key for key in sorted(GPU_KINDS, key=len, reverse=True) if key in name), None)
    if known is None and match[3] is None:
        raise UsageError(f"--gpus {text!r}: unknown GPU model {match[2]!r}",
                         hint=f"state its memory (e.g. 4x{match[2]}-48GB) or use one of "
                              + ", ".join(GPU_KINDS))
    kind = GPU_KINDS[known] if known else GpuKind(float(match[3]), True, True)
    memory = float(match[3]) if match[3] else kind.memory_gb
    return GpuSetup(int(match[1]), known or name, memory, kind, nodes)


def detect_gpus(*, nodes: int = 1) -> GpuSetup | None:
    """The GPUs of this machine, or ``None`` without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    bf16 = properties.major >= 8
    kind = GpuKind(round(properties.total_memory / GIB), bf16, (properties.major, properties.minor) >= (7, 5))
    return GpuSetup(torch.cuda.device_count(), properties.name, kind.memory_gb, kind, nodes)


def recommend(setup: GpuSetup, workload: Workload = Workload()) -> tuple[list[Estimate], Estimate | None]:
    """Estimate every mode on these GPUs and pick the recipe's preferred one that fits.

    The recipe's guidance: full fine-tuning with flash-attention and bf16 whenever possible;
    GPUs without bf16 run fp16 without flash-attention; frozen vision, then LoRA, then QLoRA
    (Turing or newer) when memory is short.

    Returns:
        ``(estimates of every mode, the recommended one or None when nothing fits)``.
    """
    precision = "bf16" if setup.kind.bf16 else "fp16"
    attention = "flash" if setup.kind.bf16 else "eager"
    modes = [mode for mode in MODES if mode != "qlora" or setup.kind.qlora]
    estimates = [estimate_memory(mode, gpus=setup.total, attention=attention, precision=precision,
                                 workload=workload) for mode in modes]
    fitting = [estimate for estimate in estimates if fit_label(estimate, setup) != "too big"]
    return estimates, (fitting[0] if fitting else None)


def fit_label(estimate: Estimate, setup: GpuSetup) -> str:
    """``fits``, ``tight`` (over the card's size but within what allocator slack explains)
    or ``too big``."""
    need, have = estimate.total, setup.memory_gb  # GiB: "80GB" cards hold 80 GiB
    if need <= 0.95 * have:
        return "fits"
    return "tight" if need <= TIGHT_FACTOR * have else "too big"


_MODE_FLAGS = {"full": "", "freeze-vision": " --freeze-vision", "lora": " --use-lora",
               "qlora": " --use-qlora"}


def command_line(setup: GpuSetup, estimate: Estimate) -> str:
    """The ``phiv-train`` command for a recommendation."""
    flags = _MODE_FLAGS[estimate.mode]
    flags += " --bf16" if estimate.precision == "bf16" else " --fp16"
    if estimate.attention == "flash":
        flags += " --use-flash-attention"
    nodes = (f" --nnodes {setup.nodes} --node-rank $NODE_RANK --master-addr $MASTER_ADDR"
             if setup.nodes > 1 else "")
    return (f"phiv-train --nproc-per-node {setup.count}{nodes} --data DATA --output-dir OUT"
            f" --batch-size 64{flags}")


def plan_main(argv: Sequence[str]) -> int:
    """``phiv-train plan``: print the memory table and the recommendation."""
    from phiv_train.cli import OneLineParser

    parser = OneLineParser(prog="phiv-train plan", description=(
        "Estimate per-GPU memory of each training mode and recommend one, following the "
        "recipe's hardware guidance."))
    parser.add_argument("--gpus", help="GPUs per node as COUNTxMODEL[-MEMORYGB], e.g. "
                        "8xA100-80GB (default: the GPUs of this machine)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes [default: 1]")
    parser.add_argument("--tokens", type=int, default=2443,
                        help="tokens per sample [default: 2443, DocVQA at num_crops 16]")
    parser.add_argument("--num-crops", type=int, default=16, help="crops per image [default: 16]")
    parser.add_argument("--images", type=int, default=1, help="images per sample [default: 1]")
    parser.add_argument("--per-device-batch-size", type=int, default=1, help="[default: 1]")
    parser.add_argument("--lora-rank", type=int, default=64, help="[default: 64]")
    parser.add_argument("--compare-recipe", action="store_true",
                        help="print the recipe's measured memory next to the estimates")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(list(argv))
    if args.compare_recipe:
        rows = recipe_comparison()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'mode':14} {'GPUs':13} {'attention':9} {'measured':>8} {'estimate':>8} {'error':>6}")
        for row in rows:
            print(f"{row['mode']:14} {row['gpus']:13} {row['attention']:9} "
                  f"{row['measured_gb']:>6} GB {row['estimated_gb']:>5} GiB {row['error_percent']:>+5}%")
        return 0
    setup = parse_gpus(args.gpus, nodes=args.nodes) if args.gpus else detect_gpus(nodes=args.nodes)
    if setup is None:
        raise UsageError("no CUDA GPU on this machine", hint="say which: --gpus 8xA100-80GB")
    workload = Workload(args.tokens, args.images * (args.num_crops + 1),
                        args.per_device_batch_size, args.lora_rank)
    estimates, chosen = recommend(setup, workload)
    if args.json:
        print(json.dumps({"gpus": asdict(setup), "workload": asdict(workload),
                          "estimates": [asdict(e) | {"total_gib": round(e.total, 2)} for e in estimates],
                          "recommended": chosen.mode if chosen else None,
                          "command": command_line(setup, chosen) if chosen else None}, indent=2))
        return 0
    nodes = f"{setup.nodes} nodes x " if setup.nodes > 1 else ""
    print(f"{nodes}{setup.count}x {setup.name} ({setup.memory_gb:g} GB each), "
          f"{workload.tokens} tokens, {workload.crops} crops, {workload.per_device_batch} per GPU:")
    for estimate in estimates:
        fits = fit_label(estimate, setup)
        print(f"  {estimate.mode:14} {estimate.precision} {estimate.attention:6} "
              f"~{estimate.total:5.1f} GiB per GPU  {fits}")
    if chosen is None:
        print("nothing fits: lower --tokens/--num-crops, or add GPUs (ZeRO-2 partitions the "
              "optimizer over them)")
        return 1
    print(f"recommended: {chosen.mode} ({chosen.precision}, {chosen.attention} attention)")
    print(f"  {command_line(setup, chosen)}")
    return 0
