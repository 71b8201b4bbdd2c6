"""Training paths: gradients, gradient checkpointing, text-only batches, LoRA targets."""

from __future__ import annotations

import pytest
import torch

from tests.model_fixtures import collate, load_tiny, make_sample, tiny_checkpoint_fixture  # noqa: F401

LORA_TARGETS = [
    "qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head",
    "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2",
    "img_projection.0", "img_projection.2",
]


def _labelled(batch):
    labels = batch["input_ids"].clone()
    labels[(labels < 0) | (batch["attention_mask"] == 0)] = -100
    return {**batch, "labels": labels}


def _gradients(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoint):
    batch = _labelled(collate([make_sample([3, (1, 2), 9], seed=1), make_sample([14], seed=2)]))
    plain = _gradients(load_tiny(tiny_checkpoint), batch)
    model = load_tiny(tiny_checkpoint)
    model.activation_checkpointing_enable()
    assert model.model.layers[0].gradient_checkpointing
    assert model.vision_embed_tokens.clip.encoder.layers[0].gradient_checkpointing
    checkpointed = _gradients(model, batch)
    assert set(plain) == set(checkpointed)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)
    vision = "model.vision_embed_tokens."
    for name in ("glb_GN", "sub_GN", "img_projection.0.weight",
                 "img_processor.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                 "img_processor.vision_model.embeddings.patch_embedding.weight"):
        assert plain[vision + name].abs().sum() > 0, name
    assert not any(name.startswith(vision + "img_processor.vision_model.encoder.layers.1.") for name in plain)
    assert not any("post_layernorm" in name for name in plain)


def test_text_only_batch_gives_every_trainable_parameter_a_gradient(tiny_checkpoint):
    # What DDP needs on a rank whose batch has no image (no find_unused_parameters).
    model = load_tiny(tiny_checkpoint)
    batch = _labelled(collate([make_sample([20], seed=3), make_sample([11], seed=4)]))
    gradients = _gradients(model, batch)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(gradients) == trainable
    vision = [name for name in trainable if ".vision_embed_tokens." in name]
    assert vision and all(torch.count_nonzero(gradients[name]) == 0 for name in vision)
    model.eval()
    with torch.no_grad():
        evaluated = model(**batch).loss
    model.train()
    with torch.no_grad():
        trained = model(**batch).loss
    torch.testing.assert_close(trained, evaluated)  # the guard adds exactly zero


def test_lora_on_the_recipe_targets_trains_decoder_and_vision(tiny_checkpoint):
    peft = pytest.importorskip("peft")
    model = load_tiny(tiny_checkpoint)
    lora = peft.get_peft_model(
        model,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights="gaussian"),
    )
    lora.base_model.model.activation_checkpointing_enable()
    names = {name for name, p in lora.named_parameters() if p.requires_grad}
    for fragment in ("self_attn.qkv_proj.lora_A", "mlp.down_proj.lora_B", "lm_head.lora_A",
                     "encoder.layers.0.self_attn.q_proj.lora_A", "encoder.layers.0.mlp.fc2.lora_B",
                     "img_projection.0.lora_A", "img_projection.2.lora_B"):
        assert any(fragment in name for name in names), fragment
    batch = _labelled(collate([make_sample([3, (1, 1), 6], seed=5)]))
    lora.train()
    lora(**batch).loss.backward()
    missing = [name for name, p in lora.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # adapters in CLIP's unused last layer get a zero gradient, not None
    # lora_B starts at zero, so its gradient is the one that must flow through CLIP.
    used = [p.grad for name, p in lora.named_parameters()
            if p.requires_grad and "encoder.layers.0" in name and "lora_B" in name]
    assert len(used) == 6 and all(g.abs().sum() > 0 for g in used)


def test_freezing_vision_keeps_text_embeddings_trainable(tiny_checkpoint):
    model = load_tiny(tiny_checkpoint)
    for parameter in model.vision_parameters():
        parameter.requires_grad_(False)
    assert model.model.embed_tokens.weight.requires_grad
    gradients = _gradients(model, _labelled(collate([make_sample([3, (1, 1), 6], seed=6)])))
    assert "model.embed_tokens.weight" in gradients
    assert not any(".img_processor." in name for name in gradients)
    assert "model.vision_embed_tokens.img_projection.0.weight" in gradients
