"""bench/train.py on the CPU with the tiny model: every mode runs for the recipe's setup and
phiv's, with the parameters each mode trains, and phiv-train's refusals reported per run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train.py"
TINY_EMBEDDING = 32064 * 64  # vocabulary x the tiny decoder's width


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("phiv_bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def run_bench(bench, tmp_path, *flags):
    output = tmp_path / "bench.json"
    arguments = ["--device", "cpu", "--size", "tiny", "--dtype", "fp32", "--num-crops", "1",
                 "--pages", "300x400", "--batch", "2", "--steps", "1", "--warmup", "0",
                 "--qlora-checkpoint", str(tmp_path / "random"), "--json", str(output), *flags]
    assert bench.main(arguments) == 0
    return json.loads(output.read_text())["results"]


@pytest.mark.slow  # eight tiny training runs: 15-30 s on the shared 2-core machine
def test_every_mode_for_both_setups(bench, tmp_path, capsys):
    results = run_bench(bench, tmp_path)
    assert [(r["mode"], r["name"]) for r in results] == [
        (mode, name) for mode in ("full", "freeze-vision", "lora", "qlora") for name in ("recipe", "phiv")]
    assert not [r for r in results if "error" in r]
    by = {(r["mode"], r["name"]): r for r in results}
    for result in results:
        assert result["samples_per_second"] > 0 and result["tokens_per_second"] > 0
        assert math.isfinite(result["loss_last"]) and result["loss_last"] > 0
        assert result["precision"] == "fp32"
    recipe, phiv = by["full", "recipe"], by["full", "phiv"]
    assert (recipe["batch"], recipe["attention_used"], phiv["batch"], phiv["attention_used"]) == (1, "eager", 2, "sdpa")
    # one sample per step has no padding; two questions of different lengths do
    assert recipe["padding_fraction"] == 0 and phiv["padding_fraction"] > 0
    # what trains: the recipe's frozen vision also froze the text embeddings, phiv's does not
    trainable = {key: r["parameters"]["trainable"] for key, r in by.items()}
    assert trainable["freeze-vision", "phiv"] - trainable["freeze-vision", "recipe"] == TINY_EMBEDDING
    assert trainable["freeze-vision", "phiv"] < trainable["full", "phiv"]
    assert trainable["lora", "phiv"] < trainable["freeze-vision", "phiv"]
    # QLoRA: same adapters as LoRA over a base whose 4-bit weights pack two per byte
    assert trainable["qlora", "phiv"] == trainable["lora", "phiv"]
    assert by["qlora", "phiv"]["parameters"]["total"] < by["lora", "phiv"]["parameters"]["total"]
    printed = capsys.readouterr().out
    assert "x speed" in printed and "recipe's table, 8x A100-80GB: eager 42 GB" in printed
    assert (tmp_path / "random" / "config.json").is_file()  # a named checkpoint folder is kept


def test_refused_configuration_is_reported_not_run(bench, tmp_path, capsys):
    results = run_bench(bench, tmp_path, "--dtype", "fp16", "--attn", "flash_attention_2",
                        "--modes", "full", "--setups", "phiv")
    assert len(results) == 1 and "flash-attention does not run with fp16" in results[0]["error"]
    assert "not run: refused" in capsys.readouterr().out
