"""Checkpoint directories of Phi-3.5-vision: key names, the ``wte`` alias, attention choice.

Loading itself is transformers' ``from_pretrained`` (so dtype, ``device_map`` and
bitsandbytes quantization all work); this module adds what a real checkpoint needs:

- the parameter names are the checkpoint's names exactly; the model keeps its CLIP tower
  at ``model.vision_embed_tokens.img_processor.vision_model``, so no renaming is needed;
- the token embedding may be stored as ``model.embed_tokens.weight``, as
  ``model.vision_embed_tokens.wte.weight`` (the same tensor in the remote code) or both;
- unknown and missing names are an error naming them, before any weight is read;
- ``attn_implementation="auto"`` picks flash-attention 2 when it can run, SDPA otherwise.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from phiv_data.errors import display_path
from phiv_train.model.configuration import Phi3VConfig
from phiv_train.model.errors import CheckpointError, ModelConfigError

logger = logging.getLogger(__name__)

EMBED_KEY = "model.embed_tokens.weight"
WTE_KEY = "model.vision_embed_tokens.wte.weight"
"""The remote code's name for the token embedding (one tensor shared with ``EMBED_KEY``)."""

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

IGNORED_KEYS = (re.escape(WTE_KEY), r"\.embeddings\.position_ids$")
"""Checkpoint names that are read without a parameter: the ``wte`` alias when the
checkpoint also holds ``model.embed_tokens.weight``, and CLIP's position-id buffer that old
transformers versions saved."""

ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2")


def checkpoint_keys(directory: Path) -> set[str]:
    """Parameter names stored in a checkpoint directory (read from headers, no tensors).

    Args:
        directory: holds ``model.safetensors`` or ``model.safetensors.index.json`` + shards.

    Returns:
        The set of tensor names.

    Raises:
        CheckpointError: no safetensors weights, an unreadable index, or a missing shard.
    """
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"{display_path(index)}: not a safetensors index ({error})",
                hint="it needs a 'weight_map' object from tensor name to shard file",
            ) from error
        missing_shards = sorted({shard for shard in weight_map.values() if not (directory / shard).is_file()})
        if missing_shards:
            raise CheckpointError(
                f"{display_path(directory)}: shards listed in {INDEX_FILE} are missing: "
                f"{', '.join(missing_shards)}",
                hint="copy the complete checkpoint directory",
            )
        return set(weight_map)
    single = directory / SINGLE_FILE
    if single.is_file():
        with safe_open(str(single), framework="pt") as handle:
            return set(handle.keys())
    raise CheckpointError(
        f"{display_path(directory)}: no {SINGLE_FILE} or {INDEX_FILE}",
        hint="point at a Phi-3.5-vision checkpoint directory (config.json + safetensors)",
    )


def embedding_key_mapping(keys: set[str]) -> dict[str, str] | None:
    """The renaming that loads a checkpoint holding the embedding only under ``wte``."""
    if EMBED_KEY not in keys and WTE_KEY in keys:
        return {rf"^{re.escape(WTE_KEY)}$": EMBED_KEY}
    return None


def check_keys(directory: Path, keys: set[str], expected: set[str]) -> None:
    """Compare a checkpoint's names with the model's; raise naming every difference.

    Raises:
        CheckpointError: unknown or missing parameter names.
    """
    present = set(keys)
    if EMBED_KEY not in present and WTE_KEY in present:
        present.add(EMBED_KEY)
    ignored = re.compile("|".join(IGNORED_KEYS))
    unknown = sorted(key for key in present - expected if not ignored.search(key))
    missing = sorted(expected - present)
    problems = []
    if unknown:
        problems.append(f"unknown parameters {_names(unknown)}")
    if missing:
        problems.append(f"missing parameters {_names(missing)}")
    if problems:
        raise CheckpointError(
            f"{display_path(directory)}: the checkpoint does not match the model described by "
            f"its config.json: {'; '.join(problems)}",
            hint="check that config.json belongs to these weights (layer counts, sizes) and that "
            "no shard is missing",
        )


def check_loading_info(directory: Path, info: dict[str, Any]) -> None:
    """Raise if transformers reported anything left unloaded or mismatched.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped parameters, or load errors.
    """
    ignored = re.compile("|".join(IGNORED_KEYS))
    problems = []
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(key for key in info.get("unexpected_keys") or () if not ignored.search(key))
    mismatched = sorted(info.get("mismatched_keys") or ())
    if missing:
        problems.append(f"missing parameters {_names(missing)}")
    if unexpected:
        problems.append(f"unknown parameters {_names(unexpected)}")
    if mismatched:
        shapes = [f"{name} (checkpoint {tuple(old)}, model {tuple(new)})" for name, old, new in mismatched]
        problems.append(f"parameters with another shape: {_names(shapes)}")
    problems += [str(message) for message in info.get("error_msgs") or ()]
    if problems:
        raise CheckpointError(
            f"{display_path(directory)}: loading failed: {'; '.join(problems)}",
            hint="check that config.json belongs to these weights",
        )


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def flash_attention_problem(dtype: torch.dtype | None) -> str | None:
    """Why flash-attention 2 cannot run here, or None when it can."""
    from transformers.utils import is_flash_attn_2_available

    if not torch.cuda.is_available():
        return "no CUDA device is available"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"it needs bfloat16 or float16 weights, not {dtype}"
    if not is_flash_attn_2_available():
        return "the flash-attn package is not installed (pip install 'phiv[flash]')"
    return None


