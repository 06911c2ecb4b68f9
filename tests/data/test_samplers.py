"""Samplers: torchreid's semantics, deterministic in (seed, epoch), rank-sharded."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from reid_ir.data.samplers import SAMPLERS, build_train_sampler


def _data(counts=(1, 2, 3, 5, 8, 13, 4, 4, 6, 2), cams=4, dsets=2):
    """(path, pid, camid, dsetid) tuples with the given per-identity image counts."""
    out = []
    for pid, n in enumerate(counts):
        for j in range(n):
            out.append((f"{pid}_{j}.jpg", pid, j % cams, pid % dsets))
    return out


DATA = _data()
KW = dict(batch_size=8, num_instances=2, num_cams=2, num_datasets=2)


def _batches(order, bs):
    return [order[i : i + bs] for i in range(0, len(order) - bs + 1, bs)]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_order_depends_only_on_seed_and_epoch(name):
    a = build_train_sampler(DATA, name, seed=7, **KW)
    b = build_train_sampler(DATA, name, seed=7, **KW)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    a.set_epoch(3)
    first = list(a)
    random.seed(2)
    np.random.seed(2)
    torch.manual_seed(2)
    b.set_epoch(3)
    assert list(b) == first  # global RNG state is irrelevant
    assert len(a) == len(first)
    if name != "SequentialSampler":
        a.set_epoch(4)
        assert list(a) != first
        c = build_train_sampler(DATA, name, seed=8, **KW)
        c.set_epoch(3)
        assert list(c) != first


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_does_not_consume_global_rng(name):
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    s = build_train_sampler(DATA, name, **KW)
    list(s)
    assert random.getstate() == state[0]
    assert (np.random.get_state()[1] == state[1]).all()
    assert torch.equal(torch.get_rng_state(), state[2])


def test_random_sampler_is_a_permutation():
    s = build_train_sampler(DATA, "RandomSampler", batch_size=8)
    assert sorted(s) == list(range(len(DATA)))


@pytest.mark.parametrize("name", ["RandomIdentitySampler", "ClassBalancedSampler"])
def test_identity_batches_hold_whole_groups_of_distinct_identities(name):
    s = build_train_sampler(DATA, name, batch_size=8, num_instances=2, seed=1)
    for epoch in range(5):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) % 8 == 0
        for batch in _batches(order, 8):
            pids = [DATA[i][1] for i in batch]
            groups = [pids[j : j + 2] for j in range(0, 8, 2)]
            assert all(g[0] == g[1] for g in groups)
            assert len({g[0] for g in groups}) == 4


def test_random_identity_sampler_pads_small_identities_and_uses_big_ones_without_replacement():
    s = build_train_sampler(DATA, "RandomIdentitySampler", batch_size=4, num_instances=2, seed=0)
    order = list(s)
    counts = Counter(order)
    singleton = [i for i, t in enumerate(DATA) if t[1] == 0]
    assert all(c == 1 for i, c in counts.items() if i not in singleton)
    assert len(order) <= len(DATA) + 1


def test_class_balanced_sampler_draws_identities_uniformly():
    counts = (1,) * 5 + (40,) * 5
    data = _data(counts)
    s = build_train_sampler(data, "ClassBalancedSampler", batch_size=8, num_instances=4, seed=0)
    seen = Counter()
    for epoch in range(100):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) == len(data) // 8 * 8  # epoch length ~ dataset size
        seen.update(data[i][1] for i in order[::4])
    freq = np.array([seen[p] for p in range(10)], dtype=float) / sum(seen.values())
    assert np.abs(freq - 0.1).max() < 0.03  # head and tail identities equally often
    # tail identities (one image) are repeated with replacement inside their group
    s.set_epoch(0)
    order = list(s)
    for j in range(0, len(order), 4):
        if data[order[j]][1] >= 5:
            assert len(set(order[j : j + 4])) == 4


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_equal_shares_of_whole_batches(name, world_size):
    data = _data(tuple(range(2, 22)))
    kw = dict(KW, batch_size=4)
    full = build_train_sampler(data, name, seed=5, **kw)
    full.set_epoch(2)
    batches = _batches(list(full), 4)
    shares = []
    for rank in range(world_size):
        s = build_train_sampler(data, name, seed=5, rank=rank, world_size=world_size, **kw)
        s.set_epoch(2)
        shares.append(_batches(list(s), 4))
        assert len(s) == len(shares[-1]) * 4
    assert len({len(sh) for sh in shares}) == 1 and len(shares[0]) > 0
    flat = [tuple(b) for sh in shares for b in sh]
    assert len(set(flat)) == len(flat)  # no batch on two ranks
    assert set(flat) <= {tuple(b) for b in batches}
    assert len(flat) == len(batches) // world_size * world_size


def test_domain_sampler_batches_draw_from_the_requested_number_of_cameras():
    data = _data(tuple([12] * 8), cams=4)
    s = build_train_sampler(data, "RandomDomainSampler", batch_size=8, num_cams=2, seed=0)
    for batch in _batches(list(s), 8):
        cams = [data[i][2] for i in batch]
        assert len(set(cams)) == 2 and Counter(cams).most_common(1)[0][1] == 4
    assert len(set(s)) == len(list(s))  # without replacement within an epoch


def test_unknown_name_lists_known_samplers():
    with pytest.raises(ValueError, match="RandomIdentitySampler.*ClassBalancedSampler"):
        build_train_sampler(DATA, "BalancedSampler", batch_size=8)


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(name="RandomIdentitySampler", batch_size=6, num_instances=4),
            "multiple of num_instances",
        ),
        (dict(name="ClassBalancedSampler", batch_size=64, num_instances=2), "identities"),
        (dict(name="RandomDomainSampler", batch_size=8, num_cams=5), "cameras"),
        (dict(name="RandomSampler", batch_size=8, rank=2, world_size=2), "rank=2"),
    ],
)
def test_inconsistent_sizes_fail_with_the_values(kw, match):
    with pytest.raises(ValueError, match=match):
        build_train_sampler(DATA, **kw)


def test_dataloader_batches_align_with_identity_groups():
    s = build_train_sampler(DATA, "RandomIdentitySampler", batch_size=4, num_instances=2, seed=0)
    dl = torch.utils.data.DataLoader([t[1] for t in DATA], batch_size=4, sampler=s, drop_last=True)
    for batch in dl:
        assert batch[0] == batch[1] and batch[2] == batch[3]
