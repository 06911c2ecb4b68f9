"""Image loading that fails naming the file, or skips unreadable images when asked.

torchreid's ``read_image`` retries an unreadable file forever (it catches the
``OSError`` of a truncated JPEG and tries again), so a single corrupt image
hangs a run. :class:`CheckedImageDataset` replaces torchreid's dataset
``__getitem__`` with one that reads through :func:`read_image_checked`:

* by default, :func:`check_datamanager` checks every image of train, query and
  gallery cheaply before the first step (:func:`image_problem`: the header parses
  and a JPEG / PNG ends with its end marker; only a file that does not is fully
  decoded) and stops with :class:`CorruptImageError` naming the first unreadable
  file; an image that still fails later (changed on disk) stops the run the same way;
* with ``data.skip_corrupt: true``, it decodes every image once at start, drops
  the unreadable ones from train, query and gallery, and logs how many it
  dropped and which.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from reid_ir.errors import CorruptImageError, DatasetNotFoundError

logger = logging.getLogger(__name__)


def read_image_checked(path: str | os.PathLike):
    """Read an image as RGB (PIL), like torchreid's ``read_image`` but failing at once.

    Raises:
        DatasetNotFoundError: the file does not exist.
        CorruptImageError: the file cannot be decoded; the message names it.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"image {path} does not exist (the dataset lists it)") from None
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


#: what a complete file of each format ends with (a truncated one does not)
_END_MARKERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}


def _full_decode_problem(path: str | os.PathLike) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.convert("RGB").load()
    except Exception as e:  # noqa: BLE001 - any decoding failure means "corrupt"
        return f"{type(e).__name__}: {e}"
    return None


def image_problem(path: str | os.PathLike) -> str | None:
    """Why the image at ``path`` cannot be read, or None; cheap for intact JPEG / PNG files.

    The header is parsed (format and size) and the file's last bytes are compared with
    the format's end marker, which a truncated file lacks; only a file without it (or of
    another format) is decoded in full, so a JPEG with bytes after its end marker passes.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            fmt = img.format
            width, height = img.size
    except FileNotFoundError:
        return "the file does not exist (the dataset lists it)"
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        return f"{type(e).__name__}: {e}"
    if width < 1 or height < 1:
        return f"image size {width}x{height}"
    markers = _END_MARKERS.get(fmt or "", ())
    if markers:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16))
            tail = f.read().rstrip(b"\x00\r\n ")
        if tail.endswith(markers):
            return None
    return _full_decode_problem(path)


def check_readable(datasets: Sequence[tuple[str, Sequence]], progress: bool = True) -> None:
    """Check every image of ``datasets`` with :func:`image_problem` before any work is done.

    Args:
        datasets: ``(what, items)`` pairs, items ``(img_path, pid, camid, ...)``.
        progress: show a progress bar (on a terminal only).

    Raises:
        CorruptImageError: naming the first unreadable image and how many there are.
    """
    bad: list[tuple[str, str, str]] = []
    for what, items in datasets:
        paths = [it[0] for it in items]
        for path in tqdm(
            paths,
            desc=f"checking {what}",
            unit="img",
            leave=False,
            disable=None if progress else True,
        ):
            problem = image_problem(path)
            if problem is not None:
                bad.append((what, path, problem))
    if bad:
        what, path, problem = bad[0]
        more = (
            f" ({len(bad)} unreadable images in all: {[p for _, p, _ in bad[:5]]})"
            if len(bad) > 1
            else ""
        )
        raise CorruptImageError(
            f"cannot decode image {path} ({what}): {problem}{more}. Replace the file, or set "
            "data.skip_corrupt True to skip unreadable images; nothing was trained"
        )


def find_unreadable(
    paths: Sequence[str], desc: str = "checking images", progress: bool = True
) -> list[str]:
    """The paths among ``paths`` that do not decode (see ``reid_ir.data.datasets.check_image``)."""
    from reid_ir.data.datasets import check_image

    return [
        p
        for p in tqdm(paths, desc=desc, unit="img", leave=False, disable=None if progress else True)
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
        skip_corrupt: decode every image now and drop the unreadable ones; without it
            every image is checked (:func:`check_readable`) and one unreadable image
            raises :class:`CorruptImageError`.
        progress: show progress bars while checking.

    Returns:
        The checked train set, and ``{"train" | "<target>/query" | "<target>/gallery":
        [skipped paths]}`` (only non-empty lists).
    """
    skipped: dict[str, list[str]] = {}
    if not skip_corrupt:
        check_readable(
            [("train", dm.train_loader.dataset.data)]
            + [
                (f"{name}/{split}", loader.dataset.data)
                for name, loaders in dm.test_loader.items()
                for split, loader in loaders.items()
            ],
            progress,
        )
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
