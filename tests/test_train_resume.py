"""Resuming: a run interrupted after a checkpoint and resumed with ``--resume`` reproduces the
uninterrupted run's losses step for step (optimizer, scheduler, data position and RNG restored)."""

from __future__ import annotations

import json

import pytest
from fixtures_train import base_arguments, colour_dataset
from transformers import TrainerCallback

from phiv_data.errors import UsageError
from phiv_train.cli import parse_train_args
from phiv_train.recipe import resume_checkpoint, run


class Crash(RuntimeError):
    """Stands for the machine going away in the middle of a run."""


class CrashAfterStep(TrainerCallback):
    """Raises once training has finished step ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.step:
            raise Crash(f"interrupted at step {state.global_step}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 6 records, batch 2: 3 steps an epoch, so 4 steps cross an epoch boundary (reshuffle)
    return colour_dataset(tmp_path_factory.mktemp("data") / "colours", train=6, val=0)


def losses(summary):
    return [(entry["step"], entry["loss"]) for entry in summary["losses"]]


MODES = {
    "full": [],
    "lora": ["--use-lora", "--lora-rank", "4", "--lora-dropout", "0.1"],
    "qlora": ["--use-qlora", "--lora-rank", "4"],
}


@pytest.mark.parametrize("mode", list(MODES))
def test_resume_reproduces_the_uninterrupted_losses(checkpoint, data, tmp_path, mode):
    def arguments(output, *extra):
        return base_arguments(checkpoint, data, output, **{"learning-rate": 1e-2}) + [
            "--no-eval-after-training", *MODES[mode], *extra]

    config, _ = parse_train_args(arguments(tmp_path / "whole"))
    whole = losses(run(config).summary)
    assert [step for step, _ in whole] == [1, 2, 3, 4]

    interrupted, _ = parse_train_args(arguments(tmp_path / "parts"))
    with pytest.raises(Crash):
        run(interrupted, callbacks=[CrashAfterStep(2)])
    assert sorted(p.name for p in (tmp_path / "parts").glob("checkpoint-*")) == ["checkpoint-2"]
    resumed_config, _ = parse_train_args(arguments(tmp_path / "parts", "--resume", "auto"))
    resumed = run(resumed_config).summary
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert [step for step, _ in losses(resumed)] == [1, 2, 3, 4]
    assert [loss for _, loss in losses(resumed)] == pytest.approx([loss for _, loss in whole],
                                                                   rel=1e-4)
    saved = json.loads((tmp_path / "parts" / "train_summary.json").read_text())
    assert saved["global_step"] == 4


def test_resume_auto_without_checkpoint_starts_fresh_and_a_bad_path_is_refused(tmp_path):
    config, _ = parse_train_args(["--output-dir", str(tmp_path / "new"), "--resume", "auto"])
    assert resume_checkpoint(config) is None
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    config, _ = parse_train_args(["--output-dir", str(tmp_path / "run"), "--resume", "auto"])
    assert resume_checkpoint(config).endswith("checkpoint-3")
    config, _ = parse_train_args(["--output-dir", str(tmp_path / "run"),
                                  "--resume", str(tmp_path / "run")])
    with pytest.raises(UsageError, match="not a checkpoint directory .*--resume auto"):
        resume_checkpoint(config)
