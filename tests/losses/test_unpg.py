"""UNPG: values and gradients against a direct implementation, guards, registry, IR heads, gather."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from reid_ir.config import ConfigError, get_cfg
from reid_ir.losses import LOSSES, build_loss
from reid_ir.losses.registry import configured_loss_name
from reid_ir.losses.unpg import (
    UNPGLoss,
    box_whisker_filter,
    in_batch_negatives,
    kept_pair_mask,
    merge_gathered,
    register_unpg_variants,
)

HEADS = [
    "norm_softmax",
    "am_softmax",
    "arcface",
    "a_softmax",
    "ir_am_softmax",
    "ir_arcface",
    "ir_a_softmax",
]


def reference_unpg(head, features, targets, whisker=1.5):
    """UNPG written out literally: loops over pairs, explicit quartile positions, K full columns."""
    z = F.normalize(features, dim=1)
    negs = [
        z[i] @ z[j]
        for i in range(len(targets))
        for j in range(i + 1, len(targets))
        if targets[i] != targets[j]
    ]
    s = sorted(negs, key=lambda v: v.detach().item())
    num = len(s)
    if num >= 4:
        q1, q3 = s[int(0.25 * num)].item(), s[int(0.75 * num)].item()
        lo, hi = q1 - whisker * (q3 - q1), q3 + whisker * (q3 - q1)
        s = [v for v in s if lo <= v.item() <= hi]
    kept = torch.stack(s)
    mcos = head.margin_cosines(features, targets)
    extra = kept.unsqueeze(0).expand(len(targets), -1)
    logits = head.logit_scale(features) * torch.cat([mcos, extra], dim=1)
    return F.cross_entropy(logits, targets), len(negs), len(s)


def make_head(name, num_classes=5, feat_dim=8, seed=0, **kwargs):
    """A head without label smoothing (the reference formula is plain cross-entropy)."""
    torch.manual_seed(seed)
    kwargs.setdefault("label_smooth", 0.0)
    head = build_loss(name, num_classes=num_classes, feat_dim=feat_dim, **kwargs)
    if hasattr(head, "bank"):  # IR heads: centers are tracked, not learned; give them values
        head.bank.centers.copy_(torch.randn(num_classes, feat_dim))
        head.bank.seen.fill_(True)
    return head


def batch(b=12, d=8, c=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randint(0, c, (b,), generator=g)


@pytest.mark.parametrize("name", HEADS)
def test_loss_and_gradients_equal_direct_formula(name):
    head = make_head(name)
    loss_fn = UNPGLoss(head, whisker=1.5)
    x, y = batch()
    x1 = x.clone().requires_grad_(True)
    out = loss_fn(x1, y)
    out.loss.backward()
    x2 = x.clone().requires_grad_(True)
    ref_head = make_head(name)  # fresh copy (A-Softmax's annealing step must match)
    ref, num_neg, num_kept = reference_unpg(ref_head, x2, y)
    ref.backward()
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(x1.grad, x2.grad)
    for p, q in zip(head.parameters(), ref_head.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert out.logits.shape == (12, 5)
    assert int(out.terms["unpg_negatives"]) == num_neg and int(out.terms["unpg_kept"]) == num_kept
    assert all(t.dtype == x1.dtype and t.dim() == 0 for t in out.terms.values())


def test_whisker_drops_outliers_on_a_case_with_known_quartiles():
    # w = 0 keeps only [Q1, Q3]: some of the L negatives must go, exactly as the direct formula says.
    x, y = batch(b=16, d=4, seed=3)
    loss_fn = UNPGLoss(make_head("am_softmax", feat_dim=4), whisker=0.0)
    ref, num_neg, num_kept = reference_unpg(make_head("am_softmax", feat_dim=4), x, y, whisker=0.0)
    out = loss_fn(x, y)
    torch.testing.assert_close(out.loss, ref)
    assert num_kept < num_neg and int(out.terms["unpg_kept"]) == num_kept


def test_quartile_positions_are_sorted_list_positions():
    # L = 10 -> Q1 = s[2] = 0, Q3 = s[7] = 2, IQR = 2; w = 0.5 -> keep [-1, 3], bounds included.
    # (Interpolated quartiles, 0.125 and 1.9375, would drop -1 and 3 as well.)
    values = torch.tensor([5.0, -1.0, 0.5, 2.0, 0.0, 1.5, -4.0, 3.0, 1.0, 1.75])
    kept = box_whisker_filter(values, whisker=0.5).sort().values
    torch.testing.assert_close(kept, torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.5, 1.75, 2.0, 3.0]))
    # L = 7 -> Q1 = s[int(1.75)] = s[1], Q3 = s[int(5.25)] = s[5] (no interpolation).
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 100.0])
    kept = box_whisker_filter(values, whisker=0.0).sort().values
    torch.testing.assert_close(kept, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(box_whisker_filter(values, whisker=math.inf), values)
    ties = torch.full((6,), 0.25)  # IQR = 0: every value sits on both quartiles
    assert torch.equal(box_whisker_filter(ties, whisker=1.5), ties)


@pytest.mark.parametrize("whisker", [0.0, 0.3, 1.5, math.inf])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_pair_mask_keeps_exactly_the_values_the_list_filter_keeps(whisker, seed):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(24, 5, generator=g), dim=1)
    z[5] = z[3]  # exact ties between pairs
    y = torch.randint(0, 6, (24,), generator=g)
    negative = (y.unsqueeze(1) != y.unsqueeze(0)).triu(1)
    gram = z @ z.t()
    mask, num_negatives = kept_pair_mask(gram, negative, whisker)
    listed = box_whisker_filter(in_batch_negatives(z, y), whisker)
    assert num_negatives == int(negative.sum())
    assert not (mask & ~negative).any()
    assert torch.equal(gram[mask].sort().values, listed.sort().values)


def test_negatives_are_each_unordered_pair_once_with_gradients_on_both_sides():
    z = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 2, 2, 3])
    negs = in_batch_negatives(z, y)
    expected = [z[i] @ z[j] for i in range(6) for j in range(i + 1, 6) if y[i] != y[j]]
    assert negs.numel() == len(expected) == 15 - 2
    torch.testing.assert_close(negs, torch.stack(expected))
    negs[0].backward()  # pair (0, 2)
    assert z.grad[0].abs().sum() > 0 and z.grad[2].abs().sum() > 0
    assert z.grad[[1, 3, 4, 5]].abs().sum() == 0


def test_no_negative_pair_falls_back_to_the_head_loss():
    head = make_head("am_softmax")
    x, _ = batch(b=4)
    y = torch.full((4,), 2)
    out = UNPGLoss(head)(x, y)
    torch.testing.assert_close(out.loss, head(x, y).loss)
    assert int(out.terms["unpg_negatives"]) == 0 and int(out.terms["unpg_kept"]) == 0
    single = UNPGLoss(head)(x[:1], y[:1])
    assert torch.isfinite(single.loss)


def test_fallback_runs_the_head_forward_once():
    head = make_head("a_softmax")
    head.train()
    x, _ = batch(b=4)
    UNPGLoss(head)(x, torch.zeros(4, dtype=torch.long))
    UNPGLoss(head)(x, torch.arange(4))
    assert int(head.iteration) == 2


def test_fewer_than_four_negatives_are_all_kept():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 1, 1])  # negatives: (0, 1), (0, 2)
    out = UNPGLoss(make_head("am_softmax", feat_dim=2))(x, y)
    assert int(out.terms["unpg_negatives"]) == 2 and int(out.terms["unpg_kept"]) == 2
    ref, _, _ = reference_unpg(make_head("am_softmax", feat_dim=2), x, y)
    torch.testing.assert_close(out.loss, ref)


def test_degenerate_inputs_give_finite_loss_and_gradients():
    x = torch.zeros(5, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4])
    out = UNPGLoss(make_head("arcface"))(x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all()
    x = torch.randn(2, 8, requires_grad=True)
    out = UNPGLoss(make_head("arcface"))(x, torch.tensor([0, 1]))
    out.loss.backward()
    assert int(out.terms["unpg_kept"]) == 1 and torch.isfinite(x.grad).all()


def test_unpg_adds_loss_over_the_plain_head():
    head = make_head("am_softmax")
    x, y = batch()
    assert UNPGLoss(head)(x, y).loss > head(x, y).loss


def test_variants_registered_for_every_cosine_head_and_only_those():
    for name in HEADS:
        assert "unpg_" + name in LOSSES
    assert "unpg_softmax" not in LOSSES and "unpg_ir_softmax" not in LOSSES
    assert "unpg_unpg_am_softmax" not in LOSSES
    assert register_unpg_variants() == []  # idempotent


def test_cfg_kwargs_combine_head_and_unpg_keys():
    cfg = get_cfg()
    cfg.loss.margin.scale, cfg.loss.margin.m = 16.0, 0.2
    cfg.loss.unpg.whisker, cfg.loss.unpg.gather = 3.0, True
    kwargs = LOSSES.kwargs_from_cfg("unpg_ir_am_softmax", cfg)
    assert kwargs == {
        **LOSSES.kwargs_from_cfg("ir_am_softmax", cfg),
        "whisker": 3.0,
        "gather": True,
    }
    assert kwargs["scale"] == 16.0 and kwargs["m"] == 0.2
    loss = build_loss("unpg_ir_am_softmax", num_classes=7, feat_dim=4, **kwargs)
    assert isinstance(loss, UNPGLoss) and loss.head.scale == 16.0 and loss.head.m == 0.2
    assert loss.whisker == 3.0 and loss.gather


def test_enabled_flag_maps_the_head_name():
    cfg = get_cfg()
    cfg.loss.name = "arcface"
    assert configured_loss_name(cfg) == "arcface"
    cfg.loss.unpg.enabled = True
    assert configured_loss_name(cfg) == "unpg_arcface"
    cfg.loss.name = "unpg_arcface"
    assert configured_loss_name(cfg) == "unpg_arcface"
    cfg.loss.name = "softmax"
    with pytest.raises(ConfigError, match="cosine-margin head"):
        configured_loss_name(cfg)


def test_non_margin_head_is_rejected():
    with pytest.raises(TypeError, match="cosine-margin head"):
        UNPGLoss(build_loss("softmax", num_classes=3, feat_dim=4))


def test_ir_head_uses_the_centers_and_updates_them_after_the_loss():
    loss = build_loss("unpg_ir_am_softmax", num_classes=5, feat_dim=8, label_smooth=0.0)
    assert loss.class_weight() is loss.head.bank.centers
    x, y = batch(b=20)
    loss.head.bank.update(x, y)  # first appearance: centers = batch class means
    means = torch.stack([x[y == c].mean(0) for c in range(5)])
    xr = x.clone().requires_grad_(True)
    out = loss(xr, y)
    out.loss.backward()
    cosines = F.normalize(x, dim=1) @ F.normalize(means, dim=1).t()
    torch.testing.assert_close(out.logits, loss.head.scale * cosines)  # as the head returns them
    assert list(loss.parameters()) == []  # centers are buffers: nothing learned in the loss
    xx = x.clone().requires_grad_(True)
    ref_head = build_loss("ir_am_softmax", num_classes=5, feat_dim=8, label_smooth=0.0).eval()
    ref_head.bank.centers.copy_(means)
    ref, _, _ = reference_unpg(ref_head, xx, y)
    ref.backward()
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(xr.grad, xx.grad)
    # the forward then added the batch to the epoch's means (epoch_mean): twice the same batch
    torch.testing.assert_close(loss.head.bank.centers, means)


def test_merge_gathered_keeps_local_gradients_and_drops_padding():
    local = torch.randn(2, 3, requires_grad=True)
    other = torch.randn(3, 3)
    chunks = [other, torch.cat([local.detach(), torch.zeros(1, 3)])]
    labels = [torch.tensor([5, 6, 7]), torch.tensor([1, 2, -1])]
    z, y = merge_gathered(chunks, labels, [3, 2], 1, local, torch.tensor([1, 2]))
    assert z.shape == (5, 3) and y.tolist() == [5, 6, 7, 1, 2]
    z.sum().backward()
    torch.testing.assert_close(local.grad, torch.ones(2, 3))


def _gather_worker(rank: int, world: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = batch(b=10, seed=7)
        sizes = [6, 4][:world] if world == 2 else [10]
        start = sum(sizes[:rank])
        x_local = x[start : start + sizes[rank]].clone().requires_grad_(True)
        loss = UNPGLoss(make_head("am_softmax"), gather=True)
        out = loss(x_local, y[start : start + sizes[rank]])
        out.loss.backward()
        torch.save(
            {"loss": out.loss.detach(), "grad": x_local.grad, "kept": out.terms["unpg_kept"]},
            f"{result_file}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [1, 2])
def test_gather_uses_every_ranks_pairs_with_local_gradients(world, tmp_path):
    """Real gloo process groups: each rank's loss = head CE on its rows + negatives of the union."""
    init_file, result = str(tmp_path / "init"), str(tmp_path / "result")
    mp.start_processes(
        _gather_worker, args=(world, init_file, result), nprocs=world, start_method="spawn"
    )
    x, y = batch(b=10, seed=7)
    sizes = [6, 4] if world == 2 else [10]
    z_all = F.normalize(x, dim=1)
    kept = box_whisker_filter(in_batch_negatives(z_all, y))
    for rank in range(world):
        got = torch.load(f"{result}.{rank}")
        start = sum(sizes[:rank])
        xl = x[start : start + sizes[rank]].clone().requires_grad_(True)
        head = make_head("am_softmax")
        # reference: direct formula with the union's negatives, gradients through the local rows only
        z = torch.cat([z_all[:start], F.normalize(xl, dim=1), z_all[start + sizes[rank] :]])
        negs = in_batch_negatives(z, y)
        s, _ = torch.sort(negs)
        kept_local = s[(s >= kept.min()) & (s <= kept.max())]
        yl = y[start : start + sizes[rank]]
        extra = kept_local.unsqueeze(0).expand(sizes[rank], -1)
        ref = F.cross_entropy(
            head.logit_scale(xl) * torch.cat([head.margin_cosines(xl, yl), extra], 1), yl
        )
        ref.backward()
        torch.testing.assert_close(got["loss"], ref.detach())
        torch.testing.assert_close(got["grad"], xl.grad)
        assert int(got["kept"]) == kept.numel()
