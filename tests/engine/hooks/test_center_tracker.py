"""CenterTrackerHook: the update rules, initialisation, exact mode, resume and torch.distributed."""

import io
import multiprocessing as mp

import pytest
import torch
import torch.distributed as dist

from reid_ir.engine.hooks.base import PRIORITY_STATE
from reid_ir.engine.hooks.center_tracker import CenterTrackerHook
from reid_ir.losses.centers import CenterBank, batch_class_sums, update_centers

C, D = 7, 5


class FakeTrainer:
    """The engine attributes the hook reads."""

    def __init__(self, features, pids, max_epoch=3):
        self.features, self.pids = features, pids
        self.epoch, self.max_epoch = 0, max_epoch
        self.step_outputs = {}
        self.extract_calls = 0

    def extract_train_embeddings(self):
        self.extract_calls += 1
        return self.features, self.pids

    def step(self, features, targets, hook):
        self.step_outputs = {"features": features, "targets": targets}
        hook.after_step()


def _train_set(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    pids = torch.cat(
        [torch.arange(C), torch.randint(0, C, (n - C,), generator=g)]
    )  # every class present
    return torch.randn(n, D, generator=g), pids


def _means(x, y):
    return torch.stack([x[y == c].mean(0) for c in range(C)])


def _hook(rule="ema", **kwargs):
    bank = CenterBank(C, D)
    hook = CenterTrackerHook(bank, update=rule, **kwargs)
    return bank, hook


def test_hook_runs_at_state_priority():
    assert CenterTrackerHook(CenterBank(C, D)).priority == PRIORITY_STATE


def test_before_train_initialises_centers_to_class_means_of_initial_network():
    x, y = _train_set()
    bank, hook = _hook()
    trainer = FakeTrainer(x, y)
    hook.trainer = trainer
    hook.before_train()
    torch.testing.assert_close(bank.centers, _means(x, y))
    assert bool(bank.initialized) and trainer.extract_calls == 1


def test_before_train_does_not_reinitialise_restored_centers():
    x, y = _train_set()
    bank, hook = _hook()
    bank.centers.fill_(3.0)
    bank.initialized.fill_(True)
    trainer = FakeTrainer(x, y)
    hook.trainer = trainer
    hook.before_train()
    assert trainer.extract_calls == 0 and torch.all(bank.centers == 3.0)


def test_ema_with_zero_momentum_gives_exact_class_means_of_the_batch():
    x, y = _train_set()
    bank, hook = _hook("ema", momentum=0.0)
    hook.trainer = trainer = FakeTrainer(x, y)
    trainer.step(x, y, hook)
    torch.testing.assert_close(bank.centers, _means(x, y), rtol=0, atol=1e-6)


def test_ema_rule_matches_the_formula_and_leaves_absent_classes_alone():
    x, y = _train_set(seed=1)
    bank, hook = _hook("ema", momentum=0.7)
    bank.centers.copy_(torch.randn(C, D))
    before = bank.centers.clone()
    batch = y != 3  # class 3 absent from the batch
    hook.trainer = trainer = FakeTrainer(x, y)
    trainer.step(x[batch], y[batch], hook)
    for c in range(C):
        if c == 3:
            assert torch.equal(bank.centers[c], before[c])
        else:
            expected = 0.7 * before[c] + 0.3 * x[batch][y[batch] == c].mean(0)
            torch.testing.assert_close(bank.centers[c], expected)


def test_center_loss_rule_matches_the_formula():
    x, y = _train_set(seed=2)
    bank, hook = _hook("center_loss", alpha=0.5)
    bank.centers.copy_(torch.randn(C, D))
    before = bank.centers.clone()
    hook.trainer = trainer = FakeTrainer(x, y)
    trainer.step(x[:20], y[:20], hook)
    for c in range(C):
        members = x[:20][y[:20] == c]
        expected = before[c] - 0.5 * (before[c] - members).sum(0) / (1 + len(members))
        torch.testing.assert_close(bank.centers[c], expected)


def test_exact_rule_recomputes_means_each_epoch_but_not_after_the_last():
    x, y = _train_set(seed=3)
    bank, hook = _hook("exact")
    hook.trainer = trainer = FakeTrainer(x, y, max_epoch=2)
    hook.before_train()
    trainer.step(x[:10] + 5.0, y[:10], hook)
    torch.testing.assert_close(bank.centers, _means(x, y))  # no per-step change
    trainer.features = x * 2.0  # the network moved during the epoch
    hook.after_epoch()
    torch.testing.assert_close(bank.centers, _means(2.0 * x, y), rtol=0, atol=1e-6)
    trainer.epoch = 1
    trainer.features = x * 3.0
    hook.after_epoch()
    assert trainer.extract_calls == 2, "the last epoch's centers are never used: no extra pass"


def test_batch_class_sums_gives_each_class_once_with_its_sum_and_count():
    x = torch.randn(9, D)
    y = torch.tensor([4, 1, 4, 4, 6, 1, 0, 6, 4])
    classes, sums, counts = batch_class_sums(x, y)
    assert classes.tolist() == [0, 1, 4, 6] and counts.tolist() == [1, 2, 4, 2]
    assert sums.shape == (4, D) and counts.dtype == x.dtype
    for c, row in zip(classes.tolist(), sums, strict=True):
        torch.testing.assert_close(row, x[y == c].sum(0))


def test_update_equals_the_per_class_formula_in_float64_bit_for_bit_order_of_samples():
    x = torch.randn(12, D, dtype=torch.float64)
    y = torch.tensor([2, 0, 2, 5, 0, 2, 6, 5, 2, 0, 6, 2])
    centers = torch.randn(C, D, dtype=torch.float64)
    before = centers.clone()
    update_centers(centers, x, y, "ema", momentum=0.25)
    for c in (0, 2, 5, 6):
        total = torch.zeros(D, dtype=torch.float64)
        for row in x[y == c]:  # samples added in batch order, as index_add_ does
            total = total + row
        mean = total / float((y == c).sum())
        assert torch.equal(centers[c], torch.lerp(mean, before[c], 0.25))


def test_update_with_many_repeated_labels_matches_the_per_class_formula():
    x = torch.randn(64, D)
    y = torch.randint(0, 3, (64,))
    centers = torch.randn(C, D)
    before = centers.clone()
    update_centers(centers, x, y, "ema", momentum=0.3)
    for c in range(3):
        torch.testing.assert_close(centers[c], 0.3 * before[c] + 0.7 * x[y == c].mean(0))
    assert torch.equal(centers[3:], before[3:])


def test_update_touches_only_the_batch_rows_of_a_large_center_table():
    centers = torch.randn(100_000, D)
    before = centers.clone()
    y = torch.tensor([5, 99_999, 5, 123])
    update_centers(centers, torch.randn(4, D), y, "ema", momentum=0.5)
    changed = (centers != before).any(1).nonzero().flatten().tolist()
    assert changed == [5, 123, 99_999]


def test_unknown_rule_is_rejected_naming_the_known_ones():
    with pytest.raises(ValueError, match="center_loss"):
        CenterTrackerHook(CenterBank(C, D), update="median")


def _run(hook, trainer, batches):
    for xb, yb in batches:
        trainer.step(xb, yb, hook)


def test_resume_restores_centers_bit_for_bit():
    x, y = _train_set(seed=4)
    batches = [(x[i : i + 12] * (1 + 0.1 * i), y[i : i + 12]) for i in range(0, 48, 12)]
    bank, hook = _hook("ema", momentum=0.9)
    hook.trainer = trainer = FakeTrainer(x, y)
    hook.before_train()
    _run(hook, trainer, batches[:2])
    buf = io.BytesIO()
    torch.save({"hook": hook.state_dict(), "bank": bank.state_dict()}, buf)
    _run(hook, trainer, batches[2:])
    straight = bank.centers.clone()

    buf.seek(0)
    saved = torch.load(buf)
    bank2, hook2 = _hook("ema", momentum=0.9)
    hook2.load_state_dict(saved["hook"])
    hook2.trainer = trainer2 = FakeTrainer(x, y)
    hook2.before_train()  # a resumed run must not re-initialise
    assert trainer2.extract_calls == 0
    _run(hook2, trainer2, batches[2:])
    assert torch.equal(bank2.centers, straight)


def test_load_state_dict_rejects_a_different_number_of_classes():
    _, hook = _hook()
    with pytest.raises(ValueError, match="shape"):
        hook.load_state_dict({"centers": torch.zeros(C + 1, D), "initialized": True})


def _ddp_worker(rank, world, init_file, x, y, out_file, rule):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        bank = CenterBank(C, D)
        bank.centers.copy_(torch.arange(C * D, dtype=torch.float32).view(C, D))
        hook = CenterTrackerHook(bank, update=rule, momentum=0.5, alpha=0.5)
        trainer = FakeTrainer(x[rank::world], y[rank::world])  # each rank sees its own shard
        hook.trainer = trainer
        if rule == "exact":
            hook.before_train()
        else:
            # Uneven batches: rank 1 gets one sample less (padding path).
            n = 9 - rank
            trainer.step(x[rank * 9 : rank * 9 + n], y[rank * 9 : rank * 9 + n], hook)
        torch.save(bank.centers, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("rule", ["ema", "center_loss", "exact"])
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

    bank = CenterBank(C, D)
    bank.centers.copy_(torch.arange(C * D, dtype=torch.float32).view(C, D))
    if rule == "exact":
        expected = _means(x, y)
    else:
        xb, yb = torch.cat([x[0:9], x[9:17]]), torch.cat([y[0:9], y[9:17]])
        update_centers(bank.centers, xb, yb, rule, momentum=0.5, alpha=0.5)
        expected = bank.centers
    torch.testing.assert_close(c0, expected, rtol=1e-6, atol=1e-5)
