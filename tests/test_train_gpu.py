"""Every mode on a CUDA GPU in bf16 (the recipe's setting): DeepSpeed ZeRO-2 for full
fine-tuning, bitsandbytes' CUDA kernels for QLoRA, flash-attention 2 when installed.
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
from phiv_train.model.tiny import write_tiny_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent
FLASH = importlib.util.find_spec("flash_attn") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_dataset(tmp_path_factory.mktemp("data") / "colours", train=8, val=4)


@pytest.mark.gpu
@pytest.mark.parametrize(("mode", "flags", "zero_stage"), [
    ("full", [], 2),
    ("freeze-vision", ["--freeze-vision"], 2),
    ("lora", ["--use-lora", "--lora-rank", "4", "--merge-lora"], 0),
    ("qlora", ["--use-qlora", "--lora-rank", "4", "--merge-lora"], 0),
])
def test_mode_on_gpu_in_bf16(checkpoint, data, tmp_path, mode, flags, zero_stage):
    output = tmp_path / "out"
    environment = dict(os.environ)
    environment.setdefault("TORCH_EXTENSIONS_DIR", str(REPOSITORY / ".torch_extensions"))
    command = [sys.executable, "-m", "phiv_train",
               *base_arguments(checkpoint, data, output, **{"learning-rate": 1e-2}),
               "--bf16", "--use-flash-attention", *flags]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            cwd=REPOSITORY, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["mode"] == mode and summary["precision"] == "bf16"
    assert summary["deepspeed_zero_stage"] == zero_stage
    if FLASH:
        assert summary["attention"] == "flash_attention_2"
    else:
        assert summary["attention"] == "sdpa"
        assert "flash_attn package is not installed" in result.stderr
    losses = [entry["loss"] for entry in summary["losses"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert summary["eval_after"]["records"] == 4
    final = output / "merged" if mode in ("lora", "qlora") else output
    Phi3VForCausalLM.from_pretrained(final)  # loads as an ordinary checkpoint
