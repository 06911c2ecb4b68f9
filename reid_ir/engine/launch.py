"""Run set-up shared by the CLI and the table tool: logging, output folder, resume."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class OutputFolderError(FileExistsError):
    """The output folder holds a previous run and we were not asked to resume it."""


def setup_logging(save_dir: str | None = None, level: int = logging.INFO, rank: int = 0) -> None:
    """Console logging (rank 0 only) and ``save_dir/log.txt``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_reid_ir", False):
            root.removeHandler(h)
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console._reid_ir = True
        root.addHandler(console)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its per-CPU-feature probing is noise
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        name = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        fh = logging.FileHandler(Path(save_dir) / name, encoding="utf-8")
        fh.setFormatter(fmt)
        fh._reid_ir = True
        root.addHandler(fh)


def has_previous_run(save_dir: str | os.PathLike) -> bool:
    """True when ``save_dir`` already holds checkpoints or metrics of a run."""
    d = Path(save_dir)
    return (d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir()) or (d / "metrics").is_dir()


def check_output_folder(save_dir: str | os.PathLike, resume: bool, eval_only: bool) -> None:
    """Refuse to train into a folder with a previous run unless resuming.

    Raises:
        OutputFolderError: naming the folder and the ways out.
    """
    if resume or eval_only or not has_previous_run(save_dir):
        return
    raise OutputFolderError(
        f"output folder {save_dir} already holds a run (checkpoints/ or metrics/). "
        "Resume it with --resume, or choose another folder with data.save_dir NEW_DIR; "
        "nothing was overwritten."
    )


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed from torchrun's environment (gloo on CPU, nccl on GPU).

    Returns:
        (rank, world_size); (0, 1) when not launched by torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.distributed.get_rank(), torch.distributed.get_world_size()
