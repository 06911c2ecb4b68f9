"""cfg -> torchreid ImageDataManager with reid_ir's datasets and samplers."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from reid_ir import compat

logger = logging.getLogger(__name__)

#: environment variable that overrides ``data.root`` when the config keeps the default
DATA_ROOT_ENV = "REID_IR_DATA_ROOT"


def imagedata_kwargs(cfg: Any) -> dict:
    """Keyword arguments of torchreid's ``ImageDataManager`` (deep-person-reid's mapping)."""
    root = cfg.data.root
    if root == "reid-data" and os.environ.get(DATA_ROOT_ENV):
        root = os.environ[DATA_ROOT_ENV]
    return {
        "root": root,
        "sources": list(cfg.data.sources),
        "targets": list(cfg.data.targets),
        "height": cfg.data.height,
        "width": cfg.data.width,
        "transforms": list(cfg.data.transforms),
        "k_tfm": cfg.data.k_tfm,
        "norm_mean": list(cfg.data.norm_mean),
        "norm_std": list(cfg.data.norm_std),
        "use_gpu": bool(cfg.use_gpu and torch.cuda.is_available()),
        "split_id": cfg.data.split_id,
        "combineall": cfg.data.combineall,
        "load_train_targets": cfg.data.load_train_targets,
        "batch_size_train": cfg.train.batch_size,
        "batch_size_test": cfg.test.batch_size,
        "workers": cfg.data.workers,
        "num_instances": cfg.sampler.num_instances,
        "num_cams": cfg.sampler.num_cams,
        "num_datasets": cfg.sampler.num_datasets,
        "train_sampler": cfg.sampler.train_sampler,
        "train_sampler_t": cfg.sampler.train_sampler_t,
        "cuhk03_labeled": cfg.cuhk03.labeled_images,
        "cuhk03_classic_split": cfg.cuhk03.classic_split,
        "market1501_500k": cfg.market1501.use_500k_distractors,
    }


def sampler_kwargs(cfg: Any) -> dict:
    """Keyword arguments of :func:`reid_ir.data.samplers.build_train_sampler`."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return {
        "name": cfg.sampler.train_sampler,
        "batch_size": cfg.train.batch_size,
        "num_instances": cfg.sampler.num_instances,
        "num_cams": cfg.sampler.num_cams,
        "num_datasets": cfg.sampler.num_datasets,
        "seed": cfg.train.seed,
        "rank": rank,
        "world_size": world,
    }


def build_train_loader(dataset, sampler, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """The training DataLoader over ``dataset`` with a seeded, epoch-aware ``sampler``."""
    generator = torch.Generator()
    generator.manual_seed(getattr(sampler, "seed", 0))
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        generator=generator,
        persistent_workers=False,
    )


def build_datamanager(cfg: Any):
    """Register our datasets, build torchreid's ImageDataManager, swap in our sampler.

    torchreid builds its train loader with its own (unseeded) samplers; we
    replace it with one whose order depends only on (train.seed, epoch) and
    that knows ``ClassBalancedSampler`` and distributed ranks, so a resumed or
    distributed run sees the same batches.
    """
    from reid_ir.data.datasets import dataset_kwargs_from_cfg, register_datasets
    from reid_ir.data.samplers import build_train_sampler

    if cfg.data.type != "image":
        raise ValueError(f"data.type {cfg.data.type!r} is not supported; reid_ir handles 'image' datasets")
    register_datasets(**dataset_kwargs_from_cfg(cfg))
    kwargs = imagedata_kwargs(cfg)
    kwargs["train_sampler"] = "SequentialSampler"  # replaced below; keeps torchreid from drawing random numbers
    dm = compat.data.ImageDataManager(**kwargs)
    train_set = dm.train_loader.dataset
    if len(train_set.train) < cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} is larger than the training set "
            f"({len(train_set.train)} images in {list(cfg.data.sources)})"
        )
    sampler = build_train_sampler(train_set.train, **sampler_kwargs(cfg))
    workers = 0 if cfg.train.deterministic else cfg.data.workers
    dm.train_loader = build_train_loader(train_set, sampler, cfg.train.batch_size, workers, kwargs["use_gpu"])
    for loaders in dm.test_loader.values():
        for split, loader in loaders.items():
            if len(loader.dataset) == 0:
                raise ValueError(f"the {split} set of {list(dm.test_loader)} is empty; check data.root and data.targets")
    return dm
