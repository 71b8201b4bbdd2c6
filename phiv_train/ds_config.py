"""DeepSpeed configurations generated from the run's options.

The recipe shipped one hand-written ZeRO-2 JSON for full fine-tuning. phiv writes it from
the options instead (and saves it next to the run as ``deepspeed_config.json``), with
``"auto"`` values that transformers' Trainer fills from its own arguments, so the batch
size, gradient accumulation, clipping and precision are stated exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phiv_data.errors import UsageError, display_path
from phiv_train.config import TrainConfig

_BUCKET = 5e8  # elements per communication bucket: the recipe's (and DeepSpeed's) default


def zero_config(stage: int, *, offload: str = "none") -> dict[str, Any]:
    """A DeepSpeed config for ZeRO stage 2 or 3 with Trainer-filled ``auto`` values.

    Args:
        stage: 2 (optimizer state and gradients partitioned) or 3 (parameters too).
        offload: ``none``, ``optimizer`` (optimizer state in CPU memory) or ``all``
            (optimizer state and, with ZeRO-3, parameters in CPU memory).

    Returns:
        The configuration as a dict, ready for ``TrainingArguments(deepspeed=...)``.

    Raises:
        UsageError: for another stage, or parameter offload without ZeRO-3.
    """
    if stage not in (2, 3):
        raise UsageError(f"ZeRO stage {stage} is not supported: use zero2 or zero3")
    if offload == "all" and stage != 3:
        raise UsageError("--offload all (parameters in CPU memory) needs --deepspeed zero3",
                         hint="use --offload optimizer with ZeRO-2")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": _BUCKET,
    }
    if stage == 2:
        zero |= {"allgather_partitions": True, "allgather_bucket_size": _BUCKET,
                 "reduce_scatter": True, "round_robin_gradients": True}
    else:
        zero |= {"stage3_prefetch_bucket_size": "auto",
                 "stage3_param_persistence_threshold": "auto",
                 # the final model is written as one ordinary checkpoint, not ZeRO shards
                 "stage3_gather_16bit_weights_on_model_save": True}
    if offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        # phiv passes torch's AdamW (recipe betas/eps) instead of DeepSpeed's compiled ops
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1000000,
        "wall_clock_breakdown": False,
    }


def resolve_deepspeed(config: TrainConfig, *, on_gpu: bool) -> dict[str, Any] | None:
    """The DeepSpeed configuration this run uses, or ``None`` to train without DeepSpeed.

    ``auto`` follows the recipe: ZeRO-2 for full fine-tuning (vision frozen or not) on GPUs;
    LoRA and QLoRA, and CPU runs, go without it.

    Raises:
        UsageError: for an unreadable JSON file or an impossible combination.
    """
    choice = config.deepspeed.strip()
    lowered = choice.lower()
    if lowered == "none":
        return None
    if lowered == "auto":
        if config.use_lora or not on_gpu:
            return None
        return zero_config(2, offload=config.offload)
    if lowered in ("zero2", "zero3"):
        if config.use_qlora and lowered == "zero3":
            raise UsageError("QLoRA's 4-bit weights cannot be partitioned by ZeRO-3",
                             hint="use --deepspeed zero2 or none with --use-qlora")
        return zero_config(int(lowered[-1]), offload=config.offload)
    path = Path(choice)
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"--deepspeed {choice}: not auto/zero2/zero3/none and not a readable "
                         f"file ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{display_path(path)}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{display_path(path)}: a DeepSpeed config must be a JSON object")
    return loaded


def zero_stage(deepspeed_config: dict[str, Any] | None) -> int:
    """ZeRO stage of a DeepSpeed config (0 without DeepSpeed)."""
    if not deepspeed_config:
        return 0
    return int(deepspeed_config.get("zero_optimization", {}).get("stage", 0))
