"""Evaluation by generation: greedy answers, scored with accuracy or ANLS, saved per record.

Each process generates for its share of the records (record ``i`` goes to rank
``i % world_size``); the main process gathers everything and writes one JSON file with the
score and every prediction. Records without an answer (a test split) get predictions and
no score.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from phiv_data.phi3v import PAD_TOKEN_ID, STOP_TOKEN_IDS
from phiv_data.schema import Record
from phiv_data.shards import atomic_write
from phiv_train.data import RecordIndex
from phiv_train.metrics import METRICS, mean_score

logger = logging.getLogger("phiv_train")


def reference_answers(record: Record, metric: str) -> list[str] | None:
    """The accepted answers of a record: ``meta.answers`` for ANLS (all DocVQA variants),
    else the last turn's answer; ``None`` for an unlabeled record."""
    if metric == "anls" and record.meta and isinstance(record.meta.get("answers"), list):
        answers = [str(answer) for answer in record.meta["answers"]]
        if answers:
            return answers
    answer = record.conversations[-1].assistant
    return [answer] if answer is not None else None


def choose_metric(index: RecordIndex, requested: str, *, probe: int = 32) -> str:
    """``accuracy`` or ``anls``: as requested, or ANLS when records carry ``meta.answers``."""
    if requested != "auto":
        return requested
    for position in range(min(probe, len(index))):
        record, _, _ = index.read(position)
        if record.meta and isinstance(record.meta.get("answers"), list):
            return "anls"
    return "accuracy"


class _PromptDataset:
    """Generation prompts for this rank's records (encoded in data-loader workers)."""

    def __init__(self, index: RecordIndex, positions: list[int], processor: Any) -> None:
        self.index, self.positions, self.processor = index, positions, processor

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int) -> dict[str, Any]:
        record, source, _ = self.index.read(self.positions[item])
        sample = self.processor.encode_for_generation(record, source.images_root)
        sample["position"] = self.positions[item]
        return sample


def _collate(collator: Any):
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        positions = [sample.pop("position") for sample in samples]
        batch = collator(samples)
        batch["positions"] = positions
        return batch
    return collate


@torch.no_grad()
def generate_answers(model: torch.nn.Module, processor: Any, index: RecordIndex, *,
                     batch_size: int, max_new_tokens: int, rank: int = 0, world_size: int = 1,
                     workers: int = 0, device: torch.device | str = "cpu",
                     synced_gpus: bool = False) -> dict[int, str]:
    """Greedy answers for this rank's share of the records.

    Args:
        model: the model (or PeftModel) to generate with.
        processor: a ``Phi3VProcessor``.
        index: the evaluation records.
        batch_size: prompts per ``generate`` call (left-padded together).
        max_new_tokens: the longest answer.
        rank, world_size: this process's share is every ``world_size``-th record.
        workers: data-loader worker processes.
        device: where the model is.
        synced_gpus: keep ranks in step (DeepSpeed ZeRO-3 needs every rank in every forward).

    Returns:
        Index position -> generated text (special tokens removed, not stripped).
    """
    from phiv_train.processing.collator import Phi3VCollator

    positions = list(range(rank, len(index), world_size))
    if synced_gpus:  # every rank runs the same number of generate() calls
        per_rank = math.ceil(len(index) / world_size)
        positions += positions[-1:] * (per_rank - len(positions)) if positions else []
    loader = DataLoader(_PromptDataset(index, positions, processor), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate(Phi3VCollator(padding_side="left")))
    was_training = model.training
    model.eval()
    answers: dict[int, str] = {}
    try:
        for batch in loader:
            batch_positions = batch.pop("positions")
            inputs = {key: value.to(device) for key, value in batch.items()
                      if isinstance(value, torch.Tensor)}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(_floating_dtype(model))
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=list(STOP_TOKEN_IDS), pad_token_id=PAD_TOKEN_ID,
                                    synced_gpus=synced_gpus)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            answers.update(zip(batch_positions, texts))
    finally:
        model.train(was_training)
    return answers


def _floating_dtype(model: torch.nn.Module) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point() and parameter.dtype != torch.float32:
            return parameter.dtype if parameter.dtype in (torch.bfloat16, torch.float16) else torch.float32
    return torch.float32


def gather_answers(answers: dict[int, str]) -> dict[int, str]:
    """Merge every rank's answers (a no-op without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return answers
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, answers)
    merged: dict[int, str] = {}
    for part in gathered:
        merged.update(part)
    return merged


def score_answers(index: RecordIndex, answers: dict[int, str], metric: str) -> dict[str, Any]:
    """Score every prediction and build the report.

    Returns:
        ``{"metric", "score", "records", "scored", "predictions": [{"id", "prediction",
        "answers", "score"}, ...]}``; ``score`` is the mean over labeled records (None when
        there are none), in [0, 1].
    """
    function = METRICS[metric]
    predictions, scores = [], []
    for position in sorted(answers):
        record, source, line = index.read(position)
        accepted = reference_answers(record, metric)
        prediction = answers[position]
        score = function(prediction, accepted) if accepted is not None else None
        if score is not None:
            scores.append(score)
        predictions.append({"id": record.id, "shard": source.shown, "line": line,
                            "prediction": prediction.strip(), "answers": accepted, "score": score})
    return {"metric": metric, "score": mean_score(scores), "records": len(predictions),
            "scored": len(scores), "predictions": predictions}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write an evaluation report as JSON, atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
