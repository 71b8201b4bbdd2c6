"""Distributed runs on CPU (gloo): DeepSpeed ZeRO-2 over two processes started by
``phiv-train --nproc-per-node 2`` itself, resuming from a ZeRO checkpoint with the same
losses; ZeRO-2 without a launcher and under the ``deepspeed`` launcher (which adds
``--local_rank=N``); LoRA under plain DDP with text-only records."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_train import base_arguments, colour_dataset, colour_record, write_dataset
from safetensors.torch import load_file

from phiv_train.model import Phi3VForCausalLM

REPOSITORY = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def phiv_train(arguments: list[str], *, processes: int = 2) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    # DeepSpeed JIT-compiles its CPU ops on first use: keep them in the workspace (CI exports
    # the same directory), never in the home directory
    environment.setdefault("TORCH_EXTENSIONS_DIR", str(REPOSITORY / ".torch_extensions"))
    environment.setdefault("OMP_NUM_THREADS", "1")
    launcher = ["--nproc-per-node", str(processes), "--master-port", str(free_port())]
    command = [sys.executable, "-m", "phiv_train", *(launcher if processes > 1 else []), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False,
                            cwd=REPOSITORY, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def losses(output: Path) -> list[float]:
    summary = json.loads((output / "train_summary.json").read_text())
    return [entry["loss"] for entry in summary["losses"]]


@pytest.mark.slow
def test_zero2_on_two_processes_trains_saves_and_resumes(checkpoint, tmp_path):
    data = colour_dataset(tmp_path / "data", train=8, val=2)

    def arguments(output: Path, *extra: str, steps: int = 4) -> list[str]:
        # global batch 4 = 2 processes x 1 sample x 2 accumulation steps; a constant rate so
        # that a run stopped at step 2 and a run of 4 steps share their first half
        return base_arguments(checkpoint, data, output, **{
            "batch-size": 4, "per-device-batch-size": 1, "max-steps": steps,
            "learning-rate": 1e-2, "lr-scheduler": "constant"}) + [
            "--deepspeed", "zero2", "--no-eval-after-training", *extra]

    whole = tmp_path / "whole"
    result = phiv_train(arguments(whole))
    assert "starting -m torch.distributed.run --nproc-per-node=2" in result.stderr
    summary = json.loads((whole / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["gradient_accumulation"] == 2
    assert summary["deepspeed_zero_stage"] == 2
    values = losses(whole)
    assert len(values) == 4 and values[-1] < values[0]
    # ZeRO-2 checkpoints: one optimizer partition per process
    partitions = sorted(p.name for p in (whole / "checkpoint-2").glob("global_step2/*optim_states.pt"))
    assert len(partitions) == 2
    # the final model is one ordinary checkpoint that loads, with trained weights
    trained = Phi3VForCausalLM.from_pretrained(whole)
    original = load_file(checkpoint / "model.safetensors")
    weights = dict(trained.named_parameters())
    assert not torch.equal(weights["model.layers.0.mlp.down_proj.weight"],
                           original["model.layers.0.mlp.down_proj.weight"])

    # stop after step 2 (its checkpoint written), then resume to step 4
    parts = tmp_path / "parts"
    phiv_train(arguments(parts, steps=2))
    phiv_train(arguments(parts, "--resume", "auto"))
    resumed = json.loads((parts / "train_summary.json").read_text())
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_step"] == 4
    assert losses(parts) == pytest.approx(values, rel=1e-4)


@pytest.mark.slow
def test_zero2_without_a_launcher_runs_as_a_world_of_one(checkpoint, tmp_path):
    """``phiv-train --deepspeed zero2`` on one device, no torchrun: DeepSpeed must not go
    looking for MPI."""
    data = colour_dataset(tmp_path / "data", train=4, val=0)
    output = tmp_path / "out"
    phiv_train(base_arguments(checkpoint, data, output, **{"max-steps": 2}) + [
        "--deepspeed", "zero2", "--no-eval-after-training"], processes=1)
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["deepspeed_zero_stage"] == 2
    assert summary["global_step"] == 2 and (output / "checkpoint-2" / "global_step2").is_dir()


@pytest.mark.slow
def test_lora_under_ddp_with_text_only_records(checkpoint, tmp_path):
    """Batches without images leave the vision adapters without gradient; DDP must not fail
    on that (the model ties them to the loss with a zero)."""
    records = [colour_record("train", i, ("red", "blue")[i % 2]) for i in range(4)]
    records += [{"id": f"text-{i}", "conversations": [
        {"images": [], "user": "Say red.", "assistant": "red"}]} for i in range(4)]
    data = write_dataset(tmp_path / "data", {"train": records})
    output = tmp_path / "out"
    phiv_train(base_arguments(checkpoint, data, output, **{
        "batch-size": 2, "per-device-batch-size": 1, "learning-rate": 2e-2,
        "lora-rank": 4, "max-steps": 4}) + ["--use-lora", "--no-eval-after-training"])
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["deepspeed_zero_stage"] == 0
    losses = [entry["loss"] for entry in summary["losses"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (output / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_under_the_deepspeed_launcher(checkpoint, tmp_path):
    data = colour_dataset(tmp_path / "data", train=4, val=0)
    output = tmp_path / "out"
    environment = dict(os.environ)
    environment.setdefault("TORCH_EXTENSIONS_DIR", str(REPOSITORY / ".torch_extensions"))
    launcher = Path(sys.executable).with_name("deepspeed")
    command = [sys.executable, str(launcher), "--num_accelerators", "2",
               "--master_port", str(free_port()), "--module", "phiv_train",
               *base_arguments(checkpoint, data, output, **{
                   "batch-size": 2, "per-device-batch-size": 1, "max-steps": 2}),
               "--deepspeed", "zero2", "--no-eval-after-training"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            cwd=REPOSITORY, timeout=600, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "--local_rank=1" in result.stdout + result.stderr
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
