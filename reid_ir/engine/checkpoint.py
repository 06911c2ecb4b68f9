"""Atomic checkpoint files and RNG state capture.

A reid_ir checkpoint is a dict::

    {"format": "reid_ir.checkpoint", "version": 1, "epoch": <epochs done>,
     "model": ..., "criterion": ..., "optimizer": ..., "scheduler": ...,
     "hooks": {hook.name: hook.state_dict()}, "rng": {...}, "meta": {...}}

It is written to a temporary file in the same folder, flushed to disk and
renamed over the target, so a crash mid-write leaves the previous checkpoint
intact and never a truncated file under the final name. ``last_checkpoint``
(a one-line text file, also replaced atomically) names the newest one.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT = "reid_ir.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("epoch", "model", "optimizer", "hooks", "rng")
POINTER = "last_checkpoint"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or not a reid_ir checkpoint."""


def capture_rng_state() -> dict:
    """RNG states of python, numpy, torch (CPU and every CUDA device)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` via a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(state: dict, folder: str | os.PathLike, epoch: int, keep: int = 2) -> Path:
    """Write ``state`` as ``folder/epoch_XXX.pth`` and point ``last_checkpoint`` at it.

    Args:
        state: the checkpoint dict (without the format tag; added here).
        folder: checkpoint folder.
        epoch: number of finished epochs (used in the file name).
        keep: older ``epoch_*.pth`` files kept besides the newest (0: all).

    Returns:
        Path of the written file.
    """
    folder = Path(folder)
    path = atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, folder / f"epoch_{epoch:03d}.pth")
    atomic_write_text(folder / POINTER, path.name + "\n")
    if keep > 0:
        old = sorted(p for p in folder.glob("epoch_*.pth") if p != path)
        for p in old[: max(0, len(old) - keep)]:
            p.unlink()
    logger.info("saved checkpoint %s", path)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest one of a run folder / checkpoint folder.

    Raises:
        CheckpointError: nothing to resume from at ``path``.
    """
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        pointer = folder / POINTER
        if pointer.is_file():
            target = folder / pointer.read_text(encoding="utf-8").strip()
            if target.is_file():
                return target
            raise CheckpointError(f"{pointer} names {target.name}, which does not exist")
    raise CheckpointError(
        f"no checkpoint to resume from at {path}: expected a .pth file or a folder with "
        f"checkpoints/{POINTER} (written by a reid_ir run)"
    )


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a reid_ir checkpoint fully before anything uses it.

    Raises:
        CheckpointError: unreadable/truncated file or not a reid_ir checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        # weights_only=False: our checkpoints hold RNG states (numpy arrays,
        # python tuples) that the safe unpickler refuses; load only your own files.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a torch file ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a reid_ir checkpoint (no format tag {FORMAT!r}); "
            "use model.load_weights to load weights from a torchreid checkpoint"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    ckpt["path"] = str(path)
    return ckpt


def check_state_dict_compatible(module: torch.nn.Module, state: dict, what: str, path: str) -> None:
    """Raise before loading if ``state`` does not match ``module`` key for key and shape for shape."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path}: {what} does not match this run's {what} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {shapes[:5]}); "
            "was it written with another model or loss config?"
        )
