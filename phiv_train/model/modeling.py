"""Phi-3.5-vision on transformers' own Phi-3 decoder layers and CLIP vision model.

``Phi3VForCausalLM`` is a regular ``PreTrainedModel`` + ``GenerationMixin``: Trainer, peft,
gradient checkpointing, bitsandbytes loading and ``generate()`` work as for any causal LM.

Inputs, as ``phiv_train.processing`` produces them:

- ``input_ids`` ``(batch, seq)``: text ids, and ``-k`` at every token of image ``k`` of the
  sample (images numbered 1..K per sample). Never modified in place.
- ``pixel_values`` ``(num_images, max_crops + 1, 3, 336, 336)``: all images of the batch,
  sample after sample, each as [global view, crops..., zero padding].
- ``image_sizes`` ``(num_images, 2)``: padded ``[height, width]`` in pixels.
- ``attention_mask`` ``(batch, seq)``: 1 for real tokens (right padding for training, left
  for generation; positions are counted from the mask, so both give per-sample results).

Distributed training with text-only batches: a rank whose batch has no image would leave
the vision parameters without gradients and DDP would fail. In training mode the model
then adds ``0 * sum(trainable vision parameters)`` to the embeddings, which gives them a
zero gradient; no ``find_unused_parameters`` is needed (it costs one small reduction per
parameter tensor, no CLIP pass). CLIP's last layer and ``post_layernorm`` are never used
(features come from the layer before) and are frozen; trainable parameters placed inside
them anyway (LoRA adapters, a global unfreeze) get the same zero-gradient treatment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.phi3.modeling_phi3 import (
    Phi3Attention,
    Phi3DecoderLayer,
    Phi3RMSNorm,
    Phi3RotaryEmbedding,
)
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from phiv_data.phi3v import PAD_TOKEN_ID, STOP_TOKEN_IDS
from phiv_train.model import checkpoint
from phiv_train.model.configuration import Phi3VConfig
from phiv_train.model.image_embedding import Phi3VImageEmbedding


class Phi3VPreTrainedModel(PreTrainedModel):
    """Shared settings of the Phi-3.5-vision models."""

    config_class = Phi3VConfig
    config: Phi3VConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["Phi3DecoderLayer", "CLIPEncoderLayer"]
    _skip_keys_device_placement: ClassVar[list[str]] = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # the image merge has data-dependent shapes
    _can_record_outputs: ClassVar[dict[str, type]] = {"hidden_states": Phi3DecoderLayer, "attentions": Phi3Attention}
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = list(checkpoint.IGNORED_KEYS)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):
            # The released weights load over these; random separators (not zeros) keep a
            # randomly initialised model's image tokens distinguishable in tests.
            init.normal_(module.glb_GN, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.sub_GN, mean=0.0, std=self.config.initializer_range)


class Phi3VModel(Phi3VPreTrainedModel):
    """Token + image embeddings followed by the Phi-3 decoder (``model.*`` in checkpoints)."""

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.layers = nn.ModuleList(
            [Phi3DecoderLayer(config, index) for index in range(config.num_hidden_layers)]
        )
        self.norm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Phi3RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features written at the ``-k`` positions.

        Raises:
            ImageTokenMismatchError: images and image tokens disagree (see
                :meth:`Phi3VImageEmbedding.embed_images`).
        """
        inputs_embeds = self.embed_tokens(input_ids.clamp_min(0))
        has_images = pixel_values is not None and pixel_values.shape[0] > 0
        if has_images or bool((input_ids < 0).any()):
            inputs_embeds = self.vision_embed_tokens.embed_images(
                input_ids, inputs_embeds, pixel_values, image_sizes
            )
        if self.training and torch.is_grad_enabled():
            zero = self.vision_embed_tokens.zero_contribution(with_images=has_images)
            if zero is not None:
                inputs_embeds = inputs_embeds + zero.to(inputs_embeds.dtype)
        return inputs_embeds

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Run embeddings and decoder; see the module docstring for the inputs."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids (their -k ids say where images go), not inputs_embeds")
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if position_ids is None:
            position_ids = _positions(attention_mask, past_key_values, inputs_embeds)
        mask_function = (
            create_causal_mask if self.config.sliding_window is None else create_sliding_window_causal_mask
        )
        causal_mask = mask_function(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
        )


def _positions(
    attention_mask: torch.Tensor | None, past_key_values: Cache | None, inputs_embeds: torch.Tensor
) -> torch.Tensor:
    """Position ids counted over real tokens, so left padding does not shift them."""
    length = inputs_embeds.shape[1]
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    if attention_mask is not None and attention_mask.ndim == 2 and attention_mask.shape[1] == past + length:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return positions[:, past:]
    return (torch.arange(length, device=inputs_embeds.device) + past).unsqueeze(0)


