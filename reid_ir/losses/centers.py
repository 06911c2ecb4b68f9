"""Class-center state and the center update rules of IR-Softmax.

The state lives in :class:`CenterBank`, a small ``nn.Module`` of buffers owned
by an IR loss (so it moves with ``.to(device)`` and is part of the loss's
``state_dict``). The center tracker hook
(``reid_ir.engine.hooks.center_tracker``) updates it in place after each
optimizer step with :meth:`CenterBank.update` (:func:`update_centers`).

Per-step cost is O(B x D) whatever the number of classes C: samples are grouped
by class with ``torch.unique`` (O(B log B)), per-class sums come from
``index_add_``, and only the batch's classes' rows of the (C, D) buffer are
read and written, once each (``index_select`` / ``index_copy_``). On a GPU
``torch.unique`` is one host sync per step (the engine makes one anyway when it
logs the loss); it replaced a sync-free (B, B) label-matrix grouping that
wrote each class's row once per sample: on the CPU that took twice the time
for a 16 x 4 P x K batch (about the same for 64 distinct labels).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

#: Center update rules (``loss.ir.rule``).
UPDATE_RULES = ("ema", "center_loss", "exact")


class CenterBank(nn.Module):
    """(C, D) class centers plus an ``initialized`` flag, as buffers.

    Also keeps the unit-norm centers the cosine heads multiply with
    (:meth:`unit_centers`), refreshed row by row by :meth:`update` so a
    forward pass never renormalises all C rows; any other change of
    ``centers`` (``copy_``, ``load_state_dict``, ``.to()``) invalidates it and
    the next call recomputes it.

    Args:
        num_classes: C.
        feat_dim: D.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.register_buffer("centers", torch.zeros(num_classes, feat_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._unit: torch.Tensor | None = None
        self._unit_key: tuple | None = None

    def _key(self) -> tuple:
        c = self._buffers["centers"]  # a dict read: nn.Module attribute lookup is slower
        return (c.data_ptr(), c._version, c.device, c.dtype)

    def _fresh(self) -> bool:
        return self._unit is not None and self._unit_key == self._key()

    @torch.no_grad()
    def unit_centers(self) -> torch.Tensor:
        """(C, D) L2-normalised centers (zero rows stay zero); cached."""
        if not self._fresh():
            self._unit = unit_rows(self._buffers["centers"])
            self._unit_key = self._key()
        return self._unit

    @torch.no_grad()
    def update(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
    ) -> None:
        """:func:`update_centers` on ``centers``, keeping :meth:`unit_centers` in step (O(B x D))."""
        fresh = self._fresh()
        written = update_centers(self._buffers["centers"], features, targets, rule, momentum, alpha)
        if written is not None and fresh:
            rows, values = written
            self._unit.index_copy_(0, rows, unit_rows(values))
            self._unit_key = self._key()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}"


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norms (zero rows stay zero).

    Each row's result depends on that row only, so normalising a few rows or
    the whole table gives bitwise the same rows.
    """
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def batch_class_sums(
    features: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classes of a batch with the sum and the count of their samples.

    One ``torch.unique`` and one ``index_add_`` (samples added in batch order),
    so each class appears once and :func:`update_centers` writes each of its
    rows once.

    Args:
        features: (B, D) embeddings.
        targets: (B,) labels.

    Returns:
        classes (U,) sorted, sums (U, D) and counts (U,) in ``features.dtype``.
    """
    classes, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
    sums = features.new_zeros(len(classes), features.shape[1]).index_add_(0, inverse, features)
    return classes, sums, counts.to(features.dtype)


def _gathered_class_sums(
    features: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`batch_class_sums` over the union of every rank's batch.

    Labels of all ranks are all-gathered; every rank derives the same classes
    from them, adds its own samples into those rows, and the sums are
    all-reduced (the counts follow from the gathered labels). Communication is
    O(world x B x D), independent of C.

    Returns:
        classes (U,), sums (U, D), counts (U,) for the classes of all ranks' batches.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([targets.numel()], device=targets.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_host = [int(s.item()) for s in sizes]
    padded = torch.full((max(sizes_host),), -1, dtype=targets.dtype, device=targets.device)
    padded[: targets.numel()] = targets
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    all_targets = torch.cat([c[:n] for c, n in zip(chunks, sizes_host, strict=True)])
    classes, inverse, counts = torch.unique(all_targets, return_inverse=True, return_counts=True)
    offset = sum(sizes_host[:rank])
    sums = features.new_zeros(len(classes), features.shape[1])
    sums.index_add_(0, inverse[offset : offset + targets.numel()], features)
    dist.all_reduce(sums)
    return classes, sums, counts.to(features.dtype)


@torch.no_grad()
def update_centers(
    centers: torch.Tensor,
    features: torch.Tensor,
    targets: torch.Tensor,
    rule: str = "ema",
    momentum: float = 0.9,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Update the rows of ``centers`` of the classes in a batch, in place.

    * ``ema``: c <- mu c + (1 - mu) mean_{i: y_i = c} x_i  (mu = ``momentum``);
    * ``center_loss``: c <- c - alpha sum_{i: y_i = c} (c - x_i) / (1 + n_c)
      (Wen et al., 2016, n_c = batch images of c);
    * ``exact``: no per-step change (the hook recomputes all means each epoch).

    Classes absent from the batch are untouched; each class of the batch has
    its row written once, so the result is deterministic on any device. Under
    torch.distributed the per-class sums of the union of all ranks' batches
    are all-reduced first, so every rank applies the same update.

    Args:
        centers: (C, D) buffer, modified in place.
        features: (B, D) detached embeddings.
        targets: (B,) labels in [0, C).
        rule: one of :data:`UPDATE_RULES`.
        momentum: ema momentum mu in [0, 1].
        alpha: center_loss step alpha.

    Returns:
        (rows (U,), values (U, D)) written (the U classes of the batch, or of
        all ranks' batches), or None when nothing changed.
    """
    if rule == "exact" or targets.numel() == 0:
        return None
    if rule not in UPDATE_RULES:
        raise ValueError(f"unknown center update rule {rule!r}; known: {list(UPDATE_RULES)}")
    if features.dtype != centers.dtype:
        features = features.to(centers.dtype)
    gather = _gathered_class_sums if _distributed() else batch_class_sums
    classes, sums, counts = gather(features, targets)
    counts = counts.unsqueeze(1)
    old = centers.index_select(0, classes)
    if rule == "ema":
        mean = sums.div_(counts)
        new = torch.lerp(mean, old, momentum) if momentum > 0 else mean
    else:  # center_loss
        new = old - alpha * (counts * old - sums) / (1 + counts)
    centers.index_copy_(0, classes, new)
    return classes, new


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
