"""The training run as a recipe: ``setup``, ``train``, ``evaluate``, on transformers' Trainer.

``run(config)`` does everything ``phiv-train`` does::

    run = setup(config)           # data (validated shards only), processor, model, Trainer
    evaluate(run, "before")       # with --eval-before-training
    train(run)                    # checkpoints every --save-steps, --resume, final model
    evaluate(run, "after")        # when evaluation data is present

Outputs in ``--output-dir``: ``checkpoint-N/`` (Trainer checkpoints, resumable), the final
model (or LoRA adapter; ``merged/`` with ``--merge-lora``) with its tokenizer,
``train_config.yaml``, ``deepspeed_config.json`` (when used), ``skipped_samples.json``,
``train_summary.json`` and ``eval_{before,after}.json``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from phiv_data.errors import UsageError, display_path
from phiv_data.shards import atomic_write
from phiv_train.config import TrainConfig
from phiv_train.data import (
    RecordDataset,
    RecordIndex,
    ShardSource,
    available_splits,
    refuse_unlabeled,
    resolve_sources,
    scan_lengths,
)
from phiv_train.ds_config import resolve_deepspeed, zero_stage
from phiv_train.modes import (
    load_model,
    prepare_model,
    resolve_attention,
    resolve_checkpoint,
    resolve_precision,
    trainable_summary,
)

logger = logging.getLogger("phiv_train")


@dataclass
class World:
    """This process's place in the run (from torchrun's environment)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @classmethod
    def from_environment(cls) -> World:
        """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (1 process when unset)."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        """The process that writes reports and logs."""
        return self.rank == 0


@dataclass
class Run:
    """Everything ``setup`` prepared."""

    config: TrainConfig
    output_dir: Path
    world: World
    on_gpu: bool
    processor: Any
    model: Any
    trainer: Any
    train_index: RecordIndex
    eval_index: RecordIndex | None
    deepspeed: dict[str, Any] | None
    summary: dict[str, Any] = field(default_factory=dict)
    resume_from: str | None = None  # the checkpoint --resume names (None: a fresh start)


def gradient_accumulation(config: TrainConfig, world_size: int) -> int:
    """Steps to accumulate so that ``--batch-size`` is the global batch.

    Raises:
        UsageError: when the global batch is not a multiple of per-device batch x processes.
    """
    per_step = config.per_device_batch_size * world_size
    if config.batch_size % per_step:
        raise UsageError(
            f"--batch-size {config.batch_size} is not a multiple of --per-device-batch-size "
            f"{config.per_device_batch_size} x {world_size} processes = {per_step}",
            hint=f"use a global batch size that is a multiple of {per_step}")
    return config.batch_size // per_step


def default_num_crops(sources: list[ShardSource]) -> int:
    """The recipe's choice: 16 crops for single images, 4 when records hold several."""
    records = sum(source.entry.records for source in sources)
    images = sum(source.entry.images for source in sources)
    return 4 if records and images > records else 16


def _training_sources(config: TrainConfig) -> list[ShardSource]:
    if not config.data:
        raise UsageError("no training data: pass --data DIR (a validated dataset directory)")
    sources = resolve_sources(config.data, split="train")
    if not sources:
        splits = ", ".join(available_splits(config.data)) or "none"
        raise UsageError(f"--data {' '.join(config.data)}: no train split in the manifest "
                         f"(splits: {splits})",
                         hint="name the shard files to train on instead of the directory")
    refuse_unlabeled(sources)
    return sources


def _evaluation_sources(config: TrainConfig) -> list[ShardSource]:
    if config.eval_data:
        return resolve_sources(config.eval_data, split=None)
    directories = [spec for spec in config.data if Path(spec).is_dir() or spec.endswith(".json")]
    return resolve_sources(directories, split="val") if directories else []


def training_arguments(config: TrainConfig, *, accumulation: int, on_gpu: bool,
                       deepspeed: dict[str, Any] | None, world: World) -> Any:
    """transformers ``TrainingArguments`` carrying the recipe's optimiser and schedule."""
    from transformers import TrainingArguments

    precision = resolve_precision(config)
    return TrainingArguments(
        output_dir=str(config.output_dir),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps or -1,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        optim="adamw_torch",
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=on_gpu,
        dataloader_persistent_workers=config.dataloader_workers > 0,
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=[name for name in config.report_to if name != "none"] or "none",
        run_name=config.run_name,
        deepspeed=deepspeed,
        ddp_find_unused_parameters=bool(config.ddp_find_unused_parameters),
        ddp_backend=config.ddp_backend or (None if on_gpu else ("gloo" if world.size > 1 else None)),
        use_cpu=not on_gpu,
        eval_strategy="no",
        disable_tqdm=not world.is_main,
    )


