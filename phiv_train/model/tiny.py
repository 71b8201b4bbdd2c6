"""A tiny random Phi-3.5-vision checkpoint in the real file layout (the test double).

Same architecture and names as the released model, tiny dimensions: a 2-layer decoder of
width 64, a 2-layer CLIP tower of width 32 that still takes 336-pixel images with 14-pixel
patches (so image token counts are the real ones), and the real vocabulary size 32064 so
the special token ids (``<|end|>`` 32007, ``<|endoftext|>`` 32000, ...) hold. The directory
gets ``config.json`` written as the released one is (``model_type`` "phi3_v", ``rope_scaling``
type "su", ``auto_map``, the flash-attention hint), ``model.safetensors`` with the released
parameter names, and the tiny tokenizer of :mod:`phiv_train.tokenization`. It loads through
the same ``Phi3VForCausalLM.from_pretrained`` as a real checkpoint.

    python -m phiv_train.model.tiny OUT_DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save

from phiv_data.shards import atomic_write
from phiv_train.model.checkpoint import EMBED_KEY, WTE_KEY

RELEASED_CONFIG: dict[str, Any] = {
    "_name_or_path": "Phi-3.5-vision-instruct",
    "architectures": ["Phi3VForCausalLM"],
    "attention_dropout": 0.0,
    # The released file points at its remote code; phiv ignores both hints below.
    "auto_map": {
        "AutoConfig": "configuration_phi3_v.Phi3VConfig",
        "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
    },
    "_attn_implementation": "flash_attention_2",
    "bos_token_id": 1,
    "embd_layer": {
        "embedding_cls": "image",
        "hd_transform_order": "sub_glb",
        "projection_cls": "mlp",
        "use_hd_transform": True,
        "with_learnable_separator": True,
    },
    "embd_pdrop": 0.0,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "img_processor": {
        "image_dim_out": 1024,
        "model_name": "openai/clip-vit-large-patch14-336",
        "name": "clip_vision_model",
        "num_img_tokens": 144,
    },
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "model_type": "phi3_v",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096,
    "pad_token_id": 32000,
    "resid_pdrop": 0.0,
    "rms_norm_eps": 1e-05,
    # 48 factors each (half the head dimension 96) as released; the values are stand-ins.
    "rope_scaling": {"long_factor": [1.5] * 48, "short_factor": [1.0] * 48, "type": "su"},
    "rope_theta": 10000.0,
    "sliding_window": 262144,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.38.1",
    "use_cache": True,
    "vocab_size": 32064,
}
"""The released ``config.json`` of Phi-3.5-vision, abridged only in the RoPE factor values."""

_HEAD_DIM = 16


def _rope_factors(half_head_dim: int) -> dict[str, Any]:
    # Shaped like the released factors: near 1 for short contexts, growing for long.
    return {
        "long_factor": [round(1.0 + 0.25 * i * i, 4) for i in range(half_head_dim)],
        "short_factor": [round(1.0 + 0.01 * i, 4) for i in range(half_head_dim)],
        "type": "su",
    }


TINY_CONFIG: dict[str, Any] = {
    **copy.deepcopy(RELEASED_CONFIG),
    "_name_or_path": "phiv-tiny-phi3v",
    "hidden_size": 64,
    "img_processor": {
        **RELEASED_CONFIG["img_processor"],
        "image_dim_out": 32,
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 32,
        },
    },
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "rope_scaling": _rope_factors(_HEAD_DIM // 2),
    "torch_dtype": "float32",
}
"""The ``config.json`` of the tiny checkpoint: the released one with tiny dimensions."""

EmbeddingNames = Literal["embed_tokens", "wte", "both"]


def tiny_config_dict(**overrides: Any) -> dict[str, Any]:
    """``TINY_CONFIG`` with ``overrides`` merged in (dicts merged recursively).

    When ``hidden_size`` or ``num_attention_heads`` change, the RoPE factor lists are
    resized to the new head dimension unless ``rope_scaling`` is overridden too.
    """
    config = _merge(copy.deepcopy(TINY_CONFIG), overrides)
    if config.get("rope_scaling") and "rope_scaling" not in overrides:
        config["rope_scaling"] = _rope_factors(config["hidden_size"] // config["num_attention_heads"] // 2)
    return config


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = value
    return base


def write_tiny_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    embedding_names: EmbeddingNames = "both",
    tokenizer: bool = True,
    **config_overrides: Any,
) -> Path:
    """Write a tiny randomly initialised Phi-3.5-vision checkpoint directory.

    Args:
        path: directory to create (or fill); existing files of the same names are replaced.
        seed: seed of the random weights (same seed, same weights).
        embedding_names: which names carry the token embedding: ``model.embed_tokens.weight``,
            ``model.vision_embed_tokens.wte.weight`` or both (one copy each).
        tokenizer: also write the tiny tokenizer files.
        config_overrides: fields of ``config.json`` to change (nested dicts are merged).

    Returns:
        The checkpoint directory.
    """
    from phiv_train.model import Phi3VConfig, Phi3VForCausalLM

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_config_dict(**config_overrides)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Phi3VForCausalLM(Phi3VConfig(**copy.deepcopy(config_dict)))
    finally:
        torch.random.set_rng_state(generator_state)
    tensors = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    embedding = tensors.pop(EMBED_KEY)
    if embedding_names in ("embed_tokens", "both"):
        tensors[EMBED_KEY] = embedding
    if embedding_names in ("wte", "both"):
        tensors[WTE_KEY] = embedding.clone()
    with atomic_write(directory / "model.safetensors", "wb") as handle:
        handle.write(_safetensors_bytes(tensors))
    with atomic_write(directory / "config.json", "w") as handle:
        handle.write(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if tokenizer:
        _write_tokenizer(directory)
    return directory


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save(tensors, metadata={"format": "pt"})


def _write_tokenizer(directory: Path) -> None:
    from phiv_train.tokenization import save_tiny_tokenizer

    save_tiny_tokenizer(directory)


def _parameter_count(directory: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118 (a safe_open handle, not a dict)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m phiv_train.model.tiny OUT_DIR [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    arguments = parser.parse_args(argv)
    directory = write_tiny_checkpoint(arguments.out_dir, seed=arguments.seed)
    print(f"wrote {directory} ({_parameter_count(directory):,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
