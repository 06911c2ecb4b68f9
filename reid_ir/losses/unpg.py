"""UNPG: unified negative pair generation over any cosine-margin head.

Jung et al., "Unified Negative Pair Generation toward Well-discriminative
Feature Space for Face Recognition", BMVC 2022 (arXiv 2203.11593).

A classification loss only sees the class-weight negatives (easy once the
weights converge to the class centers, which IR heads make them by
construction); a metric loss only sees the mini-batch. UNPG adds filtered
in-batch negative pair similarities to the classification loss's negatives:

* CLPG: ``mcos = head.margin_cosines(x, y)`` (B, C), the head's cosines with
  the margin on the target class only, before scaling;
* MLPG: ``z = x / |x|``; negatives ``n = {z_i . z_j : i < j, y_i != y_j}`` (L,),
  each unordered pair once, gradients into both sides;
* filter (box and whisker): with ``s = sort(n)``, ``Q1 = s[int(0.25 L)]``,
  ``Q3 = s[int(0.75 L)]``, keep ``k = {n_l in [Q1 - w IQR, Q3 + w IQR]}`` (K,);
  fewer than 4 negatives are all kept;
* loss: ``cross_entropy(scale * [mcos | k repeated on every row], y)`` with the
  head's scale and the head's label smoothing over the C classes
  (``loss.label_smooth``, as every head here; the paper uses none: set it to 0);
* diagnostics: the term ``unpg_pair_mass``, the mean softmax mass of the pair
  column, says how much the kept pairs weigh against the C - 1 class negatives.

A batch without any negative pair falls back to the head's own loss.

The loss works on the (N, N) Gram matrix with a mask of the negative pairs
(:func:`negative_pair_mask`): the quartiles come from the detached list of
negatives and the kept pairs are a mask (:func:`kept_pair_mask`); the list
form (:func:`in_batch_negatives`, :func:`box_whisker_filter`) gives the same
values and is what the tests compare with.

The K extra columns are the same on every row, so they enter each row's
softmax only through ``extra = logsumexp(scale * k)``; the loss folds that one
value as one extra column of each row instead of appending K copies (identical
value and gradients, O(B C + N^2) memory instead of O(B (C + K)), which matters
once ``gather`` makes L ~ (world B)^2 / 2).

Every cosine head of the registry that exposes ``margin_cross_entropy``,
``logit_scale`` and ``after_forward`` gets a ``unpg_<name>`` twin
(:func:`register_unpg_variants`); ``loss.unpg.enabled: true`` maps
``loss.name: N`` to ``unpg_N`` (``registry.configured_loss_name``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from reid_ir.errors import ConfigError
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES, build_loss
from reid_ir.losses.registry import UNPG_PREFIX as PREFIX
from reid_ir.registry import Registry

logger = logging.getLogger(__name__)

#: What a head must provide to be wrapped.
HEAD_METHODS = ("margin_cross_entropy", "logit_scale", "after_forward")


# --------------------------------------------------------------------------- MLPG
def negative_pair_mask(labels: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: pairs ``i < j`` (strict upper triangle) with ``labels_i != labels_j``.

    Args:
        labels: (N,) identities.
    """
    return (labels[:, None] != labels[None, :]).triu_(diagonal=1)


