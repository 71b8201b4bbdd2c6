"""Loading the model for a run and choosing what it trains: full, frozen vision, LoRA, QLoRA.

- full: every parameter except CLIP's last layer and ``post_layernorm`` (never used).
- ``--freeze-vision``: the CLIP tower is frozen; the projector and its separators train
  unless ``--freeze-projector``; the text embeddings always train (the recipe froze them by
  accident through the shared ``wte``).
- LoRA: adapters (gaussian init, as the recipe) on the decoder's ``qkv_proj, o_proj,
  gate_up_proj, down_proj`` and ``lm_head``; when the vision tower is trained, also on
  CLIP's ``q_proj, k_proj, v_proj, out_proj, fc1, fc2`` (not in its unused last layer) and
  on ``img_projection.0/.2``.
- QLoRA: the same adapters over a 4-bit nf4 base (bitsandbytes, double quantisation),
  prepared with ``peft.prepare_model_for_kbit_training``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from phiv_data.errors import UsageError
from phiv_train.config import TrainConfig

logger = logging.getLogger("phiv_train")

DECODER_LORA_TARGETS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
VISION_LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                       "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
_CLIP_LAYER = re.compile(r"img_processor\.vision_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Precision:
    """How weights are stored and computed for a run."""

    name: str  # bf16, fp16 or fp32
    weights: torch.dtype  # dtype the model is loaded in
    compute: torch.dtype  # autocast / QLoRA compute dtype


def resolve_precision(config: TrainConfig) -> Precision:
    """bf16 runs load bf16 weights; fp16 runs keep fp32 weights under fp16 autocast (the
    optimizer needs fp32 masters), except QLoRA's 4-bit base; fp32 is fp32 throughout."""
    if config.bf16:
        return Precision("bf16", torch.bfloat16, torch.bfloat16)
    if config.fp16:
        return Precision("fp16", torch.float32, torch.float16)
    return Precision("fp32", torch.float32, torch.float32)


def resolve_attention(config: TrainConfig, *, on_gpu: bool) -> str:
    """The attention kernel that can actually run, with a clear message when falling back.

    Raises:
        UsageError: flash-attention with fp16 (checked by the config too) .
    """
    wanted = config.attn_implementation
    if wanted != "flash_attention_2":
        return wanted
    if config.fp16:
        raise UsageError("flash-attention does not run with fp16 (a known limitation)",
                         hint="use --bf16, or drop --use-flash-attention")
    reason = None
    if not on_gpu:
        reason = "no CUDA GPU is in use"
    elif importlib.util.find_spec("flash_attn") is None:
        reason = "the flash_attn package is not installed (pip install 'phiv[flash]')"
    elif not config.bf16:
        reason = "it needs bf16 weights (add --bf16)"
    elif torch.cuda.get_device_capability()[0] < 8:
        reason = "this GPU is older than Ampere"
    if reason is None:
        return wanted
    logger.warning("phiv-train: flash-attention 2 cannot run here (%s): using SDPA instead", reason)
    return "sdpa"


def resolve_checkpoint(model: str) -> Path:
    """The local checkpoint directory ``--model`` names.

    A directory holding ``config.json`` is used as it is. Anything else of the form
    ``org/name`` is taken for a hub id and downloaded (weights, configuration and tokenizer
    files only) where a hub is reachable.

    Raises:
        UsageError: not a checkpoint directory, the hub is offline, or the download failed.
    """
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    hint = "download the checkpoint first and pass its directory"
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise UsageError(f"--model {model}: not a checkpoint directory (no config.json)", hint=hint)
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise UsageError(f"--model {model}: no such directory, and the hub is offline "
                         "(HF_HUB_OFFLINE is set)", hint=hint)
    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.model"]))
    except Exception as error:  # noqa: BLE001 - network, unknown repository, authentication
        raise UsageError(f"--model {model}: cannot download it from the hub "
                         f"({type(error).__name__}: {error})", hint=hint) from None


def load_model(config: TrainConfig, *, attention: str, device_map: object = None) -> nn.Module:
    """Load the base checkpoint in the run's precision (4-bit for QLoRA).

    Raises:
        UsageError: ``--model`` is not a checkpoint directory (nor a reachable hub id).
    """
    from phiv_train.model import Phi3VForCausalLM

    checkpoint = resolve_checkpoint(config.model)
    precision = resolve_precision(config)
    kwargs: dict[str, object] = {"dtype": precision.weights, "attn_implementation": attention}
    if config.use_qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.compute)
        kwargs["dtype"] = precision.compute if precision.name != "fp32" else torch.float32
    if device_map is not None:
        kwargs["device_map"] = device_map
    return Phi3VForCausalLM.from_pretrained(checkpoint, **kwargs)


def _image_embedding(model: nn.Module) -> nn.Module:
    return model.model.vision_embed_tokens


def projector_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The image projection and the learned separators ``glb_GN``/``sub_GN``."""
    embedding = _image_embedding(model)
    return [*embedding.img_projection.parameters(), embedding.glb_GN, embedding.sub_GN]


def freeze_for_full_training(model: nn.Module, config: TrainConfig) -> None:
    """Full fine-tuning, optionally with the vision tower (and projector) frozen."""
    model.requires_grad_(True)
    if config.freeze_vision:
        for parameter in model.vision_parameters():
            parameter.requires_grad_(False)
    if config.freeze_projector:
        for parameter in projector_parameters(model):
            parameter.requires_grad_(False)
    model.freeze_unused_vision_parameters()
    # Never the text embeddings, whatever else is frozen (the recipe's defect).
    model.get_input_embeddings().weight.requires_grad_(True)


def lora_target_modules(model: nn.Module, config: TrainConfig) -> list[str]:
    """Full names of the linear modules that get adapters.

    CLIP's last layer is skipped: its output is never used, so its adapters would get no
    gradient.
    """
    last_clip_layer = len(_image_embedding(model).img_processor.vision_model.encoder.layers) - 1
    train_vision = not config.freeze_vision
    custom = config.lora_target_modules
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        clip_layer = _CLIP_LAYER.search(name)
        if clip_layer and int(clip_layer[1]) == last_clip_layer:
            continue
        if custom is not None:
            if any(name == target or name.endswith("." + target) for target in custom):
                names.append(name)
            continue
        if name == "lm_head" or (name.startswith("model.layers.")
                                 and name.endswith(DECODER_LORA_TARGETS)) or train_vision and clip_layer and name.endswith(VISION_LORA_TARGETS) or (train_vision and not config.freeze_projector
              and name.endswith(("img_projection.0", "img_projection.2"))):
            names.append(name)
    if not names:
        raise UsageError("no module matches the LoRA targets "
                         f"{' '.join(custom) if custom else '(defaults)'}",
                         hint="--lora-target-modules takes module name suffixes such as qkv_proj")
    return names


def apply_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap the model with LoRA adapters (QLoRA: after preparing the 4-bit base)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.use_qlora:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.effective_lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=lora_target_modules(model, config),
                      init_lora_weights="gaussian", bias="none")
    peft_model = get_peft_model(model, lora)
    # lm_head is a target, so PEFT's "auto" would copy the whole (unchanged, vocabulary-sized)
    # embedding and output matrices into every adapter and checkpoint: save adapters only.
    peft_model.save_pretrained = functools.partial(peft_model.save_pretrained,
                                                   save_embedding_layers=False)
    return peft_model


def prepare_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Set what trains for the run's mode; returns the model to train (a PeftModel for LoRA)."""
    if config.use_lora:
        return apply_lora(model, config)
    freeze_for_full_training(model, config)
    return model


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (4-bit weights counted as stored elements)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
