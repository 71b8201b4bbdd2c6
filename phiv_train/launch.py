"""Starting torchrun for the user: ``phiv-train --nproc-per-node 8 ...``.

``phiv-train`` re-runs itself as ``python -m torch.distributed.run [launcher options] -m
phiv_train [the other arguments]``. The child processes see torchrun's environment
(``LOCAL_RANK``, ``WORLD_SIZE``, ...) and therefore never launch again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from phiv_train.config import LAUNCHER_FIELDS, TrainConfig


def in_launched_process() -> bool:
    """True inside torchrun, the deepspeed launcher, or any launcher that sets ``LOCAL_RANK``."""
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def wants_launcher(config: TrainConfig) -> bool:
    """True when the user asked phiv-train to start torchrun (``--nproc-per-node``/``--nnodes``)."""
    return config.nproc_per_node is not None or config.nnodes > 1


def _launcher_spellings() -> set[str]:
    from phiv_train.cli import option_strings

    return {spelling for name in LAUNCHER_FIELDS for spelling in option_strings(name)}


def strip_launcher_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` without the torchrun options (``--nproc-per-node 8``, ``--master-port=1234``)."""
    spellings = _launcher_spellings()
    kept: list[str] = []
    skip_value = False
    for argument in argv:
        if skip_value:
            skip_value = False
            continue
        flag = argument.split("=", 1)[0]
        if flag in spellings:
            skip_value = "=" not in argument
            continue
        kept.append(argument)
    return kept


def torchrun_command(config: TrainConfig, argv: Sequence[str]) -> list[str]:
    """The torchrun command line that runs this training on every process of this node.

    Args:
        config: the parsed configuration (launcher fields are read from it, so they may also
            come from a config file).
        argv: the original ``phiv-train`` arguments, forwarded without the launcher options.

    Returns:
        The command as a list of arguments.
    """
    processes = config.nproc_per_node or 1
    command = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={processes}",
        f"--nnodes={config.nnodes}",
        f"--node-rank={config.node_rank}",
        f"--master-addr={config.master_addr}",
        f"--master-port={config.master_port}",
    ]
    return command + ["-m", "phiv_train", *strip_launcher_arguments(argv)]


def launch_torchrun(config: TrainConfig, argv: Sequence[str]) -> int:
    """Run the training under torchrun and return its exit code."""
    command = torchrun_command(config, argv)
    print("phiv-train: starting " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return subprocess.call(command)
