"""Run set-up shared by the CLI and the table tool: logging, output folder, torch.distributed."""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reid_ir.errors import OutputFolderError

logger = logging.getLogger(__name__)


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that prints through ``tqdm.write``, so a log line never lands on a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def setup_logging(save_dir: str | None = None, level: int = logging.INFO, rank: int = 0) -> None:
    """Console logging (rank 0 only) and ``save_dir/log.txt``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_reid_ir", False):
            root.removeHandler(h)
    if rank == 0:
        console = ConsoleHandler(sys.stderr)
        console.setFormatter(fmt)
        console._reid_ir = True
        root.addHandler(console)
    logging.getLogger("faiss.loader").setLevel(
        logging.WARNING
    )  # its per-CPU-feature probing is noise
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        name = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        fh = logging.FileHandler(Path(save_dir) / name, encoding="utf-8")
        fh.setFormatter(fmt)
        fh._reid_ir = True
        root.addHandler(fh)


#: what a run leaves in its output folder; any of them means "a previous run is here"
RUN_MARKERS = ("checkpoints", "metrics", "train_log.jsonl", "final_metrics.json")


def has_previous_run(save_dir: str | os.PathLike) -> bool:
    """True when ``save_dir`` holds checkpoints, metrics or the training log of a run."""
    d = Path(save_dir)
    for name in RUN_MARKERS:
        p = d / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            return True
    return False


def check_output_folder(save_dir: str | os.PathLike, resume: bool, eval_only: bool) -> None:
    """Refuse to train into a folder with a previous run unless resuming.

    Raises:
        OutputFolderError: naming the folder, what is in it and the ways out.
    """
    if resume or eval_only or not has_previous_run(save_dir):
        return
    found = [n for n in RUN_MARKERS if (Path(save_dir) / n).exists()]
    raise OutputFolderError(
        f"output folder {save_dir} already holds a run ({', '.join(found)}). "
        "Resume it with --resume, or choose another folder with data.save_dir NEW_DIR; "
        "nothing was overwritten."
    )


def init_distributed(timeout_minutes: float = 120) -> tuple[int, int]:
    """Initialise torch.distributed from torchrun's environment (gloo on CPU, nccl on GPU).

    Args:
        timeout_minutes: how long a collective waits for the other ranks
            (rank 0 may evaluate for a while as the others wait).

    Returns:
        (rank, world_size); (0, 1) when not launched by torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes)
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def launch(main: Callable[[Any], int], args: Any) -> int:
    """Run ``main(args)`` and shut torch.distributed down afterwards; returns the exit code."""
    try:
        return main(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
