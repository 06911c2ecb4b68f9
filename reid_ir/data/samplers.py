"""Training samplers, deterministic given (seed, epoch), with rank sharding.

torchreid's samplers draw from the global ``random`` / ``np.random`` state, so a
resumed run does not see the batches it would have seen. The samplers here
re-implement them with the same semantics but draw from a numpy Generator
seeded from ``(seed, epoch)``; call :meth:`SeededSampler.set_epoch` before each
epoch. ``ClassBalancedSampler`` is reid_ir's own.

With ``world_size > 1`` every rank computes the same epoch order, cuts it into
batches of ``batch_size`` (the per-rank batch size, as with torch DDP), drops
the incomplete last batch and the leftover batches that cannot be shared
equally, and takes every ``world_size``-th batch starting at ``rank``. Identity
samplers build each batch from whole groups of ``num_instances`` images, so a
group never straddles two batches or two ranks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = [
    "SeededSampler",
    "RandomSampler",
    "SequentialSampler",
    "RandomIdentitySampler",
    "RandomDomainSampler",
    "RandomDatasetSampler",
    "ClassBalancedSampler",
    "build_train_sampler",
    "SAMPLERS",
]


def _items(data_source: Any) -> Sequence:
    """The ``(path, pid, camid[, dsetid])`` tuples of a list or of a torchreid dataset."""
    return (
        data_source.data
        if hasattr(data_source, "data") and not isinstance(data_source, (list, tuple))
        else data_source
    )


def _group(data_source: Sequence, field: int) -> dict[int, list[int]]:
    """Indices grouped by one field of the tuples (1: pid, 2: camid, 3: dsetid), keys in sorted order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(data_source):
        groups[int(item[field]) if len(item) > field else 0].append(i)
    return {k: groups[k] for k in sorted(groups)}


