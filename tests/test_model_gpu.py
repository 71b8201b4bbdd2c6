"""On a CUDA GPU: eager, SDPA and flash-attention 2 agree in bf16 (run with ``pytest -m gpu``).

Without the flash-attn package only the flash-attention comparison is skipped (its reason
says why); eager vs SDPA and the ``auto`` choice are checked on every GPU.
"""

from __future__ import annotations

import logging

import pytest
import torch

from phiv_train.model.checkpoint import flash_attention_problem
from tests.model_fixtures import collate, load_tiny, make_sample, tiny_checkpoint_fixture  # noqa: F401

pytestmark = pytest.mark.gpu

# bf16 keeps 8 bits of mantissa (a relative step of 2**-8 = 0.004). The tiny model's logits
# are of order 1 (std about 0.16); bf16 eager, SDPA and an fp32 run differ by about 0.008 at
# most (measured on CPU), so 0.025 leaves a margin of 3 while a wrong mask or position
# (differences of the order of the logits' spread) still fails.
BF16_TOLERANCE = {"rtol": 2.5e-2, "atol": 2.5e-2}
FLASH_PROBLEM = flash_attention_problem(torch.bfloat16) if torch.cuda.is_available() else "no CUDA device"


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
    assert reference.std() > 4 * BF16_TOLERANCE["atol"]  # the tolerance is not vacuous
    torch.testing.assert_close(eager, sdpa, **BF16_TOLERANCE)
    torch.testing.assert_close(eager, reference, **BF16_TOLERANCE)
    torch.testing.assert_close(sdpa, reference, **BF16_TOLERANCE)


def test_auto_picks_flash_attention_when_installed_and_sdpa_with_a_message_otherwise(tiny_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="phiv_train.model.checkpoint"):
        model = load_tiny(tiny_checkpoint, dtype=torch.bfloat16, attn_implementation="auto")
    if FLASH_PROBLEM is None:
        assert model.config._attn_implementation == "flash_attention_2"
    else:
        assert model.config._attn_implementation == "sdpa"
        assert f"attn_implementation 'auto': using sdpa, not flash_attention_2, because {FLASH_PROBLEM}" in caplog.text


@pytest.mark.skipif(FLASH_PROBLEM is not None, reason=f"flash-attention 2 cannot run: {FLASH_PROBLEM}")
def test_flash_attention_agrees_with_sdpa_in_bf16(tiny_checkpoint):
    batch = _batch()
    flash = _logits(tiny_checkpoint, "flash_attention_2", torch.bfloat16, batch)
    sdpa = _logits(tiny_checkpoint, "sdpa", torch.bfloat16, batch)
    torch.testing.assert_close(flash, sdpa, **BF16_TOLERANCE)


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
