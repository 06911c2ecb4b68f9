"""IR heads: class weights are class centers the loss keeps current itself, never learned."""

import pytest
import torch
import torch.nn.functional as F

from reid_ir.losses import build_loss
from reid_ir.losses.centers import UPDATE_RULES, CenterBank
from reid_ir.losses.ir import IRSoftmaxLoss

C, D, B = 12, 16, 24
IR = ["ir_softmax", "ir_a_softmax", "ir_am_softmax", "ir_arcface"]
LEARNED = {"ir_a_softmax": "a_softmax", "ir_am_softmax": "am_softmax", "ir_arcface": "arcface"}


def _batch(seed=0, n=B, classes=C):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, classes, (n,), generator=g)


def _with_centers(loss, seed=5):
    loss.bank.centers.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(seed)))
    loss.bank.seen.fill_(True)
    return loss


@pytest.mark.parametrize("name", IR)
def test_ir_weights_get_no_gradient(name):
    loss = _with_centers(build_loss(name, num_classes=C, feat_dim=D))
    x, y = _batch()
    x.requires_grad_(True)
    loss(x, y).loss.backward()
    assert list(loss.parameters()) == []
    assert not loss.class_weight().requires_grad and loss.class_weight().grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(LEARNED))
def test_ir_head_equals_its_learned_head_with_weights_set_to_the_centers(name):
    ir = _with_centers(build_loss(name, num_classes=C, feat_dim=D)).eval()
    learned = build_loss(LEARNED[name], num_classes=C, feat_dim=D).eval()
    with torch.no_grad():
        learned.weight.copy_(3.0 * ir.bank.centers)  # the heads normalise the weights
    x, y = _batch(1)
    torch.testing.assert_close(ir(x, y).loss, learned(x, y).loss)
    torch.testing.assert_close(ir.margin_cosines(x, y), learned.margin_cosines(x, y))


def test_ir_softmax_logits_are_dot_products_with_the_centers():
    loss = _with_centers(IRSoftmaxLoss(C, D, label_smooth=False))
    centers = loss.bank.centers.clone()
    x, y = _batch(2)
    out = loss(x, y)
    torch.testing.assert_close(out.logits, x @ centers.t())
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))


@pytest.mark.parametrize("name", IR)
def test_a_training_forward_updates_the_centers_an_eval_forward_does_not(name):
    loss = build_loss(name, num_classes=C, feat_dim=D)
    x, y = _batch(3)
    loss.eval()(x, y)
    assert not loss.bank.seen.any() and loss.bank.centers.abs().sum() == 0
    loss.train()(x, y)
    assert torch.equal(loss.bank.seen, torch.bincount(y, minlength=C) > 0)


@pytest.mark.parametrize("rule", UPDATE_RULES)
def test_first_appearance_sets_the_center_to_the_class_batch_mean(rule):
    bank = CenterBank(C, D, rule=rule)
    x, y = _batch(4)
    bank.update(x, y)
    for c in y.unique():
        torch.testing.assert_close(bank.centers[c], x[y == c].mean(0))
    unseen = torch.bincount(y, minlength=C) == 0
    assert (bank.centers[unseen] == 0).all() and torch.equal(bank.seen, ~unseen)