class SeededSampler(Sampler):
    """Base class: an epoch's index order is a pure function of (seed, epoch).

    Args:
        data_source: ``(path, pid, camid[, dsetid])`` tuples (torchreid's ``dataset.train``).
        batch_size: Per-rank batch size.
        seed: Seed of the run.
        rank: This process's rank.
        world_size: Number of ranks.
    """

    def __init__(
        self,
        data_source: Sequence,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size"
            )
        self.data_source = _items(data_source)
        if len(self.data_source) == 0:
            raise ValueError(f"{type(self).__name__}: the data source is empty")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._cache: tuple[int, list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``iter()`` yields."""
        self.epoch = int(epoch)

    def generator(self) -> np.random.Generator:
        """The Generator of the current epoch (the same on every rank)."""
        return np.random.default_rng([self.seed, self.epoch])

    def _order(self, rng: np.random.Generator) -> list[int]:
        """The whole epoch's index order (all ranks), made of whole batches where it matters."""
        raise NotImplementedError

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        if self._cache is None or self._cache[0] != self.epoch:
            order = [int(i) for i in self._order(self.generator())]
            if self.world_size > 1:
                bs, ws = self.batch_size, self.world_size
                n_batches = len(order) // bs // ws * ws
                order = [
                    i for b in range(self.rank, n_batches, ws) for i in order[b * bs : (b + 1) * bs]
                ]
            self._cache = (self.epoch, order)
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


class RandomSampler(SeededSampler):
    """A random permutation of all images (torch's ``RandomSampler``)."""

    def _order(self, rng: np.random.Generator) -> list[int]:
        return rng.permutation(len(self.data_source)).tolist()


class SequentialSampler(SeededSampler):
    """All images in dataset order, every epoch (torch's ``SequentialSampler``)."""

    def _order(self, rng: np.random.Generator) -> list[int]:
        return list(range(len(self.data_source)))


class _IdentityBatches(SeededSampler):
    """Shared checks of samplers whose batches are P identities x K instances."""

    def __init__(
        self, data_source: Sequence, batch_size: int, num_instances: int = 4, **kwargs: Any
    ) -> None:
        super().__init__(data_source, batch_size, **kwargs)
        if num_instances < 1 or batch_size % num_instances:
            raise ValueError(
                f"batch_size={batch_size} must be a positive multiple of num_instances={num_instances} "
                "(each batch holds whole identity groups)"
            )
        self.num_instances = int(num_instances)
        self.num_pids_per_batch = batch_size // num_instances
        self.index_dic = _group(self.data_source, 1)
        self.pids = list(self.index_dic)
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(
                f"{type(self).__name__}: {len(self.pids)} identities, fewer than the "
                f"{self.num_pids_per_batch} per batch (batch_size={batch_size} / num_instances={num_instances})"
            )


class RandomIdentitySampler(_IdentityBatches):
    """torchreid's ``RandomIdentitySampler``: P random identities x K instances per batch.

    Each identity's images are shuffled and cut into groups of K (identities
    with fewer than K images are padded by sampling with replacement; leftovers
    are dropped); batches draw P identities without replacement from those that
    still have groups, until fewer than P remain.
    """

    def _order(self, rng: np.random.Generator) -> list[int]:
        k = self.num_instances
        groups: dict[int, list[list[int]]] = {}
        for pid in self.pids:
            idxs = np.asarray(self.index_dic[pid])
            idxs = (
                rng.choice(idxs, size=k, replace=True) if len(idxs) < k else rng.permutation(idxs)
            )
            groups[pid] = [idxs[j : j + k].tolist() for j in range(0, len(idxs) - k + 1, k)]
        avai = list(self.pids)
        order: list[int] = []
        while len(avai) >= self.num_pids_per_batch:
            chosen = [
                avai[j] for j in rng.choice(len(avai), self.num_pids_per_batch, replace=False)
            ]
            for pid in chosen:
                order.extend(groups[pid].pop(0))
                if not groups[pid]:
                    avai.remove(pid)
        return order


class ClassBalancedSampler(_IdentityBatches):
    """Identities drawn uniformly, then K images of each (reid_ir).

    Every batch holds P = batch_size / K distinct identities drawn uniformly at
    random, and K images of each, drawn without replacement when the identity
    has at least K images and with replacement otherwise. An epoch has
    ``len(data_source) // batch_size`` batches (at least one), so it sees about
    as many images as there are, but every identity equally often.
    """

    def _order(self, rng: np.random.Generator) -> list[int]:
        k, order = self.num_instances, []
        for _ in range(max(1, len(self.data_source) // self.batch_size)):
            for j in rng.choice(len(self.pids), self.num_pids_per_batch, replace=False):
                idxs = self.index_dic[self.pids[j]]
                order.extend(rng.choice(idxs, size=k, replace=len(idxs) < k).tolist())
        return order


class _DomainBatches(SeededSampler):
    """torchreid's Random{Domain,Dataset}Sampler: N groups x (batch_size / N) images per batch.

    Draws N of the groups (cameras or datasets) without replacement, then
    batch_size / N unused images from each, until some drawn group has fewer
    unused images left than that.
    """

    field = 2
    what = "cameras"

    def __init__(
        self, data_source: Sequence, batch_size: int, n_groups: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(data_source, batch_size, **kwargs)
        self.groups = _group(self.data_source, self.field)
        if n_groups is None or n_groups <= 0:
            n_groups = len(self.groups)
        if n_groups > len(self.groups) or batch_size % n_groups:
            raise ValueError(
                f"{type(self).__name__}: {n_groups} {self.what} per batch: expected at most "
                f"{len(self.groups)} (the data has) and a divisor of batch_size={batch_size}"
            )
        self.n_groups, self.per_group = int(n_groups), batch_size // n_groups
        small = {g: len(v) for g, v in self.groups.items() if len(v) < self.per_group}
        if small:
            raise ValueError(
                f"{type(self).__name__}: {self.what} {small} have fewer than {self.per_group} images"
            )

    def _order(self, rng: np.random.Generator) -> list[int]:
        left = {g: list(v) for g, v in self.groups.items()}
        keys, order = list(self.groups), []
        while True:
            stop = False
            for j in rng.choice(len(keys), self.n_groups, replace=False):
                pool = left[keys[j]]
                picked = set(rng.choice(len(pool), self.per_group, replace=False).tolist())
                order.extend(pool[i] for i in sorted(picked))
                left[keys[j]] = [x for i, x in enumerate(pool) if i not in picked]
                stop = stop or len(left[keys[j]]) < self.per_group
            if stop:
                return order


class RandomDomainSampler(_DomainBatches):
    """torchreid's ``RandomDomainSampler`` (cameras as domains), seeded."""

    field, what = 2, "cameras"


class RandomDatasetSampler(_DomainBatches):
    """torchreid's ``RandomDatasetSampler`` (dsetid as groups), seeded."""

    field, what = 3, "datasets"


SAMPLERS: dict[str, type[SeededSampler]] = {
    "RandomSampler": RandomSampler,
    "SequentialSampler": SequentialSampler,
    "RandomIdentitySampler": RandomIdentitySampler,
    "RandomDomainSampler": RandomDomainSampler,
    "RandomDatasetSampler": RandomDatasetSampler,
    "ClassBalancedSampler": ClassBalancedSampler,
}


def build_train_sampler(
    data_source: Sequence,
    name: str,
    batch_size: int,
    num_instances: int = 4,
    num_cams: int = 1,
    num_datasets: int = 1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> SeededSampler:
    """Build a training sampler by name (the ``sampler.train_sampler`` key).

    Args:
        data_source: ``(path, pid, camid[, dsetid])`` tuples, e.g. torchreid's
            ``datamanager.train_loader.dataset.train``.
        name: One of :data:`SAMPLERS`.
        batch_size: Per-rank batch size (the DataLoader's; use ``drop_last=True``).
        num_instances: Images per identity (RandomIdentitySampler, ClassBalancedSampler).
        num_cams: Cameras per batch (RandomDomainSampler; <= 0: all).
        num_datasets: Datasets per batch (RandomDatasetSampler; <= 0: all).
        seed: Seed; each epoch's order depends only on (seed, epoch).
        rank: This process's rank.
        world_size: Number of ranks; each gets a disjoint, equal share of the batches.

    Returns:
        A sampler with ``set_epoch(epoch)``.

    Raises:
        ValueError: Unknown name (listing the known ones) or inconsistent sizes.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown train sampler {name!r}; known samplers: {list(SAMPLERS)}")
    common = {"seed": seed, "rank": rank, "world_size": world_size}
    cls = SAMPLERS[name]
    if issubclass(cls, _IdentityBatches):
        return cls(data_source, batch_size, num_instances=num_instances, **common)
    if cls is RandomDomainSampler:
        return cls(data_source, batch_size, n_groups=num_cams, **common)
    if cls is RandomDatasetSampler:
        return cls(data_source, batch_size, n_groups=num_datasets, **common)
    return cls(data_source, batch_size, **common)
