"""Center state in the loss (CenterBank) and its epoch-level hook: rules' arithmetic, exact
recomputation, checkpoint state, resume and torch.distributed."""

import io
import multiprocessing as mp

import pytest
import torch
import torch.distributed as dist

from reid_ir.engine.hooks.base import PRIORITY_STATE
from reid_ir.engine.hooks.center_tracker import CenterTrackerHook, center_tracker_hooks
from reid_ir.losses import build_loss
from reid_ir.losses.centers import CenterBank, batch_class_sums

C, D = 7, 5


class FakeTrainer:
    """The engine attributes the hook reads."""

    def __init__(self, features, pids, max_epoch=3):
        self.features, self.pids = features, pids
        self.epoch, self.max_epoch = 0, max_epoch
        self.extract_calls = 0

    def extract_train_embeddings(self):
        self.extract_calls += 1
        return self.features, self.pids


def _train_set(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    pids = torch.cat([torch.arange(C), torch.randint(0, C, (n - C,), generator=g)])
    return torch.randn(n, D, generator=g), pids


def _means(x, y):
    return torch.stack([x[y == c].mean(0) for c in range(C)])


def test_hook_runs_at_state_priority_and_is_built_from_the_loss_also_inside_wrappers():
    assert CenterTrackerHook(CenterBank(C, D)).priority == PRIORITY_STATE
    for name in ("ir_am_softmax", "unpg_ir_am_softmax"):
        loss = build_loss(name, num_classes=C, feat_dim=D)
        (hook,) = center_tracker_hooks(loss)
        assert hook.bank is [m for m in loss.modules() if isinstance(m, CenterBank)][0]
    assert center_tracker_hooks(build_loss("am_softmax", num_classes=C, feat_dim=D)) == []


def test_exact_rule_recomputes_means_each_epoch_but_not_after_the_last():
    x, y = _train_set(seed=3)
    bank = CenterBank(C, D, rule="exact")
    hook = CenterTrackerHook(bank)
    hook.trainer = trainer = FakeTrainer(x, y, max_epoch=2)
    bank.update(x, y)  # first appearance: every class gets its batch mean
    bank.update(x[:10] + 5.0, y[:10])  # no per-step change after that
    torch.testing.assert_close(bank.centers, _means(x, y))
    trainer.features = x * 2.0  # the network moved during the epoch
    hook.after_epoch()
    torch.testing.assert_close(bank.centers, _means(2.0 * x, y), rtol=0, atol=1e-6)
    trainer.epoch = 1
    hook.after_epoch()
    assert trainer.extract_calls == 1, "the last epoch's centers are never used: no extra pass"


@pytest.mark.parametrize("rule", ["epoch_mean", "ema", "count_ema", "center_loss"])
def test_per_step_rules_never_make_a_feature_pass(rule):
    x, y = _train_set()
    hook = CenterTrackerHook(CenterBank(C, D, rule=rule))
    hook.trainer = trainer = FakeTrainer(x, y)
    hook.after_epoch()
    assert trainer.extract_calls == 0


def test_batch_class_sums_gives_each_class_once_with_its_sum_and_count():
    x = torch.randn(9, D)
    y = torch.tensor([4, 1, 4, 4, 6, 1, 0, 6, 4])
    classes, sums, counts = batch_class_sums(x, y)
    assert classes.tolist() == [0, 1, 4, 6] and counts.tolist() == [1, 2, 4, 2]
    assert sums.shape == (4, D) and counts.dtype == x.dtype
    for c, row in zip(classes.tolist(), sums, strict=True):
        torch.testing.assert_close(row, x[y == c].sum(0))


def test_ema_equals_the_per_class_formula_in_float64_bit_for_bit_order_of_samples():
    x = torch.randn(12, D, dtype=torch.float64)
    y = torch.tensor([2, 0, 2, 5, 0, 2, 6, 5, 2, 0, 6, 2])
    bank = CenterBank(C, D, rule="ema", momentum=0.25).double()
    bank.centers.copy_(torch.randn(C, D, dtype=torch.float64))
    bank.seen.fill_(True)
    before = bank.centers.clone()
    bank.update(x, y)
    for c in (0, 2, 5, 6):
        total = torch.zeros(D, dtype=torch.float64)
        for row in x[y == c]:  # samples added in batch order, as index_add_ does
            total = total + row
        mean = total / float((y == c).sum())
        assert torch.equal(bank.centers[c], torch.lerp(mean, before[c], 0.25))


def test_update_touches_only_the_batch_rows_of_a_large_center_table():
    bank = CenterBank(100_000, D, rule="epoch_mean")
    bank.centers.normal_()
    before = bank.centers.clone()
    bank.update(torch.randn(4, D), torch.tensor([5, 99_999, 5, 123]))
    changed = (bank.centers != before).any(1).nonzero().flatten().tolist()
    assert changed == [5, 123, 99_999]


@pytest.mark.parametrize("rule", ["epoch_mean", "ema", "count_ema"])
def test_resume_from_the_loss_state_dict_continues_bit_for_bit(rule):
    x, y = _train_set(seed=4)
    batches = [(x[i : i + 12] * (1 + 0.1 * i), y[i : i + 12]) for i in range(0, 48, 12)]
    bank = CenterBank(C, D, rule=rule, momentum=0.9)
    for xb, yb in batches[:2]:
        bank.update(xb, yb)
    buf = io.BytesIO()
    torch.save(bank.state_dict(), buf)

    def next_epoch(b):  # the epoch boundary right after the checkpoint, then two batches
        b.start_epoch()
        for xb, yb in batches[2:]:
            b.update(xb, yb)

    next_epoch(bank)
    buf.seek(0)
    resumed = CenterBank(C, D, rule=rule, momentum=0.9)
    resumed.load_state_dict(torch.load(buf))
    next_epoch(resumed)
    assert torch.equal(resumed.centers, bank.centers)
    assert torch.equal(resumed.last_appearances, bank.last_appearances)


def test_hook_state_round_trips_and_rejects_a_different_number_of_classes():
    bank = CenterBank(C, D)
    bank.update(*_train_set())
    hook = CenterTrackerHook(bank)
    other = CenterTrackerHook(CenterBank(C, D))
    other.load_state_dict(hook.state_dict())
    assert torch.equal(other.centers, bank.centers) and torch.equal(other.bank.seen, bank.seen)
    with pytest.raises(ValueError, match="shape"):
        hook.load_state_dict({"centers": torch.zeros(C + 1, D)})


def _ddp_worker(rank, world, init_file, x, y, out_file, rule):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        bank = CenterBank(C, D, rule=rule, momentum=0.5, alpha=0.5)
        if rule == "exact":
            bank.recompute(x[rank::world], y[rank::world])  # each rank sees its own shard
        else:
            n = 9 - rank  # uneven batches: rank 1 gets one sample less (padding path)
            for step in range(2):
                lo = step * 18 + rank * 9
                bank.update(x[lo : lo + n], y[lo : lo + n])
        torch.save(bank.centers, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("rule", ["epoch_mean", "ema", "count_ema", "center_loss", "exact"])
def test_distributed_ranks_hold_identical_centers_equal_to_single_process(tmp_path, rule):
    x, y = _train_set(seed=5)
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, 2, tmp_path / "init", x, y, tmp_path / "c", rule))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    c0, c1 = torch.load(tmp_path / "c.0"), torch.load(tmp_path / "c.1")
    assert torch.equal(c0, c1)
    bank = CenterBank(C, D, rule=rule, momentum=0.5, alpha=0.5)
    if rule == "exact":
        bank.recompute(x, y)
    else:
        for step in range(2):
            lo = step * 18
            bank.update(torch.cat([x[lo : lo + 9], x[lo + 9 : lo + 17]]),
                        torch.cat([y[lo : lo + 9], y[lo + 9 : lo + 17]]))
    torch.testing.assert_close(c0, bank.centers, rtol=1e-6, atol=1e-5)
