"""CLMLE loss: zero when every angular margin holds, positive otherwise, matches a per-sample oracle."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reid_ir.config.defaults import get_cfg
from reid_ir.losses import LOSSES, build_loss, build_loss_from_cfg
from reid_ir.losses.clmle import CLMLELoss, clmle_margin_terms
from reid_ir.losses.clusters import ClusterBank, pad_centroids


def _unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def _rotate_xy(deg: float) -> torch.Tensor:
    """Unit vector in the x-y plane at `deg` degrees from the x axis."""
    r = math.radians(deg)
    return torch.tensor([math.cos(r), math.sin(r), 0.0])


def _loss_with_clusters(centroids, labels, num_classes, **kw) -> CLMLELoss:
    kw.setdefault("softmax_weight", 0.0)
    loss = build_loss("clmle", num_classes=num_classes, feat_dim=centroids.shape[1], **kw)
    loss.clusters.set_clusters(centroids, labels, torch.zeros(0, dtype=torch.long))
    return loss


# class 0: clusters at 0 and 90 degrees in the x-y plane; class 1: one cluster at 180 degrees.
CENTROIDS = torch.stack([_rotate_xy(0), _rotate_xy(90), _rotate_xy(180)])
LABELS = torch.tensor([0, 0, 1])


def test_is_registered_and_builds_from_the_config():
    assert "clmle" in LOSSES
    cfg = get_cfg()
    cfg.loss.name = "clmle"
    cfg.loss.clmle.clusters_per_class = 2
    cfg.loss.clmle.margin_between = 0.3
    cfg.loss.clmle.refresh_epochs = 3
    loss = build_loss_from_cfg(cfg, num_classes=4, feat_dim=16)
    assert isinstance(loss, CLMLELoss)
    assert loss.margin_between == 0.3 and loss.clusters.clusters_per_class == 2
    assert loss.refresh_epochs == 3


def test_cluster_bank_is_a_submodule_that_adds_nothing_to_the_loss_state_dict():
    """Checkpoints of the loss keep their keys; the clusters travel in the hook states."""
    loss = build_loss("clmle", num_classes=2, feat_dim=3, softmax_weight=0.0)
    assert dict(loss.named_children())["clusters"] is loss.clusters
    loss.clusters.set_clusters(CENTROIDS, LABELS, torch.zeros(0, dtype=torch.long))
    assert loss.state_dict() == {}


def test_loss_is_zero_when_every_margin_holds():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 2, margin_within=0.2, margin_between=0.3)
    feats = torch.stack([_rotate_xy(5), _rotate_xy(80), _rotate_xy(178)])
    out = loss(feats, torch.tensor([0, 0, 1]))
    assert out.loss.item() == 0.0
    assert out.terms["clmle_within"].item() == 0.0 and out.terms["clmle_between"].item() == 0.0


def test_within_class_margin_is_violated_near_the_boundary_between_clusters_of_a_class():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 2, margin_within=0.2, margin_between=0.0)
    out = loss(_rotate_xy(44).unsqueeze(0), torch.tensor([0]))
    # own cluster at 44 deg, other cluster of the class at 46 deg: hinge = 0.2 - 2 deg
    expected = 0.2 - math.radians(2)
    assert torch.isclose(out.terms["clmle_within"], torch.tensor(expected), atol=1e-4)
    assert out.terms["clmle_between"].item() == 0.0


def test_between_class_margin_is_violated_near_another_class():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 2, margin_within=0.0, margin_between=0.3)
    f = _rotate_xy(135)  # class 1: its only cluster 45 deg away, class 0's y-cluster too
    out = loss(f.unsqueeze(0), torch.tensor([1]))
    assert torch.isclose(out.loss, torch.tensor(0.3), atol=1e-4)
    assert out.terms["clmle_between"] > 0


def test_between_margin_is_measured_from_the_farthest_cluster_of_the_class():
    """LMLE's rule: every cluster of the class nearer than the nearest foreign cluster."""
    centroids = torch.stack([_rotate_xy(0), _rotate_xy(90), _rotate_xy(-80)])
    loss = _loss_with_clusters(centroids, LABELS, 2, margin_within=0.0, margin_between=0.3)
    out = loss(_rotate_xy(10).unsqueeze(0), torch.tensor([0]))
    # own cluster 10 deg away (10 + m < 90 deg to class 1 holds), but the farthest own
    # cluster is 80 deg away: 80 deg + 0.3 rad - 90 deg > 0
    expected = math.radians(80) + 0.3 - math.radians(90)
    assert torch.isclose(out.terms["clmle_between"], torch.tensor(expected), atol=1e-4)


