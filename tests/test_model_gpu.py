"""On a CUDA GPU: eager, SDPA and flash-attention 2 agree in bf16 (run with ``pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

from phiv_train.model.checkpoint import flash_attention_problem
from tests.model_fixtures import collate, load_tiny, make_sample, tiny_checkpoint_fixture  # noqa: F401

pytestmark = pytest.mark.gpu

# bf16 keeps 8 bits of mantissa; two decoder layers and a CLIP tower of rounding stay within this.
BF16_TOLERANCE = {"rtol": 4e-2, "atol": 4e-2}


def _batch():
    samples = [make_sample([5, (1, 2), 30], seed=1), make_sample([60], seed=2), make_sample([2, (2, 2), 4], seed=3)]
    batch = collate(samples)
    return {key: value.cuda() for key, value in batch.items()}


def _logits(directory, attention, dtype, batch):
    model = load_tiny(directory, dtype=dtype, attn_implementation=attention).cuda()
    assert model.config._attn_implementation == attention
    with torch.no_grad():
        logits = model(**batch).logits.float()
    return logits[batch["attention_mask"].bool()]  # padding rows differ by design


def test_eager_and_sdpa_agree_in_bf16(tiny_checkpoint):
    batch = _batch()
    reference = _logits(tiny_checkpoint, "sdpa", torch.float32, batch)
    eager = _logits(tiny_checkpoint, "eager", torch.bfloat16, batch)
    sdpa = _logits(tiny_checkpoint, "sdpa", torch.bfloat16, batch)
    torch.testing.assert_close(eager, sdpa, **BF16_TOLERANCE)
    torch.testing.assert_close(sdpa, reference, **BF16_TOLERANCE)


@pytest.mark.skipif(
    not torch.cuda.is_available() or flash_attention_problem(torch.bfloat16) is not None,
    reason="flash-attn is not installed (pip install 'phiv[flash]')",
)
def test_flash_attention_agrees_with_sdpa_in_bf16(tiny_checkpoint):
    batch = _batch()
    flash = _logits(tiny_checkpoint, "flash_attention_2", torch.bfloat16, batch)
    sdpa = _logits(tiny_checkpoint, "sdpa", torch.bfloat16, batch)
    torch.testing.assert_close(flash, sdpa, **BF16_TOLERANCE)
    auto = load_tiny(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="auto")
    assert auto.config._attn_implementation == "flash_attention_2"


def test_bf16_training_step_with_checkpointing_on_gpu(tiny_checkpoint):
    model = load_tiny(tiny_checkpoint, dtype=torch.bfloat16).cuda().train()
    model.activation_checkpointing_enable()
    batch = _batch()
    labels = batch["input_ids"].clone()
    labels[(labels < 0) | (batch["attention_mask"] == 0)] = -100
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.vision_embed_tokens.sub_GN.grad.abs().sum() > 0
