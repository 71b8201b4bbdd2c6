"""The training run's configuration: one typed model, every field with one comment.

The comment of each field (its ``description``) is also its ``--help`` text: the command
line is generated from this class (``phiv_train.cli``), so flags, config files and the
documentation can never disagree. Values come from a YAML/JSON file (``--config``) and
from flags; flags win. Flags are kebab-case (``--output-dir``); the underscore spelling of
every field (``--output_dir``) and the original recipe's names (``--data_dir``,
``--model_name_or_path``, ``--freeze_vision_model``, ``--batch_size_per_gpu``, ``--wd``) are
accepted as aliases, so the recipe's command lines keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from phiv_data.errors import UsageError, display_path
from phiv_data.shards import format_field_path

RECIPE_ALIASES: dict[str, str] = {
    "data_dir": "data",
    "model_name_or_path": "model",
    "freeze_vision_model": "freeze_vision",
    "batch_size_per_gpu": "per_device_batch_size",
    "wd": "weight_decay",
}
"""The original recipe's flag names that differ from ours, mapped to our field names."""


class TrainConfig(BaseModel):
    """Everything a ``phiv-train`` run needs. Defaults are the recipe's (SPEC section 4)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # -- data ------------------------------------------------------------------------------
    data: list[str] = Field(default_factory=list, description=(
        "Training data: a dataset directory or manifest.json (its train split is used, its val "
        "split evaluated when present), or validated .jsonl shard files listed in a manifest."))
    eval_data: list[str] = Field(default_factory=list, description=(
        "Evaluation data (directory, manifest or shards); default: the val split of --data."))
    max_train_samples: int | None = Field(default=None, ge=1, description=(
        "Train on the first N records only (a quick run)."))
    max_eval_samples: int | None = Field(default=None, ge=1, description=(
        "Evaluate on the first N records only."))
    full_train: bool = Field(default=True, description=(
        "Recipe flag (DocVQA): train on the whole train split, as phiv always does; a mini "
        "run is --max-train-samples N."))
    num_crops: int | None = Field(default=None, ge=1, le=64, description=(
        "Most 336-pixel crops per image; default 16 for single-image data, 4 when records "
        "hold several images (video frames)."))
    max_length: int | None = Field(default=8192, ge=16, description=(
        "Longest training sequence in tokens, image tokens included; longer samples follow "
        "--too-long. 0 or none: no limit."))
    too_long: Literal["error", "drop", "truncate_turns"] = Field(default="error", description=(
        "Samples over --max-length, found by a scan before training: error (stop, naming "
        "them), drop (leave them out, listed in OUTPUT/skipped_samples.json), or "
        "truncate_turns (keep the leading turns that fit)."))
    dataloader_workers: int = Field(default=4, ge=0, description=(
        "Data-loader worker processes per GPU (images are decoded in them)."))
    seed: int = Field(default=42, description="Random seed (data order, initialisation, dropout).")

    # -- model and output ------------------------------------------------------------------
    model: str = Field(default="microsoft/Phi-3.5-vision-instruct", description=(
        "Base checkpoint: a local directory (a hub id only where a hub is reachable)."))
    output_dir: str | None = Field(default=None, description=(
        "Where checkpoints, the final model, logs and evaluation results go."))

    # -- what to train ---------------------------------------------------------------------
    freeze_vision: bool = Field(default=False, description=(
        "Freeze the CLIP vision tower (never the text embeddings)."))
    freeze_projector: bool = Field(default=False, description=(
        "Also freeze the image projection and its learned separators."))
    use_lora: bool = Field(default=False, description="Train LoRA adapters instead of all weights.")
    use_qlora: bool = Field(default=False, description=(
        "LoRA on a 4-bit nf4 base model (bitsandbytes); implies --use-lora."))
    lora_rank: int = Field(default=64, ge=1, description="LoRA rank r.")
    lora_alpha_ratio: float = Field(default=2.0, gt=0, description=(
        "LoRA alpha as a multiple of the rank: alpha = round(rank * ratio)."))
    lora_alpha: int | None = Field(default=None, ge=1, description=(
        "LoRA alpha, overriding --lora-alpha-ratio."))
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_target_modules: list[str] | None = Field(default=None, description=(
        "Module name suffixes to adapt; default: qkv_proj o_proj gate_up_proj down_proj "
        "lm_head, plus CLIP and the projector when the vision tower is trained."))
    merge_lora: bool = Field(default=False, description=(
        "After LoRA training, also write the merged full model to OUTPUT/merged."))

    # -- precision and memory --------------------------------------------------------------
    bf16: bool = Field(default=False, description="bf16 mixed precision (Ampere or newer).")
    fp16: bool = Field(default=False, description=(
        "fp16 mixed precision (GPUs without bf16, e.g. V100); neither flag: fp32."))
    use_flash_attention: bool = Field(default=False, description=(
        "flash-attention 2 (falls back to SDPA with a message where it cannot run)."))
    attention: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(default=None, description=(
        "Attention kernel; default SDPA, or flash_attention_2 with --use-flash-attention."))
    gradient_checkpointing: bool = Field(default=True, description=(
        "Recompute activations in the backward pass to save memory."))

    # -- batch, optimiser, schedule --------------------------------------------------------
    batch_size: int = Field(default=16, ge=1, description=(
        "Global batch size, kept through gradient accumulation over all processes."))
    per_device_batch_size: int = Field(default=1, ge=1, description=(
        "Samples per forward pass on one device (padded together)."))
    learning_rate: float = Field(default=4e-5, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(default=1.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, ge=1, description=(
        "Stop after this many optimizer steps (overrides --num-train-epochs)."))
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(default=1e-7, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(default=1.0, ge=0, description="Gradient clipping norm (0: none).")
    lr_scheduler: str = Field(default="linear", description=(
        "Learning-rate schedule (transformers name: linear, cosine, constant_with_warmup, ...)."))
    warmup_steps: int = Field(default=50, ge=0, description="Linear warm-up steps.")

    # -- distribution ----------------------------------------------------------------------
    deepspeed: str = Field(default="auto", description=(
        "auto (ZeRO-2 for full fine-tuning on GPUs, off otherwise), zero2, zero3, none, or "
        "a DeepSpeed JSON file."))
    offload: Literal["none", "optimizer", "all"] = Field(default="none", description=(
        "DeepSpeed CPU offload: the optimizer state, or optimizer and parameters (ZeRO-3)."))
    ddp_find_unused_parameters: bool | None = Field(default=None, description=(
        "DDP unused-parameter search; off by default: the model ties the parameters a batch "
        "leaves unused (text-only batches and the vision tower) to the loss with a zero."))
    ddp_backend: str | None = Field(default=None, description=(
        "torch.distributed backend; default nccl on GPUs, gloo on CPU."))
    local_rank: int = Field(default=-1, description=(
        "Set by the deepspeed launcher; phiv reads the rank from the environment."))
    nproc_per_node: int | None = Field(default=None, ge=1, description=(
        "Start torchrun with this many processes on this node (instead of writing the "
        "torchrun line yourself)."))
    nnodes: int = Field(default=1, ge=1, description="torchrun: number of nodes.")
    node_rank: int = Field(default=0, ge=0, description="torchrun: rank of this node.")
    master_addr: str = Field(default="127.0.0.1", description="torchrun: address of node 0.")
    master_port: int = Field(default=29500, ge=1, le=65535, description="torchrun: port on node 0.")
    use_cpu: bool = Field(default=False, description="Train on the CPU even when a GPU is present.")

    # -- checkpoints -----------------------------------------------------------------------
    save_steps: int = Field(default=500, ge=1, description=(
        "Write a checkpoint every N optimizer steps (and always at the end)."))
    save_total_limit: int | None = Field(default=None, ge=1, description=(
        "Keep only the newest N checkpoints."))
    resume: str | None = Field(default=None, description=(
        "Continue a run exactly: 'auto' (the newest checkpoint in --output-dir, if any) "
        "or a checkpoint directory."))

    # -- evaluation ------------------------------------------------------------------------
    eval_before_training: bool = Field(default=False, description=(
        "Evaluate the base model before training."))
    eval_after_training: bool = Field(default=True, description=(
        "Evaluate the trained model when evaluation data is present."))
    metric: Literal["auto", "accuracy", "anls"] = Field(default="auto", description=(
        "Evaluation metric; auto: ANLS when records carry meta.answers (DocVQA), else accuracy."))
    max_new_tokens: int = Field(default=64, ge=1, description="Longest generated answer.")
    eval_batch_size: int = Field(default=4, ge=1, description=(
        "Prompts generated together on one device (left-padded)."))

    # -- logging ---------------------------------------------------------------------------
    logging_steps: int = Field(default=10, ge=1, description="Log the loss every N steps.")
    report_to: list[str] = Field(default_factory=lambda: ["none"], description=(
        "Experiment trackers (transformers names: tensorboard, wandb, ...; none)."))
    run_name: str | None = Field(default=None, description="Name of the run for trackers.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.use_qlora:
            self.use_lora = True
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 exclude each other: pick one (or neither for fp32)")
        if self.fp16 and (self.use_flash_attention or self.attention == "flash_attention_2"):
            raise ValueError(
                "flash-attention does not run with fp16 (a known limitation of the recipe): "
                "use --bf16 on Ampere or newer GPUs, or drop --use-flash-attention")
        if self.merge_lora and not self.use_lora:
            raise ValueError("--merge-lora needs --use-lora or --use-qlora")
        if self.batch_size % self.per_device_batch_size:
            raise ValueError(
                f"--batch-size {self.batch_size} is not a multiple of --per-device-batch-size "
                f"{self.per_device_batch_size}")
        if not self.full_train and self.max_train_samples is None:
            raise ValueError("--no-full-train: phiv trains on the whole train split; for a mini "
                             "run say how many records with --max-train-samples N")
        if self.max_length == 0:
            self.max_length = None
        return self

    @property
    def effective_lora_alpha(self) -> int:
        """``--lora-alpha`` when given, else ``round(rank * ratio)`` as the recipe computes it."""
        if self.lora_alpha is not None:
            return self.lora_alpha
        return round(self.lora_rank * self.lora_alpha_ratio)

    @property
    def mode(self) -> str:
        """``full``, ``freeze-vision``, ``lora`` or ``qlora`` (for logs and the plan)."""
        if self.use_qlora:
            return "qlora"
        if self.use_lora:
            return "lora"
        return "freeze-vision" if self.freeze_vision else "full"

    @property
    def attn_implementation(self) -> str:
        """The attention kernel asked for (before the run checks that it can run)."""
        if self.attention is not None:
            return self.attention
        return "flash_attention_2" if self.use_flash_attention else "sdpa"


LAUNCHER_FIELDS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")
"""Fields that configure torchrun rather than the run itself."""


def canonical_key(key: str) -> str:
    """A flag or config-file key as a field name: ``output-dir``/``--output_dir`` -> ``output_dir``."""
    name = key.lstrip("-").replace("-", "_")
    return RECIPE_ALIASES.get(name, name)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into field names.

    Raises:
        UsageError: when the file is missing, unreadable, not a mapping, or names an
            unknown option.
    """
    path = Path(path)
    shown = display_path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{shown}: cannot read the config file: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{shown}{where}: not valid YAML/JSON: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{shown}: a config file must be a mapping of option names to values")
    values: dict[str, Any] = {}
    for key, value in loaded.items():
        name = canonical_key(str(key))
        if name not in TrainConfig.model_fields:
            raise UsageError(f"{shown}: {key}: unknown option",
                             hint="see `phiv-train --help` for the option names")
        values[name] = value
    return values


def build_config(values: dict[str, Any], *, sources: dict[str, str] | None = None) -> TrainConfig:
    """Validate merged option values into a ``TrainConfig``.

    Args:
        values: field name -> value (from a file and flags, flags already winning).
        sources: field name -> where the value came from (``--flag`` or ``file.yaml``), used
            to say where a bad value is.

    Raises:
        UsageError: naming the option, where it was set and what is wrong.
    """
    sources = sources or {}
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            field = format_field_path(detail["loc"])
            top = str(detail["loc"][0]) if detail["loc"] else ""
            where = sources.get(top, f"--{field.replace('_', '-')}" if field else "")
            message = str(detail["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise UsageError("; ".join(problems), hint="see `phiv-train --help`") from None