def in_batch_negatives(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Similarities of every unordered pair with different labels, as a list.

    The pairs ``i < j`` are the strict upper triangle of the (N, N) Gram
    matrix (the positions ``torch.triu_indices(N, N, 1)`` lists). The loss
    itself works on the masked (N, N) matrix (:func:`kept_pair_mask`) and
    never lists them; this is the list form of the same values.

    Args:
        z: (N, D) embeddings (normalised by the caller for cosines).
        labels: (N,) identities.

    Returns:
        (L,) ``z_i . z_j`` for ``i < j`` and ``labels_i != labels_j``, in
        row-major order of (i, j); differentiable w.r.t. both sides.
    """
    return (z @ z.t())[negative_pair_mask(labels)]


def whisker_bounds(values: torch.Tensor, whisker: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-and-whisker bounds ``(Q1 - w IQR, Q3 + w IQR)`` of L >= 1 values.

    With ``s = sort(values)``: ``Q1 = s[int(0.25 L)]``, ``Q3 = s[int(0.75 L)]``
    (positions in the sorted list, no interpolation), read with two
    ``kthvalue`` selections (O(L)).

    Args:
        values: (L,) similarities.
        whisker: w.

    Returns:
        Two 0-d tensors (no gradient: the bounds only select values).
    """
    num = len(values)
    first, third = int(0.25 * num), int(0.75 * num)
    values = values.detach()
    q1 = torch.kthvalue(values, first + 1).values
    q3 = torch.kthvalue(values, third + 1).values
    iqr = q3 - q1
    return q1 - whisker * iqr, q3 + whisker * iqr


def box_whisker_filter(negatives: torch.Tensor, whisker: float = 1.5) -> torch.Tensor:
    """Keep the negatives inside the box plot's whiskers (:func:`whisker_bounds`).

    Fewer than 4 values are all kept.

    Args:
        negatives: (L,) similarities.
        whisker: w.

    Returns:
        (K,) the kept values, in their input order (K >= 1 when L >= 1; the
        order is irrelevant to the loss, which only sums their exponentials).
    """
    if negatives.numel() < 4 or math.isinf(whisker):
        return negatives
    low, high = whisker_bounds(negatives, whisker)
    return negatives[(negatives >= low) & (negatives <= high)]


def kept_pair_mask(
    gram: torch.Tensor, negative: torch.Tensor, whisker: float = 1.5
) -> tuple[torch.Tensor, int]:
    """:func:`box_whisker_filter` on the (N, N) Gram matrix, as a mask.

    The same kept values as ``box_whisker_filter(gram[negative])``: the
    quartiles are read from the (detached) list of negatives, the kept pairs
    are returned as a mask, so the loss's gradient flows through the matrix
    (one masked log-sum-exp) rather than through a gathered list.

    Args:
        gram: (N, N) pair similarities.
        negative: (N, N) bool, the negative pairs (:func:`negative_pair_mask`).
        whisker: w.

    Returns:
        (N, N) bool, the kept pairs, and L, the number of negative pairs (on
        a GPU, listing them is the step's one host sync).
    """
    sims = gram.detach()
    listed = sims[negative]  # (L,)
    if len(listed) < 4 or math.isinf(whisker):
        return negative, len(listed)
    low, high = whisker_bounds(listed, whisker)
    return negative & (sims >= low) & (sims <= high), len(listed)


# ----------------------------------------------------------------- distributed
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def merge_gathered(
    chunks: list[torch.Tensor],
    label_chunks: list[torch.Tensor],
    sizes: list[int],
    rank: int,
    local: torch.Tensor,
    local_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate all-gathered (padded) chunks, using the local grad-carrying part.

    ``all_gather`` returns tensors without autograd history; the chunk of this
    rank is replaced by ``local`` so that gradients reach the local embeddings.

    Args:
        chunks: world x (M, D) gathered embeddings, padded to M rows.
        label_chunks: world x (M,) gathered labels, padded likewise.
        sizes: true batch size of every rank.
        rank: this rank.
        local: (sizes[rank], D) this rank's embeddings (with grad).
        local_labels: (sizes[rank],) this rank's labels.

    Returns:
        (sum(sizes), D) embeddings and (sum(sizes),) labels in rank order.
    """
    parts = [local if r == rank else c[: sizes[r]] for r, c in enumerate(chunks)]
    labels = [local_labels if r == rank else c[: sizes[r]] for r, c in enumerate(label_chunks)]
    return torch.cat(parts), torch.cat(labels)


def gather_with_grad(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather embeddings and labels across ranks (identity when not distributed).

    Batches may differ in size across ranks (they are padded for the
    collective). Gradients flow into this rank's part only.

    Args:
        z: (B, D) local embeddings.
        labels: (B,) local labels.

    Returns:
        (N, D) embeddings and (N,) labels of all ranks, N = sum of batch sizes.
    """
    if not _distributed():
        return z, labels
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([z.shape[0]], device=z.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    pad = max(sizes) - z.shape[0]
    z_pad = torch.cat([z.detach(), z.new_zeros(pad, z.shape[1])]).contiguous()
    y_pad = torch.cat([labels, labels.new_full((pad,), -1)]).contiguous()
    chunks = [torch.empty_like(z_pad) for _ in range(world)]
    label_chunks = [torch.empty_like(y_pad) for _ in range(world)]
    dist.all_gather(chunks, z_pad)
    dist.all_gather(label_chunks, y_pad)
    return merge_gathered(chunks, label_chunks, sizes, rank, z, labels)


# ------------------------------------------------------------------------ loss
class UNPGLoss(ReidLoss):
    """UNPG over a cosine-margin head (see the module docstring for the formula).

    Args:
        head: a loss exposing ``margin_cross_entropy(x, y, x / |x|, extra) ->
            (loss, (B, C) scale * cosines)``, ``logit_scale(x) ->
            float | (B, 1)`` and ``after_forward(x, y)`` (every head of
            ``reid_ir.losses.margin`` and its IR variants).
        whisker: box-and-whisker width w.
        gather: all-gather embeddings and labels across ranks for the pairs.
    """

    def __init__(self, head: ReidLoss, whisker: float = 1.5, gather: bool = False) -> None:
        super().__init__()
        missing = [m for m in HEAD_METHODS if not callable(getattr(head, m, None))]
        if missing:
            raise TypeError(
                f"UNPG needs a cosine-margin head; {type(head).__name__} lacks {missing}"
            )
        if whisker < 0:
            raise ConfigError(f"UNPG whisker must be >= 0, got {whisker}")
        self.head = head
        self.whisker = float(whisker)
        self.gather = bool(gather)

    def pair_similarities(
        self, z: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, N) Gram matrix of the normalised embeddings ``z`` (B, D) and the pairs' labels.

        With ``gather``, N covers every rank's batch; otherwise N = B.

        Returns:
            gram (N, N) (differentiable), labels (N,).
        """
        if self.gather:
            z, targets = gather_with_grad(z, targets)
        return z @ z.t(), targets

    def kept_negatives(self, gram: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The negative pairs inside the whiskers, an (N, N) bool tensor, and their number L."""
        return kept_pair_mask(gram, negative_pair_mask(labels), self.whisker)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """UNPG loss.

        Args:
            features: (B, D) embeddings.
            targets: (B,) labels in [0, C).

        Returns:
            LossOutput: the loss, the head's (B, C) scaled cosines without margin
            as ``logits`` (what the head itself returns) and ``terms``
            ``unpg_negatives`` (L), ``unpg_kept`` (K) and ``unpg_pair_mass`` (the
            mean softmax probability of the shared pair column: how much of the
            softmax mass the kept pairs take from the classes) as 0-d tensors.
        """
        z = F.normalize(features, dim=1)
        gram, labels = self.pair_similarities(z, targets)
        keep, num_neg = self.kept_negatives(gram, labels)  # (N, N): K of L pairs
        if num_neg == 0:  # no negative pair: the head's own loss
            out = self.head(features, targets)
            zero = features.new_zeros(())
            terms = {"unpg_negatives": zero, "unpg_kept": zero, "unpg_pair_mass": zero}
            return LossOutput(out.loss, out.logits, {**out.terms, **terms})
        scale = self.head.logit_scale(features)
        # logsumexp over the K shared columns: a 0-d tensor, or (B,) for a (B, 1) per-row scale
        extra = torch.logsumexp(scale * gram[keep], dim=-1)
        # CLPG + the extra column: cross_entropy(s * [mcos | k], y), in the head's own loss
        # (features normalised once, for both parts; no (B, C + K) concatenation)
        loss, scaled_cos, pair_mass = self.head.margin_cross_entropy(
            features, targets, unit_features=z, extra=extra
        )
        self.head.after_forward(features, targets)  # SphereFace's annealing, IR's centers
        terms = {
            "unpg_negatives": features.new_tensor(float(num_neg)),
            "unpg_kept": keep.sum().to(features.dtype),
            "unpg_pair_mass": pair_mass,
        }
        return LossOutput(loss, scaled_cos, terms)

    def class_weight(self) -> torch.Tensor | None:
        """The head's (C, D) class weights (tracked centers for IR heads)."""
        return self.head.class_weight()

    def start_epoch(self) -> None:
        """The head's per-epoch state (IR centers' averaging window)."""
        self.head.start_epoch()

    def extra_repr(self) -> str:
        return f"whisker={self.whisker}, gather={self.gather}"


# ---------------------------------------------------------------- registration
def supports_unpg(component: Any) -> bool:
    """Whether a registered loss class can be wrapped (has :data:`HEAD_METHODS`)."""
    return isinstance(component, type) and all(
        callable(getattr(component, m, None)) for m in HEAD_METHODS
    )


def unpg_kwargs(cfg: Any) -> dict:
    """UNPG's own keyword arguments read from ``cfg.loss.unpg``."""
    return {"whisker": float(cfg.loss.unpg.whisker), "gather": bool(cfg.loss.unpg.gather)}


def _factory(head_name: str) -> Callable[..., UNPGLoss]:
    def build_unpg(
        num_classes: int,
        feat_dim: int,
        class_counts: torch.Tensor | None = None,
        whisker: float = 1.5,
        gather: bool = False,
        **head_kwargs: Any,
    ) -> UNPGLoss:
        head = build_loss(head_name, num_classes, feat_dim, class_counts, **head_kwargs)
        return UNPGLoss(head, whisker=whisker, gather=gather)

    build_unpg.__name__ = build_unpg.__qualname__ = f"build_{PREFIX}{head_name}"
    build_unpg.__doc__ = (
        f"UNPG over ``{head_name}``: head keyword arguments plus ``whisker``, ``gather``."
    )
    return build_unpg


def _cfg_kwargs(head_name: str, registry: Registry) -> Callable[[Any], dict]:
    def read(cfg: Any) -> dict:
        return {**registry.kwargs_from_cfg(head_name, cfg), **unpg_kwargs(cfg)}

    return read


def register_unpg_variants(registry: Registry = LOSSES) -> list[str]:
    """Register ``unpg_<name>`` for every head in ``registry`` that supports UNPG.

    Idempotent: names already registered are left alone, so it can be called
    again after more heads were imported.

    Returns:
        The names added by this call.
    """
    added = []
    for name in registry.names():
        target = PREFIX + name
        if name.startswith(PREFIX) or target in registry or not supports_unpg(registry.get(name)):
            continue
        registry.add(target, _factory(name), _cfg_kwargs(name, registry))
        added.append(target)
    if added:
        logger.debug("registered UNPG variants %s", added)
    return added
