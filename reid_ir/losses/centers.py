"""Class-center state and the center update rules of IR-Softmax.

The state lives in :class:`CenterBank`, a small ``nn.Module`` of buffers owned
by an IR loss (so it moves with ``.to(device)`` and is part of the loss's
``state_dict``). The center tracker hook
(``reid_ir.engine.hooks.center_tracker``) updates it in place after each
optimizer step with :func:`update_centers`.

Per-step cost is O(B x D) whatever the number of classes C: the batch is grouped
into at most B class slots (sort + cumsum, fixed shapes, no host sync), per-slot
sums and counts come from ``index_add_``, and only the batch's rows of the
(C, D) buffer are read and written.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

#: Center update rules (``loss.ir.rule``).
UPDATE_RULES = ("ema", "center_loss", "exact")


class CenterBank(nn.Module):
    """(C, D) class centers plus an ``initialized`` flag, as buffers.

    Args:
        num_classes: C.
        feat_dim: D.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.register_buffer("centers", torch.zeros(num_classes, feat_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def batch_class_stats(
    features: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class sums and counts of a batch in B fixed slots (no host sync).

    Slot ``j < U`` (U = number of distinct labels) holds the j-th smallest label;
    slots ``j >= U`` are empty (count 0) and name the class of slot 0, so that
    writing "slot 0's value" there is a harmless duplicate.

    Args:
        features: (B, D) embeddings.
        targets: (B,) labels.

    Returns:
        classes (B,) long, sums (B, D), counts (B,) in ``features.dtype``.
    """
    num = targets.numel()
    sorted_t, order = torch.sort(targets)
    starts = torch.ones(num, dtype=torch.bool, device=targets.device)
    starts[1:] = sorted_t[1:] != sorted_t[:-1]
    slot_sorted = torch.cumsum(starts, 0) - 1
    slot = torch.empty_like(slot_sorted).scatter_(0, order, slot_sorted)
    classes = torch.zeros_like(sorted_t).scatter_(0, slot_sorted, sorted_t)
    sums = features.new_zeros(num, features.shape[1]).index_add_(0, slot, features)
    counts = features.new_zeros(num).index_add_(0, slot, features.new_ones(num))
    classes = torch.where(counts > 0, classes, classes[0])
    return classes, sums, counts


def _gathered_class_stats(
    features: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`batch_class_stats` over the union of every rank's batch.

    Labels of all ranks are all-gathered (padded to the largest batch with -1),
    every rank derives the same slots from them, adds its own samples into those
    slots, and the (S, D) sums and (S,) counts are all-reduced. Communication is
    O(world x B x D), independent of C.
    """
    world = dist.get_world_size()
    size = torch.tensor([targets.numel()], device=targets.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_size = int(max(s.item() for s in sizes))  # host sync only under torch.distributed
    padded = torch.full((max_size,), -1, dtype=targets.dtype, device=targets.device)
    padded[: targets.numel()] = targets
    everyone = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(everyone, padded)
    all_targets = torch.cat(everyone)
    # Ranks' own samples sit at [rank * max_size, rank * max_size + B) of the gathered labels.
    num = all_targets.numel()
    sorted_t, order = torch.sort(all_targets)
    starts = torch.ones(num, dtype=torch.bool, device=targets.device)
    starts[1:] = sorted_t[1:] != sorted_t[:-1]
    slot_sorted = torch.cumsum(starts, 0) - 1
    slot = torch.empty_like(slot_sorted).scatter_(0, order, slot_sorted)
    classes = torch.zeros_like(sorted_t).scatter_(0, slot_sorted, sorted_t)
    offset = dist.get_rank() * max_size
    mine = slot[offset : offset + targets.numel()]
    sums = features.new_zeros(num, features.shape[1]).index_add_(0, mine, features)
    counts = features.new_zeros(num).index_add_(0, mine, features.new_ones(targets.numel()))
    dist.all_reduce(sums)
    dist.all_reduce(counts)
    # Padding (-1) forms slot 0 when present; it and empty slots must not be written.
    valid = (counts > 0) & (classes >= 0)
    first_valid = classes[torch.argmax(valid.to(torch.uint8))]
    classes = torch.where(valid, classes, first_valid)
    counts = torch.where(valid, counts, torch.zeros_like(counts))
    return classes, sums, counts


@torch.no_grad()
def update_centers(
    centers: torch.Tensor,
    features: torch.Tensor,
    targets: torch.Tensor,
    rule: str = "ema",
    momentum: float = 0.9,
    alpha: float = 0.5,
) -> None:
    """Update the rows of ``centers`` of the classes in a batch, in place.

    * ``ema``: c <- mu c + (1 - mu) mean_{i: y_i = c} x_i  (mu = ``momentum``);
    * ``center_loss``: c <- c - alpha sum_{i: y_i = c} (c - x_i) / (1 + n_c)
      (Wen et al., 2016, n_c = batch images of c);
    * ``exact``: no per-step change (the hook recomputes all means each epoch).

    Classes absent from the batch are untouched. Under torch.distributed the
    per-class sums and counts of the union of all ranks' batches are
    all-reduced first, so every rank applies the same update.

    Args:
        centers: (C, D) buffer, modified in place.
        features: (B, D) detached embeddings.
        targets: (B,) labels in [0, C).
        rule: one of :data:`UPDATE_RULES`.
        momentum: ema momentum mu in [0, 1].
        alpha: center_loss step alpha.
    """
    if rule == "exact" or targets.numel() == 0:
        return
    if rule not in UPDATE_RULES:
        raise ValueError(f"unknown center update rule {rule!r}; known: {list(UPDATE_RULES)}")
    features = features.to(centers.dtype)
    if _distributed():
        classes, sums, counts = _gathered_class_stats(features, targets)
    else:
        classes, sums, counts = batch_class_stats(features, targets)
    old = centers.index_select(0, classes)
    if rule == "ema":
        mean = sums / counts.clamp_min(1).unsqueeze(1)
        new = torch.lerp(mean, old, momentum) if momentum > 0 else mean
    else:  # center_loss
        new = old - alpha * (counts.unsqueeze(1) * old - sums) / (1 + counts.unsqueeze(1))
    # Empty slots repeat a real class; give them that class's new value so the
    # duplicate writes agree (index_put_ without accumulate is deterministic then).
    used = (counts > 0).unsqueeze(1)
    first = torch.argmax(used.squeeze(1).to(torch.uint8))
    new = torch.where(used, new, new[first])
    centers.index_put_((classes,), new)


@torch.no_grad()
def class_sums(
    features: torch.Tensor, targets: torch.Tensor, num_classes: int, all_reduce: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) per-class sums and (C,) counts of a whole feature set.

    Args:
        features: (N, D).
        targets: (N,) labels in [0, C).
        num_classes: C.
        all_reduce: sum over ranks under torch.distributed.

    Returns:
        sums (C, D), counts (C,) in ``features.dtype``.
    """
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, targets, features)
    counts = features.new_zeros(num_classes).index_add_(0, targets, features.new_ones(len(targets)))
    if all_reduce and _distributed():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts


@torch.no_grad()
def class_means(
    features: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-class means (all-reduced across ranks under torch.distributed).

    Args:
        features: (N, D).
        targets: (N,) labels in [0, C).
        num_classes: C.

    Returns:
        means (C, D) (zero rows for classes without samples), counts (C,).
    """
    sums, counts = class_sums(features, targets, num_classes)
    return sums / counts.clamp_min(1).unsqueeze(1), counts
