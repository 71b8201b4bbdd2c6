"""Phi3VConfig and checkpoint directories: real names, wte variants, shards, errors, 4-bit."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from phiv_train.model import (
    CheckpointError,
    ModelConfigError,
    Phi3VConfig,
    Phi3VForCausalLM,
)
from phiv_train.model.checkpoint import EMBED_KEY, WTE_KEY, resolve_attention
from phiv_train.model.tiny import RELEASED_CONFIG, TINY_CONFIG, write_tiny_checkpoint
from phiv_train.model.tiny import main as tiny_main
from tests.model_fixtures import collate, load_tiny, make_sample, tiny_checkpoint_fixture  # noqa: F401


def test_released_config_reads_as_is(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    config = Phi3VConfig.from_pretrained(tmp_path)
    assert config.model_type == "phi3_v"
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["original_max_position_embeddings"] == 4096
    assert config.dtype == torch.bfloat16
    assert config._attn_implementation is None  # the remote-code hint is not honoured
    vision = config.vision_config()
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (1024, 24, 16)
    assert (vision.intermediate_size, vision.image_size, vision.patch_size) == (4096, 336, 14)
    assert (vision.hidden_act, vision.layer_norm_eps) == ("quick_gelu", 1e-5)
    assert config.image_feature_size == 4096


def test_full_size_model_has_4_2_billion_parameters():
    with torch.device("meta"):
        model = Phi3VForCausalLM(Phi3VConfig(**{k: v for k, v in RELEASED_CONFIG.items() if k != "torch_dtype"}))
    total = sum(parameter.numel() for parameter in model.parameters())
    assert 4.1e9 < total < 4.2e9 + 5e7
    projection = model.vision_embed_tokens.img_projection
    assert (projection[0].in_features, projection[0].out_features, projection[2].out_features) == (4096, 3072, 3072)
    assert tuple(model.vision_embed_tokens.sub_GN.shape) == (1, 1, 1, 4096)
    assert tuple(model.vision_embed_tokens.glb_GN.shape) == (1, 1, 4096)


def test_longrope_factors_and_scaling_follow_the_spec():
    config = Phi3VConfig(**{k: v for k, v in RELEASED_CONFIG.items() if k != "torch_dtype"})
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    rotary = Phi3RotaryEmbedding(config)
    assert rotary.attention_scaling == pytest.approx(math.sqrt(1 + math.log(131072 / 4096) / math.log(4096)))
    base = 10000.0 ** (torch.arange(0, 96, 2).float() / 96)
    x = torch.zeros(1, dtype=torch.float32)
    rotary(x, torch.arange(4096).unsqueeze(0))
    torch.testing.assert_close(rotary.inv_freq, 1.0 / (1.0 * base))
    rotary(x, torch.arange(4097).unsqueeze(0))
    torch.testing.assert_close(rotary.inv_freq, 1.0 / (1.5 * base))


def test_longrope_type_is_accepted_too():
    config = Phi3VConfig(
        hidden_size=64,
        num_attention_heads=4,
        rope_scaling={"type": "longrope", "long_factor": [2.0] * 8, "short_factor": [1.0] * 8},
    )
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.to_dict()["rope_scaling"]["type"] == "longrope"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"embd_layer": {"hd_transform_order": "glb_sub"}}, "embd_layer.hd_transform_order"),
        ({"embd_layer": {"projection_cls": "linear"}}, "embd_layer.projection_cls"),
        ({"img_processor": {"vision_config": {"image_size": 224}}}, "image_size 224"),
        ({"img_processor": {"image_dim_out": 64}}, "image_dim_out is 64"),
    ],
)
def test_unsupported_configs_are_refused(override, message):
    fields = {**TINY_CONFIG, **override}
    for key in ("embd_layer", "img_processor"):
        fields[key] = {**TINY_CONFIG[key], **override.get(key, {})}
        if key == "img_processor" and "vision_config" in override.get(key, {}):
            fields[key]["vision_config"] = {**TINY_CONFIG[key]["vision_config"], **override[key]["vision_config"]}
    with pytest.raises(ModelConfigError, match=message):
        Phi3VConfig(**fields)


def test_tiny_checkpoint_has_the_released_names_and_layout(tiny_checkpoint):
    written = json.loads((tiny_checkpoint / "config.json").read_text())
    assert written["rope_scaling"]["type"] == "su" and written["model_type"] == "phi3_v"
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as handle:
        names = set(handle.keys())
    assert {EMBED_KEY, WTE_KEY, "lm_head.weight", "model.norm.weight"} <= names
    assert "model.layers.1.self_attn.qkv_proj.weight" in names
    assert "model.layers.0.mlp.gate_up_proj.weight" in names
    assert "model.layers.0.post_attention_layernorm.weight" in names
    for name in ("img_projection.0.weight", "img_projection.2.bias", "glb_GN", "sub_GN",
                 "img_processor.vision_model.embeddings.patch_embedding.weight",
                 "img_processor.vision_model.encoder.layers.1.mlp.fc2.weight",
                 "img_processor.vision_model.post_layernorm.weight"):
        assert f"model.vision_embed_tokens.{name}" in names


@pytest.mark.parametrize("embedding_names", ["embed_tokens", "wte", "both"])
def test_each_embedding_name_variant_loads_the_same_model(tmp_path, tiny_checkpoint, embedding_names):
    directory = write_tiny_checkpoint(tmp_path / embedding_names, embedding_names=embedding_names, tokenizer=False)
    model = load_tiny(directory)
    reference = load_file(tiny_checkpoint / "model.safetensors")
    state = model.state_dict()
    assert set(state) == set(reference) - {WTE_KEY}
    for name, tensor in state.items():
        assert torch.equal(tensor, reference[name]), name


def test_save_and_load_round_trip_single_and_sharded(tmp_path, tiny_checkpoint):
    model = load_tiny(tiny_checkpoint)
    batch = collate([make_sample([3, (1, 2), 4], seed=3)])
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="2MB")
    assert (tmp_path / "single" / "model.safetensors").is_file()
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == set(model.state_dict())
    saved_config = json.loads((tmp_path / "single" / "config.json").read_text())
    assert saved_config["model_type"] == "phi3_v" and saved_config["rope_scaling"]["type"] == "su"
    assert "rope_parameters" not in saved_config and "auto_map" not in saved_config
    for name in ("single", "sharded"):
        loaded = load_tiny(tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
        assert loaded.generation_config.eos_token_id == [32007, 32000]


def test_auto_classes_load_phi3_v(tiny_checkpoint):
    from transformers import AutoConfig, AutoModelForCausalLM

    assert isinstance(AutoConfig.from_pretrained(tiny_checkpoint), Phi3VConfig)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), Phi3VForCausalLM)


def _rewrite_weights(directory, change):
    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_unknown_and_missing_parameters_are_named(tmp_path):
    unknown = write_tiny_checkpoint(tmp_path / "unknown", tokenizer=False)
    _rewrite_weights(unknown, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unknown parameters model\.layers\.0\.mlp\.extra\.weight"):
        Phi3VForCausalLM.from_pretrained(unknown)
    missing = write_tiny_checkpoint(tmp_path / "missing", tokenizer=False)
    _rewrite_weights(missing, lambda t: [t.pop("model.norm.weight"), t.pop("model.vision_embed_tokens.sub_GN")])
    with pytest.raises(CheckpointError, match=r"missing parameters model\.norm\.weight, model\.vision_embed_tokens\.sub_GN"):
        Phi3VForCausalLM.from_pretrained(missing)
    no_embedding = write_tiny_checkpoint(tmp_path / "none", tokenizer=False)
    _rewrite_weights(no_embedding, lambda t: [t.pop(EMBED_KEY), t.pop(WTE_KEY)])
    with pytest.raises(CheckpointError, match=r"missing parameters model\.embed_tokens\.weight"):
        Phi3VForCausalLM.from_pretrained(no_embedding)


def test_broken_directories_are_clear_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="no config.json"):
        Phi3VForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(CheckpointError, match="no model.safetensors or model.safetensors.index.json"):
        Phi3VForCausalLM.from_pretrained(tmp_path)
    sharded = tmp_path / "sharded"
    load_tiny(tiny_checkpoint).save_pretrained(sharded, max_shard_size="2MB")
    next(sharded.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"shards listed in model.safetensors.index.json are missing: model-00002-of-"):
        Phi3VForCausalLM.from_pretrained(sharded)


def test_attention_choice(tiny_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="phiv_train.model.checkpoint"):
        assert load_tiny(tiny_checkpoint).config._attn_implementation == "sdpa"  # auto on CPU
    if not torch.cuda.is_available():
        assert "attn_implementation 'auto': using sdpa, not flash_attention_2, because no CUDA device" in caplog.text
    caplog.clear()
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING, logger="phiv_train.model.checkpoint"):
            model = load_tiny(tiny_checkpoint, attn_implementation="flash_attention_2")
        assert model.config._attn_implementation == "sdpa"
        assert "flash_attention_2 was requested but no CUDA device is available; using sdpa" in caplog.text
    with pytest.raises(ModelConfigError, match="attn_implementation 'flash' is not supported"):
        load_tiny(tiny_checkpoint, attn_implementation="flash")


def test_auto_attention_on_a_gpu_without_flash_attn_warns_and_picks_sdpa(monkeypatch, caplog):
    import transformers.utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="phiv_train.model.checkpoint"):
        assert resolve_attention("auto", torch.bfloat16) == "sdpa"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "using sdpa, not flash_attention_2, because the flash-attn package is not installed" in record.message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="phiv_train.model.checkpoint"):
        assert resolve_attention("auto", torch.float32) == "sdpa"  # fp32: flash never runs
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "bfloat16 or float16" in record.message
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    assert resolve_attention("auto", torch.bfloat16) == "flash_attention_2"
    assert resolve_attention("sdpa", torch.bfloat16) == "sdpa"


def test_dtype_argument(tiny_checkpoint):
    assert load_tiny(tiny_checkpoint, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert load_tiny(tiny_checkpoint, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert load_tiny(tiny_checkpoint).dtype == torch.float32  # the checkpoint's torch_dtype


def test_unused_clip_parameters_are_frozen_but_saved(tiny_checkpoint):
    model = load_tiny(tiny_checkpoint)
    clip = model.vision_embed_tokens.clip
    assert not any(p.requires_grad for p in clip.encoder.layers[-1].parameters())
    assert not any(p.requires_grad for p in clip.post_layernorm.parameters())
    assert all(p.requires_grad for p in clip.encoder.layers[0].parameters())
    assert model.model.embed_tokens.weight.requires_grad
    assert "model.vision_embed_tokens.img_processor.vision_model.post_layernorm.weight" in model.state_dict()


def test_nf4_quantized_load_on_cpu(tiny_checkpoint):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = load_tiny(tiny_checkpoint, quantization_config=quantization)
    assert isinstance(model.model.layers[0].self_attn.qkv_proj, Linear4bit)
    assert isinstance(model.vision_embed_tokens.img_projection[0], Linear4bit)
    assert model.model.layers[0].self_attn.qkv_proj.weight.quant_state.quant_type == "nf4"
    reference = load_tiny(tiny_checkpoint)
    batch = collate([make_sample([3, (1, 1), 5], seed=8)])
    with torch.no_grad():
        quantized_logits = model(**batch).logits
        full_logits = reference(**batch).logits
    assert torch.isfinite(quantized_logits).all()
    # 4-bit weights move the logits a little, not arbitrarily.
    correlation = torch.corrcoef(torch.stack([quantized_logits.flatten(), full_logits.flatten()]))[0, 1]
    assert correlation > 0.9


def test_tiny_command_line_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert tiny_main([str(tmp_path / "out")]) == 0
    assert "parameters" in capsys.readouterr().out
    assert (tmp_path / "out" / "config.json").is_file()
    assert isinstance(load_tiny(tmp_path / "out"), Phi3VForCausalLM)
