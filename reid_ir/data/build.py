"""cfg -> torchreid ImageDataManager with reid_ir's datasets and samplers.

Before torchreid sees the config, :func:`check_data_cfg` catches what would
otherwise fail deep inside it (or worse, start a download or hang): a missing
dataset folder (said with the layout expected), image names that do not parse,
a split manifest of another dataset and invalid split parameters. Images are
then read through :mod:`reid_ir.data.checked` (an unreadable image is named, or
skipped with ``data.skip_corrupt``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from reid_ir import compat
from reid_ir.errors import ConfigError, DataError, DatasetNotFoundError

logger = logging.getLogger(__name__)

#: environment variable that overrides ``data.root`` when the config keeps the default
DATA_ROOT_ENV = "REID_IR_DATA_ROOT"


def data_root(cfg: Any) -> str:
    """``data.root``, or ``$REID_IR_DATA_ROOT`` when the config keeps the default ``reid-data``."""
    root = cfg.data.root
    if root == "reid-data" and os.environ.get(DATA_ROOT_ENV):
        root = os.environ[DATA_ROOT_ENV]
    return root


def _root_origin(cfg: Any) -> str:
    root = data_root(cfg)
    origin = f"${DATA_ROOT_ENV}" if root != cfg.data.root else "data.root"
    return f"{origin} = {os.path.abspath(os.path.expanduser(root))}"


def check_data_cfg(cfg: Any) -> None:
    """Check datasets and split settings before torchreid builds anything.

    Raises:
        DatasetNotFoundError: a Market-1501 / DukeMTMC-reID folder is missing
            (says where it looked and the layout expected).
        DataError: an image name does not parse (names the file) or the split
            manifest belongs to another dataset.
        ConfigError: a split parameter is invalid.
    """
    from reid_ir.data import imbalance
    from reid_ir.data.datasets import BASE_DATASETS, SPLIT_DIRS, find_data_dir, scan_dir

    root = data_root(cfg)
    names = list(dict.fromkeys([*cfg.data.sources, *cfg.data.targets]))
    imb = [
        n[: -len("_imb")]
        for n in names
        if n.endswith("_imb") and n[: -len("_imb")] in BASE_DATASETS
    ]
    manifest_path = cfg.data.imbalance.manifest
    if imb and manifest_path:
        manifest = imbalance.load_manifest(manifest_path)
        for base in imb:
            if manifest.get("dataset") != base:
                raise DataError(
                    f"data.imbalance.manifest {manifest_path} is a split of {manifest.get('dataset')!r}, "
                    f"but {base}_imb needs a split of {base!r}; make one with "
                    f"tools/make_imbalance_split.py --dataset {base}"
                )
    if imb and not manifest_path:
        params = {
            k: cfg.data.imbalance[k]
            for k in cfg.data.imbalance
            if k not in ("profile", "manifest", "seed", "val_ids")
        }
        try:
            imbalance.profile_params(cfg.data.imbalance.profile, **params)
        except ValueError as e:
            raise ConfigError(f"invalid split parameters (data.imbalance.*): {e}") from None
    for name in names:
        if name not in BASE_DATASETS:
            continue
        try:
            data_dir = find_data_dir(root, name)
        except FileNotFoundError as e:
            raise DatasetNotFoundError(
                f"dataset {name!r} not found ({_root_origin(cfg)}): {e}"
            ) from None
        for split in SPLIT_DIRS:  # strict names (torchreid's regex fails without naming the file)
            items = scan_dir(data_dir / split, BASE_DATASETS[name][1])
            if not any(pid != -1 for _, pid, _ in items):
                what = {"bounding_box_train": "training", "bounding_box_test": "gallery"}.get(
                    split, split
                )
                role = "target" if name in cfg.data.targets else "source"
                raise DataError(
                    f"the {what} set of {role} dataset {name!r} is empty: no usable images in {data_dir / split} "
                    f"(expected *.jpg named like the {BASE_DATASETS[name][1]} layout; junk images do not count)"
                )


def imagedata_kwargs(cfg: Any) -> dict:
    """Keyword arguments of torchreid's ``ImageDataManager`` (deep-person-reid's mapping)."""
    return {
        "root": data_root(cfg),
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


def build_train_loader(
    dataset, sampler, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """The training DataLoader over ``dataset`` with a seeded, epoch-aware ``sampler``.

    With ``pin_memory`` (training on CUDA) and workers, the workers persist
    across epochs: no restart and refill of the prefetch queue every epoch.
    Persistent workers draw their random seeds once, at the first epoch, so a
    run resumed at an epoch boundary augments differently from an
    uninterrupted one; CUDA training is not bit-reproducible anyway. On the
    CPU the workers are restarted every epoch with seeds from (seed, epoch),
    which keeps such resumes exact.
    """
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
        persistent_workers=bool(pin_memory and workers > 0),
    )


def _build_torchreid_datamanager(cfg: Any, kwargs: dict):
    try:
        return compat.data.ImageDataManager(**kwargs)
    except RuntimeError as e:  # torchreid's check_before_run / download_dataset
        if "not found" in str(e) or "manually prepared" in str(e):
            raise DatasetNotFoundError(
                f"{e} ({_root_origin(cfg)}; see torchreid's dataset docs for the layout)"
            ) from None
        raise
    except IndexError:  # torchreid's Dataset reads train[0], query[0], gallery[0]
        raise DataError(
            f"a train, query or gallery split of {list(cfg.data.sources)} / {list(cfg.data.targets)} is empty "
            f"({_root_origin(cfg)})"
        ) from None


def train_class_counts(datamanager: Any) -> torch.Tensor:
    """(C,) training images per class (C = ``num_train_pids``), from the train loader's dataset.

    Args:
        datamanager: a manager whose ``train_loader.dataset.train`` lists
            ``(path, pid, camid, ...)`` tuples, or has no train loader (eval only).
    """
    loader = datamanager.train_loader
    pids = [item[1] for item in loader.dataset.train] if loader is not None else []
    return torch.bincount(
        torch.as_tensor(pids, dtype=torch.int64), minlength=datamanager.num_train_pids
    )


def build_datamanager(cfg: Any):
    """Register our datasets, build torchreid's ImageDataManager, swap in our sampler.

    torchreid builds its train loader with its own (unseeded) samplers; we
    replace it with one whose order depends only on (train.seed, epoch) and
    that knows ``ClassBalancedSampler`` and distributed ranks, so a resumed or
    distributed run sees the same batches. Under torch.distributed rank 0
    builds first (it may generate synthetic data), then the other ranks.

    The returned manager has ``skipped_images``: ``{split: [paths]}`` dropped by
    ``data.skip_corrupt``.
    """
    from reid_ir.data.checked import check_datamanager
    from reid_ir.data.datasets import dataset_kwargs_from_cfg, register_datasets
    from reid_ir.data.samplers import build_train_sampler

    if cfg.data.type != "image":
        raise ConfigError(
            f"data.type {cfg.data.type!r} is not supported; reid_ir handles 'image' datasets"
        )
    check_data_cfg(cfg)
    register_datasets(**dataset_kwargs_from_cfg(cfg))
    kwargs = imagedata_kwargs(cfg)
    kwargs["train_sampler"] = (
        "SequentialSampler"  # replaced below; keeps torchreid from drawing random numbers
    )
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    if distributed and rank > 0:
        torch.distributed.barrier()  # rank 0 prepares the data first
    try:
        dm = _build_torchreid_datamanager(cfg, kwargs)
    finally:
        if distributed and rank == 0:
            torch.distributed.barrier()
    train_set, dm.skipped_images = check_datamanager(dm, cfg.data.skip_corrupt, progress=rank == 0)
    if len(train_set.train) < cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is larger than the training set "
            f"({len(train_set.train)} images in {list(cfg.data.sources)})"
        )
    sampler = build_train_sampler(train_set.train, **sampler_kwargs(cfg))
    workers = 0 if cfg.train.deterministic else cfg.data.workers
    dm.train_loader = build_train_loader(
        train_set, sampler, cfg.train.batch_size, workers, kwargs["use_gpu"]
    )
    for name, loaders in dm.test_loader.items():
        for split, loader in loaders.items():
            if len(loader.dataset) == 0:
                folder = getattr(loader.dataset, f"{split}_dir", None) or "its folder"
                raise DataError(
                    f"the {split} set of target dataset {name!r} is empty: no usable images in {folder}; "
                    f"check {_root_origin(cfg)} and data.targets"
                )
    return dm
