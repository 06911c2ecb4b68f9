"""Atomic checkpoint files, RNG state capture, and saving / restoring an engine.

A reid_ir checkpoint is a dict::

    {"format": "reid_ir.checkpoint", "version": 1,
     "epoch": <epochs done>, "batch": <batches done in the next epoch (0: none)>,
     "iter": <optimizer steps>, "model": ..., "criterion": ..., "optimizer": ...,
     "scheduler": ..., "hooks": {hook.name: hook.state_dict()},
     "rng": {...}, "rng_ranks": [{...} per rank] (distributed runs), "meta": {...}}

It is written to a temporary file in the same folder, flushed to disk and
renamed over the target, so a crash mid-write leaves the previous checkpoint
intact and never a truncated file under the final name. ``last_checkpoint``
(a one-line text file, also replaced atomically, written after the rename) names
the newest complete checkpoint: it is the commit point of a save. A crash
between the rename and the pointer update leaves the new file unused and the
previous checkpoint in charge.

File names: ``epoch_003.pth`` after 3 epochs; ``epoch_003_iter_000040.pth``
after 40 iterations of epoch 3 (``train.checkpoint_iters``).
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid_ir.errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT = "reid_ir.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("epoch", "model", "optimizer", "hooks", "rng")
POINTER = "last_checkpoint"
_NAME_RE = re.compile(r"^epoch_(\d+)(?:_iter_(\d+))?\.pth$")
#: ``meta`` keys that must match to resume; the others only warn.
MUST_MATCH = ("model", "loss", "num_classes")


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


def checkpoint_name(epoch: int, iteration: int = 0) -> str:
    """``epoch_003.pth`` (3 epochs done) or ``epoch_003_iter_000040.pth`` (40 iterations into epoch 3)."""
    return f"epoch_{epoch:03d}_iter_{iteration:06d}.pth" if iteration else f"epoch_{epoch:03d}.pth"


def _order_key(path: Path) -> tuple[int, float]:
    """Training progress of a checkpoint file name: (epoch, iteration or inf for an epoch end)."""
    m = _NAME_RE.match(path.name)
    if m is None:
        return (-1, -1.0)
    return (int(m.group(1)), float(m.group(2)) if m.group(2) else float("inf"))


def _prune(folder: Path, newest: Path, keep: int) -> None:
    """Delete superseded iteration checkpoints, old epoch checkpoints and stale temp files."""
    for p in folder.glob(".epoch_*.pth.tmp.*"):
        if not p.name.endswith(f".tmp.{os.getpid()}"):
            logger.info("removing %s, left by an interrupted checkpoint write", p)
            p.unlink(missing_ok=True)
    files = sorted(
        (p for p in folder.glob("epoch_*.pth") if p != newest and _NAME_RE.match(p.name)),
        key=_order_key,
    )
    ends = [p for p in files if _order_key(p)[1] == float("inf")]
    for p in files:
        if p not in ends:
            p.unlink(missing_ok=True)  # an iteration checkpoint is superseded by any later save
    if keep > 0:
        for p in ends[: max(0, len(ends) - keep)]:
            p.unlink(missing_ok=True)


def save_checkpoint(
    state: dict, folder: str | os.PathLike, epoch: int, keep: int = 2, iteration: int = 0
) -> Path:
    """Write ``state`` as ``folder/<checkpoint_name>`` and point ``last_checkpoint`` at it.

    Args:
        state: the checkpoint dict (without the format tag; added here).
        folder: checkpoint folder.
        epoch: finished epochs (end of epoch) or the 1-based epoch in progress
            (with ``iteration``).
        keep: older end-of-epoch checkpoints kept besides the newest (0: all);
            only the newest iteration checkpoint is ever kept.
        iteration: iterations done in epoch ``epoch`` (0: end of epoch).

    Returns:
        Path of the written file.
    """
    folder = Path(folder)
    path = atomic_torch_save(
        {"format": FORMAT, "version": VERSION, **state}, folder / checkpoint_name(epoch, iteration)
    )
    atomic_write_text(folder / POINTER, path.name + "\n")
    _fsync_dir(folder)
    _prune(folder, path, keep)
    logger.info("saved checkpoint %s", path)
    return path


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint ``path`` names (a file, a run folder or a checkpoint folder), or None if it holds none.

    In a folder, ``last_checkpoint`` decides; without it (a run killed before
    its first pointer update) the newest ``epoch_*.pth`` is used, which is
    complete as it was renamed into place only after being fully written.

    Raises:
        CheckpointError: ``last_checkpoint`` names a file that does not exist.
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
    for folder in (path / "checkpoints", path):
        files = sorted(
            (p for p in folder.glob("epoch_*.pth") if _NAME_RE.match(p.name)), key=_order_key
        )
        if files:  # killed between the first rename and its pointer: the file is complete
            logger.warning(
                "%s has no %s; using the newest checkpoint file %s", folder, POINTER, files[-1].name
            )
            return files[-1]
    return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest one of a run folder / checkpoint folder.

    Raises:
        CheckpointError: nothing to resume from at ``path``.
    """
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(
            f"no checkpoint to resume from at {path}: expected a .pth file or a folder with "
            f"checkpoints/{POINTER} (written by a reid_ir run)"
        )
    return found


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
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated or not a torch file ({e})"
        ) from e
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


