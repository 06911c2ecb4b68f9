"""Image loading that fails naming the file, or skips unreadable images when asked.

torchreid's ``read_image`` retries an unreadable file forever (it catches the
``OSError`` of a truncated JPEG and tries again), so a single corrupt image
hangs a run. :class:`CheckedImageDataset` replaces torchreid's dataset
``__getitem__`` with one that reads through :func:`read_image_checked`:

* by default, the first unreadable image stops the run with
  :class:`CorruptImageError` naming the file;
* with ``data.skip_corrupt: true``, :func:`check_datamanager` decodes every
  image once at start, drops the unreadable ones from train, query and gallery,
  and logs how many it dropped and which.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

logger = logging.getLogger(__name__)


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded (truncated, corrupt, not an image)."""


def read_image_checked(path: str | os.PathLike):
    """Read an image as RGB (PIL), like torchreid's ``read_image`` but failing at once.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptImageError: the file cannot be decoded; the message names it.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist (the dataset lists it)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise CorruptImageError(
            f"cannot decode image {path}: {type(e).__name__}: {e}. Replace the file, or set "
            "data.skip_corrupt True to skip unreadable images (checked once at start)"
        ) from None


class CheckedImageDataset(Dataset):
    """A torchreid image dataset (train, query or gallery mode) read through :func:`read_image_checked`.

    Args:
        dataset: torchreid ``ImageDataset``; its ``transform``, ``k_tfm`` and
            other attributes are used as they are.
        items: the ``(path, pid, camid, dsetid)`` tuples to serve (default:
            ``dataset.data``), e.g. without the unreadable images.
    """

    def __init__(self, dataset: Any, items: Sequence | None = None) -> None:
        self.dataset = dataset
        self.data = list(dataset.data if items is None else items)
        self.transform = dataset.transform
        self.k_tfm = getattr(dataset, "k_tfm", 1)

    @property
    def train(self) -> list:
        """The training tuples served (the engine reads pids from here)."""
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        img_path, pid, camid, dsetid = self.data[index]
        img = read_image_checked(img_path)
        if self.transform is not None:
            img = self.dataset._transform_image(self.transform, self.k_tfm, img)
        return {"img": img, "pid": pid, "camid": camid, "impath": img_path, "dsetid": dsetid}

    def __getattr__(self, name: str) -> Any:
        if (
            name.startswith("__") or name == "dataset"
        ):  # copy/pickle probe these before __init__ ran
            raise AttributeError(name)
        return getattr(self.dataset, name)


def find_unreadable(
    paths: Sequence[str], desc: str = "checking images", progress: bool = True
) -> list[str]:
    """The paths among ``paths`` that do not decode (see ``reid_ir.data.datasets.check_image``)."""
    from reid_ir.data.datasets import check_image

    return [
        p
        for p in tqdm(paths, desc=desc, unit="img", leave=False, disable=not progress)
        if not check_image(p)
    ]


def _checked(
    dataset: Any, skip_corrupt: bool, what: str, skipped: dict, progress: bool
) -> CheckedImageDataset:
    items = list(dataset.data)
    if skip_corrupt:
        bad = set(find_unreadable([it[0] for it in items], f"checking {what}", progress))
        if bad:
            skipped[what] = sorted(bad)
            items = [it for it in items if it[0] not in bad]
            logger.warning(
                "%s: skipping %d unreadable images of %d (data.skip_corrupt): %s",
                what,
                len(bad),
                len(bad) + len(items),
                sorted(bad)[:5],
            )
    return CheckedImageDataset(dataset, items)


def check_datamanager(
    dm: Any, skip_corrupt: bool = False, progress: bool = True
) -> tuple[CheckedImageDataset, dict[str, list[str]]]:
    """Serve every dataset of a torchreid ImageDataManager through :class:`CheckedImageDataset`.

    Query and gallery loaders are replaced by loaders with the same settings;
    the checked train set is returned for the caller to build its train loader on.

    Args:
        dm: torchreid ``ImageDataManager``.
        skip_corrupt: decode every image now and drop the unreadable ones.
        progress: show progress bars while checking.

    Returns:
        The checked train set, and ``{"train" | "<target>/query" | "<target>/gallery":
        [skipped paths]}`` (only non-empty lists).
    """
    skipped: dict[str, list[str]] = {}
    train = _checked(dm.train_loader.dataset, skip_corrupt, "train", skipped, progress)
    for name, loaders in dm.test_loader.items():
        for split, loader in list(loaders.items()):
            ds = _checked(loader.dataset, skip_corrupt, f"{name}/{split}", skipped, progress)
            loaders[split] = DataLoader(
                ds,
                batch_size=loader.batch_size,
                shuffle=False,
                num_workers=loader.num_workers,
                pin_memory=loader.pin_memory,
                drop_last=False,
            )
            if name in getattr(dm, "test_dataset", {}) and split in dm.test_dataset[name]:
                dm.test_dataset[name][split] = list(ds.data)
    return train, skipped