def resolve_attention(requested: str | None, dtype: torch.dtype | None) -> str:
    """Turn ``"auto"`` (or None) into a concrete attention implementation.

    ``auto`` is flash-attention 2 when installed, on CUDA and with half-precision weights,
    SDPA otherwise; the fallback is logged with its reason (a warning on a CUDA machine
    with half-precision weights, where only the missing flash-attn package stands in the
    way; an info line elsewhere). An explicit ``flash_attention_2`` that cannot run falls
    back to SDPA with a warning saying why (the two give the same results within rounding).

    Args:
        requested: "auto", "eager", "sdpa", "flash_attention_2" or None.
        dtype: the dtype the weights will have.

    Returns:
        "eager", "sdpa" or "flash_attention_2".

    Raises:
        ModelConfigError: an unknown implementation name.
    """
    requested = requested or "auto"
    if requested not in ATTENTION_CHOICES:
        raise ModelConfigError(
            f"attn_implementation {requested!r} is not supported",
            hint=f"choose one of {', '.join(ATTENTION_CHOICES)}",
        )
    if requested in ("eager", "sdpa"):
        return requested
    problem = flash_attention_problem(dtype)
    if problem is None:
        return "flash_attention_2"
    if requested == "flash_attention_2":
        logger.warning("flash_attention_2 was requested but %s; using sdpa instead", problem)
    else:
        could_run = torch.cuda.is_available() and dtype in (torch.bfloat16, torch.float16)
        logger.log(
            logging.WARNING if could_run else logging.INFO,
            "attn_implementation 'auto': using sdpa, not flash_attention_2, because %s",
            problem,
        )
    return "sdpa"


def effective_dtype(requested: Any, config_dtype: Any) -> torch.dtype:
    """The dtype weights get from ``from_pretrained(dtype=...)`` ("auto"/None -> config's)."""
    value = requested if requested not in (None, "auto") else config_dtype
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def loading_arguments(
    model_class: type, directory: Path, attn_implementation: str | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Check a checkpoint directory and build the arguments of transformers' loader.

    Reads ``config.json`` (unless ``kwargs["config"]`` is a ``Phi3VConfig``), compares the
    checkpoint's parameter names with a model built on the meta device (skipped for
    pre-quantized checkpoints, whose extra quantization tensors transformers handles),
    maps a ``wte``-only embedding, and resolves ``dtype`` and the attention implementation.

    Args:
        model_class: the class being loaded (built on the meta device for its names).
        directory: the checkpoint directory.
        attn_implementation: as for ``Phi3VForCausalLM.from_pretrained``.
        kwargs: the caller's other ``from_pretrained`` arguments (consumed).

    Returns:
        Keyword arguments for ``PreTrainedModel.from_pretrained``.

    Raises:
        CheckpointError: no config.json or weights, missing shards, unknown or missing names.
        ModelConfigError: an unsupported config or attention implementation.
    """
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{display_path(directory)}: no config.json",
            hint="from_pretrained takes a local checkpoint directory (config.json + safetensors)",
        )
    config = kwargs.pop("config", None)
    if not isinstance(config, Phi3VConfig):
        config = Phi3VConfig.from_pretrained(directory)
    keys = checkpoint_keys(directory)
    if getattr(config, "quantization_config", None) is None:
        with torch.device("meta"):
            expected = set(model_class(copy.deepcopy(config)).state_dict())
        check_keys(directory, keys, expected)
    dtype = kwargs.pop("dtype", None)
    torch_dtype = kwargs.pop("torch_dtype", None)
    dtype = dtype if dtype is not None else torch_dtype
    # The residual stream (and so the attention inputs) has the dtype of the unquantized
    # weights; the 4-bit compute dtype matters only when no dtype is given.
    compute = getattr(kwargs.get("quantization_config"), "bnb_4bit_compute_dtype", None)
    weights_dtype = effective_dtype(dtype if dtype is not None else compute, config.dtype)
    mapping = embedding_key_mapping(keys)
    if mapping is not None:
        kwargs["key_mapping"] = {**mapping, **(kwargs.get("key_mapping") or {})}
    return {
        **kwargs,
        "config": config,
        "dtype": dtype if dtype is not None else "auto",
        "attn_implementation": resolve_attention(attn_implementation, weights_dtype),
        "output_loading_info": True,
    }
