r"""CLMLE: cluster-based large margin local embedding (``loss.name: clmle``).

Huang, Li, Loy, Tang, "Deep Imbalanced Learning for Face Recognition and
Attribute Prediction", arXiv 1806.00194 (CLMLE), extending the same authors'
LMLE ("Learning Deep Representation for Imbalanced Classification", CVPR 2016).

Formulation implemented here
----------------------------
Features and centroids live on the unit hypersphere; ``theta(a, b)`` is the
angle between them. Every class c has up to K spherical k-means centroids
``mu_{c,1..K_c}`` of its training embeddings, refreshed every
``refresh_epochs`` (held by the loss's :class:`~reid_ir.losses.clusters.ClusterBank`,
refreshed on that schedule by the engine's ``ClusterHook``; fixed between
refreshes; no gradient flows into them). For a sample
``x`` of class y:

* its cluster ``a = argmin_j theta(x, mu_{y,j})`` - the nearest centroid of its
  own class, taken at loss time (the batch carries no dataset indices, so the
  k-means assignment of the image cannot be looked up; between refreshes the
  two agree unless the embedding moved across a cluster boundary);
* ``theta_own = theta(x, mu_{y,a})``;
* ``theta_in = min_{j != a} theta(x, mu_{y,j})`` - the hardest other cluster of
  its own class (only when K_y >= 2);
* ``theta_far = max_j theta(x, mu_{y,j})`` - the farthest cluster of its own class
  (``theta_own`` for a single-cluster class);
* ``theta_out = min_{c != y, j} theta(x, mu_{c,j})`` - the hardest cluster of any
  other class, mined from all centroids.

    L_within  = mean_i [theta_own + m_within  - theta_in ]_+
    L_between = mean_i [theta_far + m_between - theta_out]_+
    L = L_within + L_between + softmax_weight * CE(W x, y)

(terms that do not exist for a sample count as 0 in the batch mean). The loss
is exactly 0 when every sample is ``m_within`` closer (in angle) to its own
cluster than to its class's other clusters, and even its class's *farthest*
cluster is ``m_between`` closer than any other class's cluster: LMLE's rule
that a class's clusters all lie nearer than the nearest foreign cluster, so a
rare class keeps a margin against every mode of a frequent one. As ``a`` is
the nearest own centroid, ``theta_own <= theta_in``: the within hinge only acts
on samples less than ``m_within`` from the boundary between two clusters of
their class.

Vectorised over the batch with a padded (C, K, D) centroid tensor and a (C, K)
mask: one (B, D) x (D, C K) product per step, without gradient, mines the four
centroids of each sample; the gradient flows through those four cosines only.

Where it follows the papers and where not
-----------------------------------------
* From LMLE: per-class k-means clusters, recomputed during training; margins
  both between clusters of one class and between classes; hinge losses on the
  hardest violators; kNN-over-clusters classification with the local
  large-margin vote (:mod:`reid_ir.evaluation.knc`).
* From CLMLE: the embedding and the margins are angular, on the hypersphere
  (spherical k-means, angles instead of LMLE's Euclidean distances), and the
  constraints are between a sample and cluster *centroids* rather than between
  sampled instances - no quintuplet sampling.
* LMLE orders four distances (same cluster < same class other cluster <
  farthest same class < other class) with three hinges on sampled quintuplets.
  With centroids in place of instances its middle hinge (nearest other own
  cluster < farthest own cluster) always holds, so two hinges remain: the first
  and the last, which we enforce as stated (``theta_far`` against
  ``theta_out``). CLMLE's own per-sample loss (its cluster-level angular-margin
  form and margin values) could not be consulted here; docs/clmle.md says what
  that leaves open. The optional
  softmax term (reusing :class:`~reid_ir.losses.softmax.SoftmaxLoss`) is a
  classifier for the training accuracy and a stabiliser before the clusters
  mean much; ``softmax_weight: 0`` gives the pure metric loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.clusters import ClusterBank
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import SoftmaxLoss, label_smooth_epsilon

# Cosine given to padded / masked centroids: below any real cosine.
_MASKED = -2.0
# Keep acos's derivative finite: cosines are clamped to [-1 + eps, 1 - eps].
_ACOS_EPS = 1e-6


def _angle(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))


def clmle_margin_terms(
    features: torch.Tensor,
    targets: torch.Tensor,
    centroids: torch.Tensor,
    valid: torch.Tensor,
    margin_within: float,
    margin_between: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample CLMLE hinge terms (see the module docstring).

    Args:
        features: (B, D) embeddings (normalised here).
        targets: (B,) class ids in [0, C).
        centroids: (C, K, D) unit centroids, padded.
        valid: (C, K) bool, True for real centroids.
        margin_within: angular margin (radians) to the class's other clusters.
        margin_between: angular margin (radians) to the nearest other-class cluster.

    Returns:
        ``within`` (B,), ``between`` (B,) hinge values (0 where the term does
        not exist) and ``cluster_scores`` (B, C): the best centroid cosine of
        every class (``-2`` for classes without centroids).
    """
    b = features.shape[0]
    c, k, d = centroids.shape
    x = F.normalize(features.float(), dim=1)
    flat = centroids.reshape(c * k, d)
    rows = torch.arange(b, device=features.device)
    with torch.no_grad():  # mining: which three centroids matter for each sample
        cos = (x @ flat.t()).view(b, c, k).masked_fill(~valid.unsqueeze(0), _MASKED)
        own = cos[rows, targets]  # (B, K)
        own_best, own_idx = own.max(1)
        # farthest cluster of the own class: the lowest real cosine (padding moved above any)
        far_idx = own.masked_fill(own <= _MASKED / 2, 2.0).min(1).indices
        other_same, same_idx = own.scatter(1, own_idx.unsqueeze(1), _MASKED).max(1)
        is_target = F.one_hot(targets, c).bool().unsqueeze(2)  # (B, C, 1)
        other_class, other_idx = cos.masked_fill(is_target, _MASKED).view(b, c * k).max(1)
        exists = _MASKED / 2  # real cosines are >= -1
        has_own = own_best > exists
        has_in, has_out = has_own & (other_same > exists), has_own & (other_class > exists)
        picked = torch.stack(
            [targets * k + own_idx, targets * k + same_idx, targets * k + far_idx, other_idx], 1
        )
    # gradient only through the four picked cosines: a (B, 4, D) product, not (B, C K, D)
    theta = _angle(torch.einsum("bd,bjd->bj", x, flat[picked]))  # (B, 4): own, in, far, out
    within = F.relu(theta[:, 0] + margin_within - theta[:, 1]) * has_in
    between = F.relu(theta[:, 2] + margin_between - theta[:, 3]) * has_out
    return within, between, cos.amax(2)


