"""Every mode on a CUDA GPU in bf16 (the recipe's setting), and fp16 as on V100s: DeepSpeed
ZeRO-2 for full fine-tuning, bitsandbytes' CUDA kernels for QLoRA, flash-attention 2 when
installed.
Deselected without CUDA; the lead runs them with ``pytest -m gpu tests/test_train_gpu.py``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_train import base_arguments, colour_dataset

from phiv_train.model import Phi3VForCausalLM

REPOSITORY = Path(__file__).resolve().parent.parent
FLASH = importlib.util.find_spec("flash_attn") is not None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_dataset(tmp_path_factory.mktemp("data") / "colours", train=8, val=4)


@pytest.mark.gpu
@pytest.mark.parametrize(("mode", "flags", "zero_stage", "precision"), [
    ("full", ["--bf16", "--use-flash-attention"], 2, "bf16"),
    ("freeze-vision", ["--freeze-vision", "--bf16", "--use-flash-attention"], 2, "bf16"),
    ("lora", ["--use-lora", "--lora-rank", "4", "--merge-lora", "--bf16",
              "--use-flash-attention"], 0, "bf16"),
    ("qlora", ["--use-qlora", "--lora-rank", "4", "--merge-lora", "--bf16",
               "--use-flash-attention"], 0, "bf16"),
    # GPUs without bf16 (V100): fp16 mixed precision, SDPA
    ("full", ["--fp16"], 2, "fp16"),
    ("lora", ["--use-lora", "--lora-rank", "4", "--fp16"], 0, "fp16"),
])
def test_mode_on_gpu(checkpoint, data, tmp_path, mode, flags, zero_stage, precision):
    output = tmp_path / "out"
    environment = dict(os.environ)
    environment.setdefault("TORCH_EXTENSIONS_DIR", str(REPOSITORY / ".torch_extensions"))
    command = [sys.executable, "-m", "phiv_train",
               *base_arguments(checkpoint, data, output, **{"learning-rate": 1e-2}), *flags]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            cwd=REPOSITORY, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["mode"] == mode and summary["precision"] == precision
    assert summary["deepspeed_zero_stage"] == zero_stage
    if "--use-flash-attention" not in flags:
        assert summary["attention"] == "sdpa"
    elif FLASH:
        assert summary["attention"] == "flash_attention_2"
    else:
        assert summary["attention"] == "sdpa"
        assert "flash_attn package is not installed" in result.stderr
    losses = [entry["loss"] for entry in summary["losses"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert summary["eval_after"]["records"] == 4
    final = output / "merged" if "--merge-lora" in flags else output
    if mode in ("full", "freeze-vision") or "--merge-lora" in flags:
        Phi3VForCausalLM.from_pretrained(final)  # loads as an ordinary checkpoint
