"""Every examples/train_*.yaml loads as a valid phiv-train configuration meaning what its
comments say; the demo configuration trains on the `phiv-data demo` output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from phiv_train.cli import parse_train_args
from phiv_train.config import load_config_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("train_*.yaml"))

EXPECTED = {
    "train_demo.yaml": {"mode": "full", "num_crops": 1, "max_steps": 6},
    "train_full.yaml": {"mode": "full", "deepspeed": "zero2", "bf16": True, "batch_size": 64,
                        "learning_rate": 1e-5, "num_train_epochs": 3},
    "train_freeze_vision.yaml": {"mode": "freeze-vision", "num_crops": 4},
    "train_lora.yaml": {"mode": "lora", "lora_rank": 128, "effective_lora_alpha": 256,
                        "merge_lora": True},
    "train_qlora.yaml": {"mode": "qlora", "use_lora": True, "lora_rank": 32,
                         "effective_lora_alpha": 16, "metric": "anls", "too_long": "drop"},
}


def test_every_example_is_checked():
    assert {path.name for path in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_config_loads(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    load_config_file(path)  # every key is a known option
    config, _ = parse_train_args(["--config", str(path)])
    for name, value in EXPECTED[path.name].items():
        assert getattr(config, name) == value, name
    # the run command written in the example's comments uses this very file
    assert f"phiv-train --config examples/{path.name}" in path.read_text()
    assert config.batch_size % config.per_device_batch_size == 0
    # flags still win over the file
    overridden, _ = parse_train_args(["--config", str(path), "--learning-rate", "0.5"])
    assert overridden.learning_rate == 0.5


@pytest.mark.slow
def test_demo_example_trains_on_the_demo_output(tmp_path):
    from phiv_data.demo import run_demo

    data = run_demo(tmp_path / "phiv-demo", workers=1, echo=lambda text: None)
    model = tmp_path / "phiv-demo" / "tiny-phi3v"  # the README's command writes it
    subprocess.run([sys.executable, "-m", "phiv_train.model.tiny", str(model)],
                   check=True, capture_output=True)
    output = tmp_path / "phiv-demo" / "train"
    result = subprocess.run(
        [sys.executable, "-m", "phiv_train", "--config", str(ROOT / "examples" / "train_demo.yaml"),
         "--model", str(model), "--data", str(data), "--output-dir", str(output),
         # smaller than the example itself: the CI machine is shared
         "--max-steps", "3", "--batch-size", "1", "--per-device-batch-size", "1",
         "--no-eval-before-training", "--max-eval-samples", "1", "--max-new-tokens", "2"],
        capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    losses = [entry["loss"] for entry in summary["losses"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert summary["num_crops"] == 1 and summary["train_records"] == 9
    report = json.loads((output / "eval_after.json").read_text())
    assert report["metric"] == "accuracy" and report["records"] == 1