def _clmle_kwargs(cfg) -> dict:
    c = cfg.loss.clmle
    return {
        "clusters_per_class": int(c.clusters_per_class),
        "refresh_epochs": int(c.refresh_epochs),
        "margin_within": float(c.margin_within),
        "margin_between": float(c.margin_between),
        "softmax_weight": float(c.softmax_weight),
        "min_cluster_size": int(c.min_cluster_size),
        "kmeans_iters": int(c.kmeans_iters),
        "kmeans_seed": int(c.kmeans_seed),
        "label_smooth": label_smooth_epsilon(cfg),
    }


@LOSSES.register("clmle", _clmle_kwargs)
class CLMLELoss(ReidLoss):
    """Angular cluster margins on the hypersphere (+ optional softmax); owns a ClusterBank.

    Before the bank has clusters (the engine's ``ClusterHook``, built from this
    loss, computes them in ``before_train``) the margin terms are 0 and only the
    softmax term trains.

    Args:
        num_classes: C.
        feat_dim: D.
        clusters_per_class: K, most clusters of one class.
        refresh_epochs: re-cluster every this many epochs (read by the engine's
            ``cluster_hooks``, which schedules the refresh).
        margin_within: angular margin to the class's other clusters (radians).
        margin_between: angular margin to other classes' clusters (radians).
        softmax_weight: weight of the cross-entropy term (0: no classifier).
        min_cluster_size: images a class needs per cluster to get more than one.
        kmeans_iters: spherical k-means iterations.
        kmeans_seed: base k-means seed.
        label_smooth: label smoothing of the softmax term.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        clusters_per_class: int = 3,
        refresh_epochs: int = 1,
        margin_within: float = 0.1,
        margin_between: float = 0.2,
        softmax_weight: float = 1.0,
        min_cluster_size: int = 4,
        kmeans_iters: int = 20,
        kmeans_seed: int = 0,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.margin_within, self.margin_between = margin_within, margin_between
        self.softmax_weight = softmax_weight
        self.softmax = (
            SoftmaxLoss(num_classes, feat_dim, label_smooth) if softmax_weight > 0 else None
        )
        self.refresh_epochs = refresh_epochs
        self.clusters = ClusterBank(
            num_classes, clusters_per_class, min_cluster_size, kmeans_iters, kmeans_seed
        )

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the loss, (B, C) logits and the terms.

        Logits are the softmax classifier's, or without it the best centroid
        cosine of each class.
        """
        terms: dict[str, torch.Tensor] = {}
        logits = None
        if self.clusters.has_clusters:
            centroids, valid = self.clusters.padded(features.device)
            within, between, logits = clmle_margin_terms(
                features, targets, centroids, valid, self.margin_within, self.margin_between
            )
            within, between = within.mean(), between.mean()
        else:
            within = between = features.sum() * 0.0
        loss = within + between
        terms["clmle_within"], terms["clmle_between"] = within.detach(), between.detach()
        if self.softmax is not None:
            xent = self.softmax(features, targets)
            loss = loss + self.softmax_weight * xent.loss
            logits = xent.logits
            terms["xent"] = xent.loss.detach()
        return LossOutput(loss, logits, terms)

    def class_weight(self) -> torch.Tensor | None:
        """(C, D) softmax classifier rows, or None without the softmax term."""
        return self.softmax.class_weight() if self.softmax is not None else None