def _runs(saved: dict, own: dict) -> str:
    """Which model and loss wrote a checkpoint and which this run has, from the two ``meta`` dicts."""

    def one(meta: dict) -> str:
        return " / ".join(f"{k} {meta[k]!r}" for k in ("model", "loss") if k in meta) or "unknown"

    return f"{one(saved)} there, {one(own)} here"


def check_state_dict_compatible(
    module: torch.nn.Module, state: dict, what: str, path: str, runs: str = ""
) -> None:
    """Raise before loading if ``state`` does not match ``module`` key for key and shape for shape.

    Args:
        runs: which model and loss wrote the checkpoint and which this run has, for the message.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path}: {what} does not match this run's {what} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {shapes[:5]}); "
            + (
                f"{runs}: the same names with other settings?"
                if runs
                else "was it written with another model or loss config?"
            )
        )


def _check_optimizer_compatible(optimizer: torch.optim.Optimizer, state: dict, path: str) -> None:
    own = [len(g["params"]) for g in optimizer.param_groups]
    saved = [len(g["params"]) for g in state.get("param_groups", [])]
    if own != saved:
        raise CheckpointError(
            f"checkpoint {path}: optimizer parameter groups {saved} do not match this run's {own}; "
            "was it written with other train.optim / train.staged_lr settings?"
        )


def _check_meta(own: dict, saved: dict, batch: int, path: str) -> None:
    bad = {
        k: (saved[k], own[k]) for k in MUST_MATCH if k in saved and k in own and saved[k] != own[k]
    }
    if bad:
        same = [f"{k} {own[k]!r}" for k in ("model", "loss") if k not in bad and k in own]
        raise CheckpointError(
            f"checkpoint {path} was written by another run: "
            + "; ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in bad.items())
            + (f" ({' and '.join(same)} in both)" if same else "")
            + "; resume it with its own config, or start a new run (data.save_dir NEW_DIR)"
        )
    differ = {
        k: (saved[k], own[k])
        for k in own
        if k not in MUST_MATCH and k in saved and saved[k] != own[k]
    }
    if differ and batch:
        raise CheckpointError(
            f"checkpoint {path} stops in the middle of an epoch, which resumes only with the same "
            f"settings; these differ: {differ}. Resume from an end-of-epoch checkpoint instead."
        )
    if differ:
        logger.warning(
            "resuming %s with other settings (saved, now): %s; the run will not be bit-exact",
            path,
            differ,
        )


def engine_state(engine: Any, batch: int = 0, rng_ranks: list | None = None) -> dict:
    """Everything needed to continue training exactly where ``engine`` is now.

    Args:
        engine: a :class:`~reid_ir.engine.engine.ReidEngine`.
        batch: batches done in the current epoch (0: at the end of an epoch).
        rng_ranks: every rank's RNG state (distributed runs), else None.
    """
    return {
        "epoch": engine.epoch + (0 if batch else 1),
        "batch": int(batch),
        "iter": engine.iter,
        "model": engine.model.state_dict(),
        "criterion": engine.criterion.state_dict(),
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict() if engine.scheduler is not None else None,
        "hooks": {h.name: h.state_dict() for h in engine.hooks},
        "rng": capture_rng_state() if rng_ranks is None else rng_ranks[0],
        "rng_ranks": rng_ranks,
        "train_time": getattr(engine, "train_time", 0.0),
        "meta": dict(getattr(engine, "run_meta", {})),
    }


def _snapshot(engine: Any) -> dict:
    return copy.deepcopy(
        {
            "model": engine.model.state_dict(),
            "criterion": engine.criterion.state_dict(),
            "optimizer": engine.optimizer.state_dict(),
            "scheduler": engine.scheduler.state_dict() if engine.scheduler is not None else None,
            "hooks": {h.name: h.state_dict() for h in engine.hooks},
            "rng": capture_rng_state(),
        }
    )


def _load_into(engine: Any, state: dict, rng: dict) -> None:
    engine.model.load_state_dict(state["model"])
    engine.criterion.load_state_dict(state.get("criterion", {}))
    engine.optimizer.load_state_dict(state["optimizer"])
    if engine.scheduler is not None and state.get("scheduler") is not None:
        engine.scheduler.load_state_dict(state["scheduler"])
    for hook in engine.hooks:
        if hook.name in state["hooks"]:
            hook.load_state_dict(state["hooks"][hook.name])
        elif hook.state_dict():
            logger.warning(
                "checkpoint %s has no state for hook %s; it keeps its fresh state",
                state.get("path"),
                hook.name,
            )
    restore_rng_state(rng)


def restore_engine(
    engine: Any, path: str | os.PathLike, rank: int = 0, world_size: int = 1
) -> dict:
    """Load a checkpoint into ``engine``: all of it, or (on any error) nothing.

    Everything is read and checked first (format, model and loss keys and
    shapes, optimizer groups, run settings); if loading still fails half-way,
    the engine's previous state is put back before the error is raised.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: naming the file and what does not fit.
    """
    state = load_checkpoint(path)
    where = state["path"]
    meta, saved_meta = dict(getattr(engine, "run_meta", {})), state.get("meta") or {}
    # the run settings first: a checkpoint of another model or loss is named as such
    _check_meta(meta, saved_meta, int(state.get("batch", 0)), where)
    runs = _runs(saved_meta, meta) if saved_meta else ""
    check_state_dict_compatible(engine.model, state["model"], "model", where, runs)
    check_state_dict_compatible(engine.criterion, state.get("criterion", {}), "loss", where, runs)
    _check_optimizer_compatible(engine.optimizer, state["optimizer"], where)
    rng = state["rng"]
    ranks = state.get("rng_ranks")
    if ranks and len(ranks) == world_size:
        rng = ranks[rank]
    elif world_size > 1:
        logger.warning(
            "checkpoint %s holds no RNG state per rank for %d ranks; using rank 0's",
            where,
            world_size,
        )
    backup = _snapshot(engine)
    try:
        _load_into(engine, state, rng)
    except Exception as e:
        _load_into(engine, {**backup, "path": where}, backup["rng"])
        raise CheckpointError(
            f"checkpoint {where} could not be loaded ({type(e).__name__}: {e}); nothing was changed"
        ) from e
    return state
