"""``Phi3VConfig``: the Phi-3.5-vision configuration, read from the real ``config.json`` as is.

The decoder fields are those of transformers' ``Phi3Config`` (which also turns the legacy
``rope_scaling`` ``{"type": "su", ...}`` into ``rope_parameters`` with ``rope_type``
``"longrope"``). Phi-3.5-vision adds two dicts:

- ``embd_layer``: how image features become embeddings. phiv implements exactly the layout
  of the released weights (``embedding_cls`` "image", ``hd_transform_order`` "sub_glb",
  ``projection_cls`` "mlp", ``use_hd_transform`` and ``with_learnable_separator`` true) and
  refuses anything else instead of silently computing something different.
- ``img_processor``: the CLIP tower (``image_dim_out`` 1024, ``num_img_tokens`` 144,
  ``name`` "clip_vision_model"). An optional ``vision_config`` dict of ``CLIPVisionConfig``
  fields replaces the default CLIP ViT-L/14-336 so tests can build tiny towers of the same
  architecture; the image size must stay 336 and the patch 14 (the token count formula and
  the 2x2 merge depend on the 24x24 patch grid).

``to_dict`` writes the real layout back (``rope_scaling`` + ``rope_theta``),
so a saved ``config.json`` looks like the released one.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import CLIPVisionConfig
from transformers.models.phi3 import Phi3Config

from phiv_data.phi3v import CROP_SIZE, TOKENS_PER_CROP
from phiv_train.model.errors import ModelConfigError

PATCH_SIZE = 14
"""CLIP patch side; 336 / 14 = 24 patches per side, merged 2x2 into a 12x12 grid."""

CLIP_VIT_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": CROP_SIZE,
    "patch_size": PATCH_SIZE,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "num_channels": 3,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}
"""The vision tower of the released model (openai/clip-vit-large-patch14-336)."""

DEFAULT_EMBD_LAYER: dict[str, Any] = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}

DEFAULT_IMG_PROCESSOR: dict[str, Any] = {
    "image_dim_out": 1024,
    "model_name": "openai/clip-vit-large-patch14-336",
    "name": "clip_vision_model",
    "num_img_tokens": TOKENS_PER_CROP,
}

# Keys of the two dicts whose value phiv relies on, with the only value it implements.
_REQUIRED_EMBD_LAYER = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}
_REQUIRED_IMG_PROCESSOR = {
    "name": "clip_vision_model",
    "num_img_tokens": TOKENS_PER_CROP,
    "layer_idx": -2,
    "type_feature": "patch",
}


class Phi3VConfig(Phi3Config):
    """Configuration of Phi-3.5-vision (``model_type`` "phi3_v").

    Accepts every field of the released ``config.json``; defaults are the released
    dimensions (3072 hidden, 32 layers, 128K positions, CLIP ViT-L/14-336). The RoPE
    factors have no meaningful default: they come from the checkpoint.

    Raises:
        ModelConfigError: when ``embd_layer``/``img_processor`` describe a layout phiv
            does not implement, or the vision tower does not use 336-pixel images with
            14-pixel patches.
    """

    model_type = "phi3_v"

    max_position_embeddings: int = 131072
    embd_layer: dict | None = None
    img_processor: dict | None = None

    def __post_init__(self, **kwargs):
        # The released config.json carries `_attn_implementation: flash_attention_2`, a hint
        # for the remote code. Honouring it would fail on any machine without flash-attn;
        # the implementation is chosen with `from_pretrained(attn_implementation=...)`.
        kwargs.pop("_attn_implementation", None)
        # `auto_map` points at remote-code files phiv never uses (and does not save).
        kwargs.pop("auto_map", None)
        self.embd_layer = {**DEFAULT_EMBD_LAYER, **(self.embd_layer or {})}
        self.img_processor = {**DEFAULT_IMG_PROCESSOR, **(self.img_processor or {})}
        _check_supported(self.embd_layer, self.img_processor)
        super().__post_init__(**kwargs)
        # Phi3Config renames "su" to "longrope" only after standardising, so the pretraining
        # length is not yet in rope_parameters; LongRoPE reads it from there.
        if (self.rope_parameters or {}).get("rope_type") == "longrope":
            self.rope_parameters["original_max_position_embeddings"] = self.original_max_position_embeddings

    def vision_config(self) -> CLIPVisionConfig:
        """The ``CLIPVisionConfig`` of the vision tower (a fresh object on every call).

        Returns:
            CLIP ViT-L/14-336 updated by ``img_processor["vision_config"]`` when present.
        """
        fields = {**CLIP_VIT_L14_336, **self.img_processor.get("vision_config", {})}
        return CLIPVisionConfig(**fields)

    @property
    def image_feature_size(self) -> int:
        """Width of one 2x2-merged patch feature (4 x the CLIP hidden size, 4096 for real)."""
        return 4 * int(self.img_processor["image_dim_out"])

    def to_dict(self) -> dict[str, Any]:
        """Serialise in the layout of the released ``config.json``.

        ``rope_parameters`` goes back to ``rope_scaling`` (``type`` "su" unless the
        config said otherwise) plus a top-level ``rope_theta``. ``dtype`` keeps its
        transformers 5 name (the released file's ``torch_dtype`` is read as well).
        """
        output = super().to_dict()
        rope = copy.deepcopy(output.pop("rope_parameters", None) or {})
        if rope:
            output["rope_theta"] = rope.pop("rope_theta", 10000.0)
            partial = rope.pop("partial_rotary_factor", 1.0)
            if partial != 1.0:
                output["partial_rotary_factor"] = partial
            rope_type = rope.pop("rope_type", "default")
            # Phi3Config copies this top-level field into the rope dict; it stays top-level.
            rope.pop("original_max_position_embeddings", None)
            if rope_type == "longrope":
                rope["type"] = rope.get("type", "su")
                output["rope_scaling"] = rope
            elif rope_type != "default":
                rope["type"] = rope_type
                output["rope_scaling"] = rope
            else:
                output["rope_scaling"] = None
        return output


def _check_supported(embd_layer: dict, img_processor: dict) -> None:
    for field, expected in _REQUIRED_EMBD_LAYER.items():
        if embd_layer.get(field) != expected:
            raise ModelConfigError(
                f"config.json: embd_layer.{field} is {embd_layer.get(field)!r}; phiv implements "
                f"only the released Phi-3.5-vision layout ({field} = {expected!r})",
                hint="use the config.json that came with the checkpoint",
            )
    for field, expected in _REQUIRED_IMG_PROCESSOR.items():
        if field in img_processor and img_processor[field] != expected:
            raise ModelConfigError(
                f"config.json: img_processor.{field} is {img_processor[field]!r}; phiv "
                f"implements only {field} = {expected!r}",
                hint="use the config.json that came with the checkpoint",
            )
    vision = {**CLIP_VIT_L14_336, **img_processor.get("vision_config", {})}
    if vision["image_size"] != CROP_SIZE or vision["patch_size"] != PATCH_SIZE:
        raise ModelConfigError(
            f"config.json: img_processor.vision_config has image_size {vision['image_size']} and "
            f"patch_size {vision['patch_size']}; Phi-3.5-vision needs {CROP_SIZE} and {PATCH_SIZE}",
            hint="shrink a test tower through hidden_size/num_hidden_layers, not the image grid",
        )
    if int(img_processor["image_dim_out"]) != vision["hidden_size"]:
        raise ModelConfigError(
            f"config.json: img_processor.image_dim_out is {img_processor['image_dim_out']} but "
            f"the CLIP tower's hidden_size is {vision['hidden_size']}; they must be equal",
        )
    if vision["num_hidden_layers"] < 2:
        raise ModelConfigError(
            "config.json: the CLIP tower needs at least 2 layers (features come from the "
            "second-to-last one)",
        )
