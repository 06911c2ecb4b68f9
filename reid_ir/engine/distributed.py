"""torch.distributed helpers of the engine (every one is a no-op in a single process).

The engine trains with one process per device (``torchrun``; gloo on CPU,
nccl on GPU):

* the backbone is wrapped in ``DistributedDataParallel`` (gradients averaged
  while the backward runs); the loss's own parameters (the classifier lives in
  the loss) are averaged by :func:`average_gradients` after the backward;
* every rank seeds its RNGs differently (:func:`rank_seed`), so augmentations
  differ between ranks, while the model and the loss are built from the same
  seed on every rank and then broadcast from rank 0 (:func:`broadcast_module`);
* evaluation and checkpoint files are rank 0's job; the other ranks wait at a
  :func:`barrier` and receive rank 0's results (:func:`broadcast_object`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def comm_device() -> torch.device:
    """The device collective tensors must live on (CUDA for nccl, else CPU)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for ``rank`` derived from the run's ``seed`` (rank 0 included)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects only)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=comm_device())
    return holder[0]


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (one all-reduce)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Copy rank ``src``'s parameters and buffers (or only buffers) into every rank's ``module``."""
    if not is_distributed():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    device = comm_device()
    for t in tensors:
        if t.dtype == torch.bool:  # gloo cannot broadcast bool tensors
            tmp = t.to(device=device, dtype=torch.uint8)
            dist.broadcast(tmp, src)
            t.copy_(tmp.bool())
        else:
            tmp = t.data.to(device)
            dist.broadcast(tmp, src)
            if tmp is not t.data:
                t.data.copy_(tmp)


@torch.no_grad()
def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks, in one all-reduce.

    A parameter without a gradient on any rank counts as a zero gradient there;
    it keeps ``grad = None`` only when no rank has a gradient for it, exactly as
    a single process would leave it (so optimizers skip it the same way).
    """
    if not is_distributed() or not params:
        return
    device = comm_device()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=device)
    flat = torch.cat([_flatten_dense_tensors(grads).to(device), has])
    dist.all_reduce(flat)
    world = dist.get_world_size()
    summed, counts = flat[: -len(params)], flat[-len(params) :]
    for p, g, n in zip(
        params, _unflatten_dense_tensors(summed, grads), counts.tolist(), strict=True
    ):
        p.grad = (g / world).to(p.device) if n > 0 else None


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel, or ``model`` itself when not distributed.

    Only parameters that require gradients at wrapping time are synchronised;
    the engine re-wraps when the trainable set changes (fixbase epochs).
    """
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else None
    )
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=True)