def test_epoch_mean_is_the_exact_mean_of_every_feature_seen_since_the_epoch_started():
    bank = CenterBank(C, D, rule="epoch_mean")
    old_x, old_y = _batch(5)
    bank.update(old_x, old_y)
    bank.start_epoch()
    batches = [_batch(6 + i, n=10, classes=C // 2) for i in range(3)]  # classes 0..5 only
    for x, y in batches:
        bank.update(x, y)
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    for c in ys.unique():
        torch.testing.assert_close(bank.centers[c], xs[ys == c].mean(0))
    for c in set(old_y.tolist()) - set(ys.tolist()):  # not seen this epoch: last epoch's mean
        torch.testing.assert_close(bank.centers[c], old_x[old_y == c].mean(0))


def test_ema_and_center_loss_follow_their_formulas_after_the_first_appearance():
    x0, y0 = _batch(7)
    x1, y1 = _batch(8)
    for rule in ("ema", "center_loss"):
        bank = CenterBank(C, D, rule=rule, momentum=0.25, alpha=0.5)
        bank.update(x0, y0)
        before = bank.centers.clone()
        bank.update(x1, y1)
        for c in y1.unique():
            if not (y0 == c).any():
                continue
            feats, old = x1[y1 == c], before[c]
            if rule == "ema":
                want = 0.25 * old + 0.75 * feats.mean(0)
            else:
                want = old - 0.5 * (old - feats).sum(0) / (1 + len(feats))
            torch.testing.assert_close(bank.centers[c], want)


def test_count_ema_keeps_the_epoch_momentum_per_epoch_whatever_the_class_size():
    """A class seen a times in its last epoch uses mu_e ** (1 / a) per appearance."""
    mu_e = 0.25
    bank = CenterBank(C, D, rule="count_ema", epoch_momentum=mu_e).double()
    y_epoch = [torch.tensor([0, 0, 1, 2]), torch.tensor([0, 3]), torch.tensor([0, 1])]
    for y in y_epoch:  # epoch 1: class 0 in 3 batches, class 1 in 2, classes 2 and 3 in 1
        bank.update(torch.randn(len(y), D, dtype=torch.float64), y)
    assert bank.appearances[:5].tolist() == [3, 2, 1, 1, 0]
    assert (bank.last_appearances == 1).all()  # nothing counted over a whole epoch yet
    bank.start_epoch()
    assert bank.last_appearances[:5].tolist() == [3, 2, 1, 1, 1] and (bank.appearances == 0).all()

    start = bank.centers.clone()
    for step in range(3):  # epoch 2: class 0 in each of its 3 batches, class 2 in the first only
        y = torch.tensor([0, 0, 2]) if step == 0 else torch.tensor([0])
        x = torch.randn(len(y), D, dtype=torch.float64)
        old = bank.centers.clone()
        bank.update(x, y)
        torch.testing.assert_close(bank.centers[0], torch.lerp(x[y == 0].mean(0), old[0], mu_e ** (1 / 3)))
        if step == 0:
            torch.testing.assert_close(bank.centers[2], torch.lerp(x[2], old[2], mu_e))
    # after the epoch both classes keep mu_e of their epoch-old centers (plain ema: 0.25 ** 3 vs 0.25)
    assert torch.equal(bank.centers[1], start[1]) and torch.equal(bank.centers[3], start[3])
    bank.start_epoch()  # class 1 and 3 were not seen in epoch 2: they keep their epoch-1 counts
    assert bank.last_appearances[:4].tolist() == [3, 2, 1, 1]


def test_old_center_state_without_appearance_counts_still_loads():
    bank = CenterBank(C, D, rule="count_ema")
    bank.update(*_batch(11))
    state = {k: v for k, v in bank.state_dict().items() if "appearances" not in k}
    fresh = CenterBank(C, D, rule="count_ema")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.centers, bank.centers) and (fresh.last_appearances == 1).all()


def test_bad_epoch_momentum_names_its_key():
    with pytest.raises(ValueError, match="loss.ir.epoch_momentum"):
        CenterBank(C, D, rule="count_ema", epoch_momentum=1.5)


def test_exact_changes_centers_only_at_first_appearance_and_recompute_sets_exact_means():
    bank = CenterBank(C, D, rule="exact")
    x0, y0 = _batch(9)
    bank.update(x0, y0)
    first = bank.centers.clone()
    x1, y1 = _batch(10)
    bank.update(x1, y1)
    seen_before = torch.bincount(y0, minlength=C) > 0
    assert torch.equal(bank.centers[seen_before], first[seen_before])
    xs, ys = torch.cat([x0, x1]), torch.cat([y0, y1])
    bank.recompute(xs, ys)
    for c in ys.unique():
        torch.testing.assert_close(bank.centers[c], xs[ys == c].mean(0))


@pytest.mark.parametrize("name", IR)
def test_center_state_is_part_of_the_loss_state_dict(name):
    loss = build_loss(name, num_classes=C, feat_dim=D)
    x, y = _batch(11)
    loss(x, y)
    other = build_loss(name, num_classes=C, feat_dim=D)
    other.load_state_dict(loss.state_dict())
    for key in ("centers", "seen", "epoch_sums", "epoch_counts"):
        assert torch.equal(getattr(other.bank, key), getattr(loss.bank, key))


@pytest.mark.parametrize("name", [*IR, "unpg_ir_am_softmax"])
def test_warmup_classifies_with_learned_weights_then_hands_over_to_the_centers(name):
    warmup = 2
    loss = build_loss(name, num_classes=C, feat_dim=D, warmup_epochs=warmup)
    learned = [p for p in loss.parameters() if p.shape == (C, D)]
    assert len(learned) == 1
    for epoch in range(1, warmup + 3):
        loss.start_epoch()
        x, y = _batch(epoch)
        before = loss.class_weight().detach().clone()
        x.requires_grad_(True)
        loss.zero_grad(set_to_none=True)
        loss(x, y).loss.backward()
        in_warmup = epoch <= warmup
        assert (learned[0].grad is not None) == in_warmup
        assert torch.equal(before, learned[0].detach()) == in_warmup
        assert x.grad.abs().sum() > 0
        seen = torch.unique(y)
        bank = getattr(loss, "head", loss).bank  # UNPG wraps the IR head
        assert bank.seen[seen].all()  # centers are tracked during the warm-up too
    # after the hand-over the head is the plain IR head over the same centers
    plain = build_loss(name, num_classes=C, feat_dim=D)
    plain.load_state_dict({k: v for k, v in loss.state_dict().items() if k in plain.state_dict()})
    x, y = _batch(99)
    torch.testing.assert_close(loss.eval()(x, y).loss, plain.eval()(x, y).loss)


def test_warmup_count_is_checkpointed_and_old_state_dicts_still_load():
    loss = build_loss("ir_am_softmax", num_classes=C, feat_dim=D, warmup_epochs=1)
    for _ in range(2):
        loss.start_epoch()
    resumed = build_loss("ir_am_softmax", num_classes=C, feat_dim=D, warmup_epochs=1)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.uses_centers and int(resumed.epochs_started) == 2
    old = {k: v for k, v in build_loss("ir_am_softmax", num_classes=C, feat_dim=D).state_dict().items()
           if not k.endswith("epochs_started")}
    build_loss("ir_am_softmax", num_classes=C, feat_dim=D).load_state_dict(old)


def test_invalid_center_settings_fail_at_construction_naming_the_key():
    with pytest.raises(ValueError, match="loss.ir.warmup_epochs"):
        build_loss("ir_am_softmax", num_classes=C, feat_dim=D, warmup_epochs=-1)
    with pytest.raises(ValueError, match="loss.ir.rule.*epoch_mean"):
        build_loss("ir_am_softmax", num_classes=C, feat_dim=D, rule="mean")
    with pytest.raises(ValueError, match="loss.ir.momentum"):
        build_loss("ir_am_softmax", num_classes=C, feat_dim=D, momentum=1.5)


@pytest.mark.parametrize("name", ["ir_am_softmax", "unpg_ir_am_softmax"])
def test_ir_trains_in_a_plain_pytorch_loop(name):
    """20 lines a user would write: no engine, no hook; the loss keeps its centers."""
    torch.manual_seed(0)
    num_classes, dim = 6, 8
    protos = torch.randn(num_classes, 32) * 3
    model = torch.nn.Sequential(torch.nn.Linear(32, dim), torch.nn.BatchNorm1d(dim))
    criterion = build_loss(name, num_classes=num_classes, feat_dim=dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _epoch in range(8):
        criterion.start_epoch()
        for _ in range(5):
            y = torch.randint(0, num_classes, (24,))
            x = protos[y] + torch.randn(24, 32)
            loss = criterion(model(x), y).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert criterion.class_weight().abs().sum() > 0
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def test_ir_a_softmax_equals_sphereface_over_the_normalised_centers_by_autograd():
    loss = build_loss("ir_a_softmax", num_classes=9, feat_dim=5, label_smooth=0.0).double()
    loss.iteration.fill_(300)
    loss.bank.centers.copy_(torch.randn(9, 5, dtype=torch.float64, generator=_generator(14)))
    x = (torch.randn(6, 5, dtype=torch.float64, generator=_generator(15)) * 4).requires_grad_(True)
    y = torch.randint(0, 9, (6,), generator=_generator(16))
    loss.eval()  # no iteration step, so the reference sees the same lambda
    out = loss(x, y)
    (got,) = torch.autograd.grad(out.loss, x)
    xr = x.detach().clone().requires_grad_(True)
    cos = F.normalize(xr, dim=1) @ F.normalize(loss.bank.centers, dim=1).t()
    index = y.unsqueeze(1)
    mcos = cos.scatter(1, index, loss.target_margin(cos.gather(1, index)))
    ref = F.cross_entropy(xr.norm(dim=1, keepdim=True) * mcos, y)
    (want,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(got, want)


def test_ir_head_forward_and_feature_gradient_equal_the_plain_product():
    loss = build_loss("ir_am_softmax", num_classes=9, feat_dim=5, label_smooth=0.0)
    loss.bank.centers.copy_(torch.randn(9, 5, generator=_generator(11)))
    loss.bank.seen.fill_(True)
    w = F.normalize(loss.bank.centers, dim=1)  # the forward updates the centers after using them
    x = torch.randn(6, 5, generator=_generator(12), requires_grad=True)
    y = torch.randint(0, 9, (6,), generator=_generator(13))
    out = loss(x, y)
    (got,) = torch.autograd.grad(out.loss, x)
    xr = x.detach().clone().requires_grad_(True)
    logits = 30.0 * F.normalize(xr, dim=1) @ w.t()
    logits = logits - 30.0 * 0.35 * F.one_hot(y, 9)
    ref = F.cross_entropy(logits, y)
    (want,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [*IR, "unpg_ir_am_softmax"])
def test_every_ir_head_takes_the_center_rule_keys_from_the_config(name):
    from reid_ir.config import get_cfg
    from reid_ir.losses import build_loss_from_cfg

    cfg = get_cfg()
    cfg.loss.name = name
    cfg.loss.ir.rule, cfg.loss.ir.epoch_momentum = "count_ema", 0.3
    banks = [m for m in build_loss_from_cfg(cfg, num_classes=C, feat_dim=D).modules() if isinstance(m, CenterBank)]
    assert len(banks) == 1 and banks[0].rule == "count_ema" and banks[0].epoch_momentum == 0.3
