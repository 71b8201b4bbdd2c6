"""``phiv-train``: thin command line over ``phiv_train.recipe``. Parse, call, print.

The flags are generated from ``TrainConfig`` (one flag per field, its comment as help), so
``phiv-train --help`` always lists every option. ``phiv-train plan`` estimates memory per
GPU. Errors a user can fix print one line and exit non-zero (2 for usage errors);
``PHIV_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from phiv_data.errors import PhivError, UsageError
from phiv_train.config import (
    LAUNCHER_FIELDS,
    RECIPE_ALIASES,
    TrainConfig,
    build_config,
    load_config_file,
)

SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data", "eval_data", "max_train_samples", "max_eval_samples", "full_train",
             "num_crops", "max_length", "too_long", "dataloader_workers", "seed"),
    "model and output": ("model", "output_dir"),
    "what to train": ("freeze_vision", "freeze_projector", "use_lora", "use_qlora", "lora_rank",
                      "lora_alpha_ratio", "lora_alpha", "lora_dropout", "lora_target_modules",
                      "merge_lora"),
    "precision and memory": ("bf16", "fp16", "use_flash_attention", "attention",
                             "gradient_checkpointing"),
    "batch, optimiser, schedule": ("batch_size", "per_device_batch_size", "learning_rate",
                                   "num_train_epochs", "max_steps", "weight_decay", "adam_beta1",
                                   "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler",
                                   "warmup_steps"),
    "distribution (torchrun, DeepSpeed)": ("deepspeed", "offload", "ddp_find_unused_parameters",
                                           "ddp_backend", "local_rank", *LAUNCHER_FIELDS, "use_cpu"),
    "checkpoints": ("save_steps", "save_total_limit", "resume"),
    "evaluation": ("eval_before_training", "eval_after_training", "metric", "max_new_tokens",
                   "eval_batch_size"),
    "logging": ("logging_steps", "report_to", "run_name"),
}

DESCRIPTION = """\
Fine-tune Phi-3.5-vision on validated phiv shards (full, frozen vision, LoRA, QLoRA).

  phiv-train --data DIR --output-dir OUT [--bf16 --use-flash-attention] [--use-lora ...]
  phiv-train --config run.yaml --learning-rate 1e-5      (flags win over the file)
  phiv-train --nproc-per-node 8 --data DIR --output-dir OUT   (starts torchrun itself)
  torchrun --nproc_per_node=8 -m phiv_train --data DIR --output-dir OUT
  phiv-train plan [--gpus 8xA100-80GB]     memory per GPU for each mode (see `plan --help`)
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def _optional_converter(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _argument_options(annotation: Any) -> dict[str, Any]:
    """argparse keyword arguments for a field's type annotation."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    optional = origin in (typing.Union, types.UnionType) and type(None) in arguments
    if optional:
        annotation = next(argument for argument in arguments if argument is not type(None))
        origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": "store_true"}
    if origin is list:
        return {"nargs": "+", "metavar": "VALUE"}
    if origin is Literal:
        return {"choices": list(arguments)}
    convert = annotation if annotation in (int, float) else str
    return {"type": _optional_converter(convert) if optional else convert,
            "metavar": {int: "N", float: "X"}.get(convert, "VALUE")}


def option_strings(name: str) -> list[str]:
    """``--kebab-name``, then ``--snake_name`` and the recipe's spelling as aliases."""
    spellings = [f"--{name.replace('_', '-')}"]
    if "_" in name:
        spellings.append(f"--{name}")
    spellings += [f"--{alias}" for alias, target in RECIPE_ALIASES.items() if target == name]
    if name == "local_rank":
        spellings.append("--local-rank")
    return list(dict.fromkeys(spellings))


def build_parser() -> argparse.ArgumentParser:
    """The ``phiv-train`` argument parser, one flag per ``TrainConfig`` field."""
    parser = OneLineParser(prog="phiv-train", description=DESCRIPTION, allow_abbrev=False,
                     usage="phiv-train [plan] [--config FILE] [options]",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE", help=(
        "YAML or JSON file of options (same names as the flags); flags win."))
    parser.add_argument("--print-config", action="store_true", help=(
        "Print the resolved configuration as YAML and exit."))
    fields = TrainConfig.model_fields
    for title, names in SECTIONS.items():
        group = parser.add_argument_group(title)
        for name in names:
            field = fields[name]
            default = field.get_default(call_default_factory=True)
            help_text = field.description or ""
            if default is True:
                help_text += f" [default: on; --no-{name.replace('_', '-')} turns it off]"
            elif default not in (None, [], False):
                shown = " ".join(map(str, default)) if isinstance(default, list) else default
                help_text += f" [default: {shown}]"
            options = _argument_options(field.annotation)
            spellings = option_strings(name)
            group.add_argument(*spellings, dest=name, help=help_text.replace("%", "%%"), **options)
            if options.get("action") == "store_true":
                # one negative spelling is enough: `--no-gradient-checkpointing`
                group.add_argument(f"--no-{spellings[0][2:]}", dest=name, action="store_false",
                                   help=argparse.SUPPRESS)
    return parser


def parse_train_args(argv: Sequence[str]) -> tuple[TrainConfig, bool]:
    """Parse training flags (and the ``--config`` file) into a validated config.

    Returns:
        ``(config, print_only)``; ``print_only`` is true for ``--print-config``.

    Raises:
        UsageError: on an unknown flag, a bad value, or an inconsistent combination.
    """
    namespace = vars(build_parser().parse_args(list(argv)))
    config_file = namespace.pop("config", None)
    print_only = bool(namespace.pop("print_config", False))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        values = load_config_file(config_file)
        sources = {name: f"{config_file}: {name}" for name in values}
    for name, value in namespace.items():
        values[name] = value
        sources[name] = option_strings(name)[0]
    return build_config(values, sources=sources), print_only


def _report(error: BaseException) -> int:
    if isinstance(error, PhivError):
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, OSError):
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    raise error


def run_cli(argv: Sequence[str]) -> int:
    """Run ``phiv-train`` with these arguments; returns the exit code."""
    argv = list(argv)
    if argv and argv[0] == "plan":
        from phiv_train.plan import plan_main

        return plan_main(argv[1:])
    if not argv:
        build_parser().print_help()
        return 2
    config, print_only = parse_train_args(argv)
    if print_only:
        import yaml

        print(yaml.safe_dump(config.model_dump(), sort_keys=False), end="")
        return 0
    from phiv_train.launch import in_launched_process, launch_torchrun, wants_launcher

    if wants_launcher(config) and not in_launched_process():
        return launch_torchrun(config, argv)
    from phiv_train.recipe import run

    run(config)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = run_cli(sys.argv[1:] if argv is None else argv)
    except (PhivError, OSError) as error:
        if os.environ.get("PHIV_DEBUG"):
            raise
        code = _report(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