def setup(config: TrainConfig, *, callbacks: list[Any] | None = None) -> Run:
    """Check the data, build the processor, model and Trainer for a run.

    Args:
        config: the run's configuration.
        callbacks: extra ``transformers.TrainerCallback`` objects (tests, tools).

    Raises:
        UsageError, ManifestError, DataError: before any model is loaded when the data or
            the options are wrong.
    """
    from transformers import Trainer, set_seed

    from phiv_train.processing.collator import Phi3VCollator
    from phiv_train.processing.processor import Phi3VProcessor

    if not config.output_dir:
        raise UsageError("no output directory: pass --output-dir OUT")
    world = World.from_environment()
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    if config.fp16 and not on_gpu:  # the Trainer would silently run fp32 instead
        raise UsageError("--fp16 needs a CUDA GPU", hint="on the CPU train in fp32 (no flag) or --bf16")
    train_sources = _training_sources(config)
    # every mistake a user can make is found before any weights are read
    resume_from = resume_checkpoint(config)
    config = config.model_copy(update={"model": str(resolve_checkpoint(config.model))})
    eval_sources = _evaluation_sources(config)
    accumulation = gradient_accumulation(config, world.size)
    num_crops = config.num_crops or default_num_crops(train_sources)
    attention = resolve_attention(config, on_gpu=on_gpu)
    deepspeed = resolve_deepspeed(config, on_gpu=on_gpu)
    output_dir = Path(config.output_dir)
    if deepspeed is not None:
        _single_process_world()
        if not on_gpu:
            _skip_deepspeed_cpu_kernels()
    arguments = training_arguments(config, accumulation=accumulation, on_gpu=on_gpu,
                                   deepspeed=deepspeed, world=world)  # starts torch.distributed

    policy = "truncate_turns" if config.too_long == "truncate_turns" else "error"
    processor = Phi3VProcessor.from_pretrained(config.model, num_crops=num_crops,
                                               max_length=config.max_length, truncation=policy)
    train_index = RecordIndex(train_sources, limit=config.max_train_samples)
    scan = scan_lengths(train_index, processor, max_length=config.max_length, policy=config.too_long)
    if not scan.keep:
        raise UsageError(f"every training record exceeds --max-length {config.max_length}",
                         hint="raise --max-length or lower --num-crops")
    train_dataset = RecordDataset(train_index, processor.encode, keep=scan.keep)
    eval_index = RecordIndex(eval_sources, limit=config.max_eval_samples) if eval_sources else None
    eval_processor = Phi3VProcessor(processor.tokenizer, num_crops=num_crops)

    # adapters are initialised randomly: seed first, so that a run is repeatable
    set_seed(config.seed)
    device_map = {"": world.local_rank if on_gpu else "cpu"} if config.use_qlora else None
    model = prepare_model(load_model(config, attention=attention, device_map=device_map), config)
    trainer = Trainer(model=model, args=arguments, train_dataset=train_dataset,
                      data_collator=Phi3VCollator(padding_side="right"), callbacks=callbacks)
    run = Run(config, output_dir, world, on_gpu, eval_processor, model, trainer, train_index,
              eval_index, deepspeed, resume_from=resume_from)
    run.summary = {
        "mode": config.mode, "precision": resolve_precision(config).name, "attention": attention,
        "num_crops": num_crops, "world_size": world.size, "gradient_accumulation": accumulation,
        "global_batch_size": config.batch_size, "deepspeed_zero_stage": zero_stage(deepspeed),
        "train_records": len(train_index), "trained_records": len(scan.keep),
        "skipped_too_long": len(scan.too_long), "eval_records": len(eval_index or []),
        "parameters": trainable_summary(model),
    }
    if world.is_main:
        _write_setup_files(run, scan.too_long)
        logger.warning("phiv-train: %s", json.dumps(run.summary))
    return run


def _single_process_world() -> None:
    """Without a launcher, describe a world of one process, as the deepspeed launcher would:
    DeepSpeed otherwise looks for MPI (``mpi4py``) to find its peers."""
    if "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    with socket.socket() as probe:  # a free port, so that several runs can share a machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def _skip_deepspeed_cpu_kernels() -> None:
    """CPU runs (tests, debugging) do not need DeepSpeed's shared-memory all-reduce kernel,
    which it would JIT-compile on first use (a minute or more); gloo's is used instead."""
    try:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    except (ImportError, AttributeError, TypeError):  # a DeepSpeed without this registry
        pass


def _write_setup_files(run: Run, too_long: list[dict[str, Any]]) -> None:
    run.output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run.output_dir / "train_config.yaml", "w") as handle:
        handle.write(yaml.safe_dump(run.config.model_dump(), sort_keys=False))
    if run.deepspeed is not None:
        with atomic_write(run.output_dir / "deepspeed_config.json", "w") as handle:
            handle.write(json.dumps(run.deepspeed, indent=2) + "\n")
    if too_long:
        with atomic_write(run.output_dir / "skipped_samples.json", "w") as handle:
            handle.write(json.dumps({"reason": f"longer than --max-length {run.config.max_length}",
                                     "records": too_long}, indent=1) + "\n")
        logger.warning("phiv-train: %d training records over --max-length %s left out (listed in %s)",
                       len(too_long), run.config.max_length,
                       display_path(run.output_dir / "skipped_samples.json"))