class Phi3VForCausalLM(Phi3VPreTrainedModel, GenerationMixin):
    """Phi-3.5-vision with its language-model head.

    Load a checkpoint directory (``config.json`` + safetensors, single or sharded)::

        model = Phi3VForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                 attn_implementation="auto")
        out = model(input_ids=..., attention_mask=..., pixel_values=..., image_sizes=...,
                    labels=...)
        ids = model.generate(input_ids=..., attention_mask=..., pixel_values=...,
                             image_sizes=..., max_new_tokens=64)
    """

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: Phi3VConfig) -> None:
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.use_default_stop_tokens()

    def use_default_stop_tokens(self) -> None:
        """Stop generation at ``<|end|>`` (32007) or ``<|endoftext|>`` (32000), pad with 32000.

        The released ``config.json`` says ``eos_token_id`` 2; a checkpoint's own
        ``generation_config.json``, when present, is used instead of these.
        """
        if self.generation_config is not None:
            self.generation_config.eos_token_id = list(STOP_TOKEN_IDS)
            self.generation_config.pad_token_id = PAD_TOKEN_ID

    @property
    def vision_embed_tokens(self) -> Phi3VImageEmbedding:
        """The image embedding (CLIP tower, separators, projection)."""
        return self.model.vision_embed_tokens

    def vision_parameters(self) -> list[nn.Parameter]:
        """Parameters of the CLIP tower (``img_processor``); freeze these to freeze vision.

        The projection and separators (``img_projection``, ``glb_GN``, ``sub_GN``) are not
        included; the token embedding is never part of the vision side here.
        """
        return list(self.vision_embed_tokens.img_processor.parameters())

    def freeze_unused_vision_parameters(self) -> None:
        """Re-freeze CLIP's last layer and ``post_layernorm`` (after a global unfreeze)."""
        self.vision_embed_tokens.freeze_unused_parameters()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits, and the shifted cross-entropy loss when ``labels`` are given.

        Args:
            input_ids: ``(batch, seq)``, ``-k`` at the tokens of image ``k``.
            attention_mask: ``(batch, seq)``, 1 for real tokens.
            position_ids: optional; counted from ``attention_mask`` when omitted.
            past_key_values: generation cache.
            inputs_embeds: instead of ``input_ids`` (images must then be merged already).
            pixel_values: ``(num_images, max_crops + 1, 3, 336, 336)``.
            image_sizes: ``(num_images, 2)`` padded ``[height, width]``.
            labels: ``(batch, seq)``, -100 where no loss is taken (image tokens, prompt,
                padding); shifted inside.
            use_cache: return a cache for generation.
            logits_to_keep: compute logits only for the last N positions (0 = all).
            kwargs: passed to the decoder and the loss (``num_items_in_batch``).

        Returns:
            ``CausalLMOutputWithPast`` with ``loss`` (or None) and ``logits``.

        Raises:
            ImageTokenMismatchError: images and image tokens disagree.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Images go in on the prefill step only; LongRoPE may force a second prefill.

        When the sequence grows past ``original_max_position_embeddings`` the rotary
        factors switch from short to long, so the cache (built with the short ones) is
        dropped and the whole sequence, images included, runs again (as Phi-3 does).
        """
        limit = getattr(self.config, "original_max_position_embeddings", None)
        if (
            past_key_values is not None
            and limit is not None
            and input_ids.shape[1] > limit
            and past_key_values.get_seq_length() <= limit
        ):
            past_key_values = None
            kwargs["next_sequence_length"] = None
            is_first_iteration = True
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if "pixel_values" not in model_inputs:
            model_inputs.pop("image_sizes", None)
        return model_inputs

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *model_args: Any,
        attn_implementation: str | None = "auto",
        **kwargs: Any,
    ) -> Phi3VForCausalLM:
        """Load a local checkpoint directory with the checkpoint's own parameter names.

        Args:
            pretrained_model_name_or_path: directory with ``config.json`` and
                ``model.safetensors`` (or ``model.safetensors.index.json`` + shards).
            attn_implementation: "auto" (flash-attention 2 when installed, on CUDA, in
                bf16/fp16; SDPA otherwise), "eager", "sdpa" or "flash_attention_2" (falls
                back to SDPA with a warning when it cannot run).
            kwargs: as for transformers (``dtype``/``torch_dtype``, ``device_map``,
                ``quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...)``, ``config``).

        Returns:
            The model (and the loading info when ``output_loading_info=True``).

        Raises:
            CheckpointError: not a checkpoint directory, missing shards, unknown or missing
                parameters.
            ModelConfigError: a config.json phiv does not implement.
        """
        directory = Path(pretrained_model_name_or_path)
        wants_info = kwargs.pop("output_loading_info", False)
        arguments = checkpoint.loading_arguments(cls, directory, attn_implementation, kwargs)
        model, info = super().from_pretrained(directory, *model_args, **arguments)
        checkpoint.check_loading_info(directory, info)
        model.freeze_unused_vision_parameters()
        if not (directory / "generation_config.json").is_file():
            model.use_default_stop_tokens()
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """Save ``config.json`` + safetensors in the released layout and names.

        Accepts transformers' arguments (``max_shard_size`` for sharding, ``state_dict``
        from DeepSpeed, ``is_main_process``). There is no shared tensor to trip over: the
        ``wte`` alias of the embedding is not a parameter of this model.
        """
        # The names already are the checkpoint's; transformers must not "revert" the
        # renamings it keeps for CLIPVisionModel checkpoints on our nested tower.
        kwargs.setdefault("save_original_format", False)
        super().save_pretrained(save_directory, *args, **kwargs)
