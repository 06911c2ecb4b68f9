"""Class-center state and the center update rules of IR-Softmax.

The state lives in :class:`CenterBank`, a small ``nn.Module`` of buffers owned
by an IR loss (so it moves with ``.to(device)`` and is part of the loss's
``state_dict``). The loss keeps it current itself: after each training forward
it calls :meth:`CenterBank.update` with the batch's detached features, so the
next step uses centers that include what this step saw, in the engine and in a
plain PyTorch loop alike. The engine's center hook only schedules what needs
epochs: :meth:`CenterBank.start_epoch` and the ``exact`` rule's recomputation.

Rules (``loss.ir.rule``), for the classes of a batch:

* every rule: a class seen for the first time gets its batch mean as center
  (no blend with the zero start, no pass over the data before training);
* ``ema`` (default, best on validation identities, docs/losses.md):
  c <- mu c + (1 - mu) batch mean (mu per appearance);
* ``count_ema``: ``ema`` whose momentum is per *epoch*: a class that appeared
  a times in its last epoch uses mu_e ** (1 / a) per appearance, so every class
  keeps mu_e of its epoch-old center, however rarely it is sampled (``ema``
  keeps mu ** a: 0.9 for a class seen once an epoch, 0.12 for one seen 20 times).
  A class not yet counted over a whole epoch uses a = 1;
* ``epoch_mean``: the center is the mean of every feature of the
  class seen since the epoch started (:meth:`CenterBank.start_epoch`); a class
  not seen yet this epoch keeps its last epoch's mean. A class seen once an
  epoch gets a fresh center every epoch; no extra pass over the data;
* ``center_loss``: c <- c - alpha sum_i (c - x_i) / (1 + n) (Wen et al., 2016);
* ``exact``: no change per step; the hook recomputes every class mean over the
  training set after each epoch (one extra feature pass per epoch).

Per-step cost is O(B x D) whatever the number of classes C: samples are grouped
by class with ``torch.unique`` and only the batch's classes' rows are read and
written. Under torch.distributed the per-class sums of all ranks' batches are
all-reduced first, so every rank holds the same centers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from reid_ir.errors import ConfigError

#: Center update rules (``loss.ir.rule``).
UPDATE_RULES = ("epoch_mean", "ema", "count_ema", "center_loss", "exact")


class CenterBank(nn.Module):
    """(C, D) class centers and the bookkeeping of their update rule, as buffers.

    Args:
        num_classes: C.
        feat_dim: D.
        rule: one of :data:`UPDATE_RULES`.
        momentum: ``ema``'s mu in [0, 1] (per appearance).
        alpha: ``center_loss``'s step.
        epoch_momentum: ``count_ema``'s mu_e in [0, 1] (per epoch).

    Buffers:
        centers (C, D); seen (C,) bool, the class has a center; epoch_sums (C, D)
        and epoch_counts (C,): the features of each class since :meth:`start_epoch`
        (``epoch_mean``); appearances (C,): the batches each class was in since
        :meth:`start_epoch`, and last_appearances (C,): that count over the class's
        last epoch in which it appeared (1 before any; ``count_ema``).
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
        epoch_momentum: float = 0.5,
    ) -> None:
        super().__init__()
        if rule not in UPDATE_RULES:
            raise ConfigError(
                f"loss.ir.rule: unknown center update rule {rule!r}; known: {list(UPDATE_RULES)}"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"loss.ir.momentum must be in [0, 1], got {momentum}")
        if alpha <= 0:
            raise ConfigError(f"loss.ir.alpha must be > 0, got {alpha}")
        if not 0.0 <= epoch_momentum <= 1.0:
            raise ConfigError(f"loss.ir.epoch_momentum must be in [0, 1], got {epoch_momentum}")
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.rule, self.momentum, self.alpha = rule, float(momentum), float(alpha)
        self.epoch_momentum = float(epoch_momentum)
        self.register_buffer("centers", torch.zeros(num_classes, feat_dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("epoch_sums", torch.zeros(num_classes, feat_dim))
        self.register_buffer("epoch_counts", torch.zeros(num_classes))
        self.register_buffer("appearances", torch.zeros(num_classes))
        self.register_buffer("last_appearances", torch.ones(num_classes))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before count_ema existed lack its counts: keep ours (no epoch yet)
        for name in ("appearances", "last_appearances"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def unit_centers(self) -> torch.Tensor:
        """(C, D) L2-normalised centers (rows of unseen classes stay zero)."""
        return unit_rows(self.centers)

    @torch.no_grad()
    def start_epoch(self) -> None:
        """Start a new averaging window (``epoch_mean``, ``count_ema``'s appearance count).

        Centers stay until their class reappears; a class absent from the ending
        epoch keeps the appearance count of its last epoch.
        """
        self.epoch_sums.zero_()
        self.epoch_counts.zero_()
        counted = self.appearances > 0
        self.last_appearances.copy_(torch.where(counted, self.appearances, self.last_appearances))
        self.appearances.zero_()

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Apply the rule to the classes of a batch, in place (O(B x D)).

        Args:
            features: (B, D) embeddings (detached here).
            targets: (B,) labels in [0, C).
        """
        if targets.numel() == 0:
            return
        features = features.detach().to(self.centers.dtype)
        gather = _gathered_class_sums if _distributed() else batch_class_sums
        classes, sums, counts = gather(features, targets)
        counts = counts.unsqueeze(1)
        mean = sums / counts
        old = self.centers.index_select(0, classes)
        if self.rule == "epoch_mean":
            self.epoch_sums.index_add_(0, classes, sums)
            self.epoch_counts.index_add_(0, classes, counts.squeeze(1))
            new = self.epoch_sums.index_select(0, classes) / self.epoch_counts.index_select(
                0, classes
            ).unsqueeze(1)
        elif self.rule == "ema":
            new = torch.lerp(mean, old, self.momentum)
        elif self.rule == "count_ema":
            per_appearance = self.epoch_momentum ** self.last_appearances.index_select(0, classes).reciprocal()
            new = torch.lerp(mean, old, per_appearance.unsqueeze(1))
        elif self.rule == "center_loss":
            new = old - self.alpha * (counts * old - sums) / (1 + counts)
        else:  # exact: recomputed per epoch (CenterBank.recompute), first appearance only here
            new = old
        first = ~self.seen.index_select(0, classes)
        new = torch.where(first.unsqueeze(1), mean, new)
        self.centers.index_copy_(0, classes, new)
        self.seen.index_fill_(0, classes, True)
        self.appearances.index_add_(0, classes, torch.ones_like(counts.squeeze(1)))

    @torch.no_grad()
    def recompute(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Set the center of every class present in ``features`` to its exact mean.

        Args:
            features: (N, D) embeddings of the training set.
            targets: (N,) labels.
        """
        means, counts = class_means(features.to(self.centers), targets.to(self.centers.device), self.num_classes)
        present = counts > 0
        self.centers.copy_(torch.where(present.unsqueeze(1), means, self.centers))
        self.seen |= present

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, rule={self.rule}"


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
    so each class appears once and :meth:`CenterBank.update` writes each of its
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