def _oracle(features, targets, centroids, labels, mw, mb):
    """Per-sample loops straight from the formulation in the module docstring (differentiable)."""
    within, between = [], []
    x = F.normalize(features, dim=1)
    zero = features.sum() * 0
    for f, y in zip(x, targets.tolist(), strict=True):
        ang = torch.acos((centroids @ f).clamp(-1, 1))
        own = ang[labels == y]
        a = own.argmin()
        t_own = own[a]
        rest = torch.cat([own[:a], own[a + 1 :]])
        within.append(torch.relu(t_own + mw - rest.min()) if len(rest) else zero)
        neg = ang[labels != y]
        between.append(torch.relu(own.max() + mb - neg.min()) if len(neg) else zero)
    return torch.stack(within), torch.stack(between)


def test_vectorised_terms_and_gradients_match_the_per_sample_oracle():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 1, 2, 0, 3])  # class 3 has no cluster
    labels = torch.repeat_interleave(torch.arange(5), counts)
    centroids = F.normalize(torch.randn(len(labels), 6, generator=g), dim=1)
    targets = torch.tensor([0, 1, 2, 4, 0, 2, 1, 4, 0, 4])
    feats = torch.randn(len(targets), 6, generator=g, requires_grad=True)
    ref_feats = feats.detach().clone().requires_grad_(True)
    padded, valid = pad_centroids(centroids, labels, 5)
    within, between, scores = clmle_margin_terms(feats, targets, padded, valid, 0.4, 0.6)
    ref_w, ref_b = _oracle(ref_feats, targets, centroids, labels, 0.4, 0.6)
    assert torch.allclose(within, ref_w, atol=1e-4) and torch.allclose(between, ref_b, atol=1e-4)
    assert (within > 0).any() and (between > 0).any()
    assert scores.shape == (10, 5) and (scores[:, 3] == -2).all()
    (within.sum() + 2 * between.sum()).backward()
    (ref_w.sum() + 2 * ref_b.sum()).backward()
    assert torch.allclose(feats.grad, ref_feats.grad, atol=1e-4)
    assert feats.grad.abs().sum() > 0


def test_sample_of_a_class_without_clusters_adds_nothing_and_stays_finite():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 3, margin_within=0.2, margin_between=0.3)
    feats = torch.randn(2, 3, requires_grad=True)
    out = loss(feats, torch.tensor([2, 2]))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.isfinite(feats.grad).all()


def test_gradient_step_reduces_the_margin_violation():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 2, margin_within=0.2, margin_between=0.3)
    feats = torch.stack([_rotate_xy(44), _unit(1.0, 0.0, 1.0)]).requires_grad_(True)
    targets = torch.tensor([0, 0])
    before = loss(feats, targets).loss
    before.backward()
    assert torch.isfinite(feats.grad).all()
    with torch.no_grad():
        after = loss(feats - 0.1 * feats.grad, targets).loss
    assert after < before


def test_softmax_term_is_added_with_its_weight_and_provides_logits():
    torch.manual_seed(0)
    loss = _loss_with_clusters(
        CENTROIDS, LABELS, 2, softmax_weight=0.5, margin_within=0.2, margin_between=0.3
    )
    feats, targets = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    out = loss(feats, targets)
    metric = out.terms["clmle_within"] + out.terms["clmle_between"]
    assert torch.isclose(out.loss, metric + 0.5 * out.terms["xent"])
    assert out.logits.shape == (4, 2) and loss.class_weight().shape == (2, 3)


def test_without_softmax_the_logits_are_the_best_cluster_cosine_per_class():
    loss = _loss_with_clusters(CENTROIDS, LABELS, 2)
    out = loss(torch.stack([_rotate_xy(10), _rotate_xy(170)]), torch.tensor([0, 1]))
    assert out.logits.argmax(1).tolist() == [0, 1]
    assert loss.class_weight() is None


def test_before_any_clustering_only_the_softmax_term_trains():
    loss = build_loss("clmle", num_classes=3, feat_dim=4, softmax_weight=1.0)
    feats = torch.randn(5, 4, requires_grad=True)
    out = loss(feats, torch.tensor([0, 1, 2, 0, 1]))
    out.loss.backward()
    assert out.terms["clmle_within"].item() == 0.0 and torch.isclose(out.loss, out.terms["xent"])


def test_loss_reads_the_clusters_its_bank_computed():
    bank_loss = build_loss(
        "clmle", num_classes=2, feat_dim=3, clusters_per_class=2, min_cluster_size=1
    )
    assert isinstance(bank_loss.clusters, ClusterBank)
    feats = torch.stack(
        [_rotate_xy(0), _rotate_xy(5), _rotate_xy(90), _rotate_xy(95), _unit(0, 0, 1)]
    )
    bank_loss.clusters.refresh(feats, torch.tensor([0, 0, 0, 0, 1]))
    assert bank_loss.clusters.centroids.shape == (3, 3)
    out = bank_loss(feats, torch.tensor([0, 0, 0, 0, 1]))
    assert torch.isfinite(out.loss)