def resume_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint ``--resume`` names: ``auto`` -> the newest in the output directory.

    Raises:
        UsageError: a path that is not a Trainer checkpoint.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if config.resume is None:
        return None
    if config.resume == "auto":
        output_dir = Path(config.output_dir)
        found = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if found is None:
            logger.warning("phiv-train: --resume auto: no checkpoint in %s, starting fresh",
                           display_path(output_dir))
        return found
    path = Path(config.resume)
    if not (path / "trainer_state.json").is_file():
        raise UsageError(f"--resume {config.resume}: not a checkpoint directory "
                         "(no trainer_state.json)",
                         hint="pass a checkpoint-N directory, or --resume auto")
    return str(path)


def train(run: Run) -> dict[str, Any]:
    """Train (resuming when asked), save the final model, and record the summary."""
    checkpoint = run.resume_from
    result = run.trainer.train(resume_from_checkpoint=checkpoint)
    run.trainer.save_model(str(run.output_dir))
    history = run.trainer.state.log_history
    run.summary |= {
        "resumed_from": checkpoint, "global_step": run.trainer.state.global_step,
        "metrics": result.metrics,
        "losses": [{"step": entry["step"], "loss": entry["loss"]} for entry in history if "loss" in entry],
    }
    if run.trainer.is_world_process_zero():
        run.processor.tokenizer.save_pretrained(str(run.output_dir))
        if run.config.merge_lora:
            merge_lora(run)
        with atomic_write(run.output_dir / "train_summary.json", "w") as handle:
            handle.write(json.dumps(run.summary, indent=1, default=str) + "\n")
    return run.summary


def merge_lora(run: Run) -> Path:
    """Write base + adapter as one full checkpoint in ``OUTPUT/merged`` (QLoRA adapters are
    merged into a base reloaded in 16/32-bit, never into the 4-bit weights)."""
    from peft import PeftModel

    from phiv_train.model import Phi3VForCausalLM

    precision = resolve_precision(run.config)
    dtype = precision.weights if precision.name != "fp16" else torch.float16
    base = Phi3VForCausalLM.from_pretrained(run.config.model, dtype=dtype, attn_implementation="sdpa")
    merged = PeftModel.from_pretrained(base, str(run.output_dir)).merge_and_unload()
    target = run.output_dir / "merged"
    merged.save_pretrained(str(target))
    run.processor.tokenizer.save_pretrained(str(target))
    return target


def evaluate(run: Run, stage: str) -> dict[str, Any] | None:
    """Generate answers for the evaluation records and write ``eval_{stage}.json``.

    Returns:
        The report (on every rank), or None without evaluation data.
    """
    from phiv_train.evaluate import (
        choose_metric,
        gather_answers,
        generate_answers,
        score_answers,
        write_report,
    )

    if run.eval_index is None or len(run.eval_index) == 0:
        return None
    metric = choose_metric(run.eval_index, run.config.metric)
    model = run.trainer.model
    device = next(model.parameters()).device
    answers = generate_answers(model, run.processor, run.eval_index,
                               batch_size=run.config.eval_batch_size,
                               max_new_tokens=run.config.max_new_tokens, rank=run.world.rank,
                               world_size=run.world.size, workers=run.config.dataloader_workers,
                               device=device, synced_gpus=zero_stage(run.deepspeed) == 3)
    report = score_answers(run.eval_index, gather_answers(answers), metric) | {"stage": stage}
    if run.world.is_main:
        write_report(run.output_dir / f"eval_{stage}.json", report)
        score = "n/a (no answers)" if report["score"] is None else f"{100 * report['score']:.2f}"
        logger.warning("phiv-train: %s-training %s on %d records: %s", stage, metric,
                       report["records"], score)
    run.summary[f"eval_{stage}"] = {"metric": metric, "score": report["score"],
                                    "records": report["records"]}
    return report


def run(config: TrainConfig, *, callbacks: list[Any] | None = None) -> Run:
    """The whole ``phiv-train`` run: setup, optional evaluation before, train, evaluate after."""
    prepared = setup(config, callbacks=callbacks)
    if config.eval_before_training:
        evaluate(prepared, "before")
    train(prepared)
    if config.eval_after_training:
        evaluate(prepared, "after")
        if prepared.world.is_main and prepared.eval_index is not None:
            with atomic_write(prepared.output_dir / "train_summary.json", "w") as handle:
                handle.write(json.dumps(prepared.summary, indent=1, default=str) + "\n")
    return prepared
