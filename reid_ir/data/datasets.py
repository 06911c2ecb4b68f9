"""reid_ir's datasets, registered with torchreid by name.

* ``synthetic_market`` / ``synthetic_duke``: synthetic data in the Market-1501 /
  DukeMTMC-reID layout under ``<root>/synthetic_market`` / ``<root>/synthetic_duke``,
  generated on first use (see :mod:`reid_ir.data.synthetic`).
* ``market1501_imb`` / ``dukemtmcreid_imb``: the dataset with its training set
  replaced by an imbalance split (see :mod:`reid_ir.data.imbalance`); query and
  gallery are the dataset's own.

The classes subclass torchreid's ``Market1501`` / ``DukeMTMCreID`` (same junk pids,
same ``(path, pid, camid)`` tuples, camid from 0, junk pid -1 skipped) but parse
names strictly: a ``.jpg`` whose name does not follow the layout raises an error
naming the file, where torchreid's regex would search the whole path. Lists are
sorted by path and training pids are relabelled in sorted order, so the sample
order (and hence a seeded sampler's batches) is the same on every machine.
Nothing is read at import; everything happens when torchreid builds a dataset.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reid_ir.compat import ImageDataset
from reid_ir.compat import data as tr_data
from reid_ir.data import synthetic as _syn

logger = logging.getLogger(__name__)

Market1501 = tr_data.datasets.Market1501
DukeMTMCreID = tr_data.datasets.DukeMTMCreID

# Real Market-1501 contains 24 query/gallery files named '*.jpg.jpg' (pid 1488 and a few
# junk/distractor images); torchreid reads them, so the optional second '.jpg' is accepted.
_NAME_RE = {
    "market": re.compile(r"^(-1|\d{4})_c(\d)s\d+_\d{6}_\d{2}\.jpg(\.jpg)?$"),
    "duke": re.compile(r"^(\d{4})_c(\d)_f\d{7}\.jpg$"),
}
_EXPECTED = {"market": "0002_c1s1_000451_03.jpg", "duke": "0001_c2_f0046182.jpg"}
_MAX_CAM = {"market": 6, "duke": 8}
_SUBDIR = {"market": "Market-1501-v15.09.15", "duke": "DukeMTMC-reID"}
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")

#: Datasets an imbalance split can be made of: name -> (folder under root, layout).
BASE_DATASETS = {"market1501": ("market1501", "market"), "dukemtmcreid": ("dukemtmc-reid", "duke")}

SYNTHETIC_KEYS = (
    "num_train_ids",
    "num_test_ids",
    "images_per_camera",
    "num_cameras",
    "num_distractors",
    "num_junk",
    "image_size",
    "seed",
)
IMBALANCE_KEYS = (
    "profile",
    "manifest",
    "seed",
    "rho",
    "n_max",
    "min_images",
    "tail_fraction",
    "tail_images",
    "control_of",
)


def parse_name(filename: str, layout: str) -> tuple[int, int]:
    """Parse a Market / Duke image name.

    Args:
        filename: Base name, e.g. ``0002_c1s1_000451_03.jpg``.
        layout: ``"market"`` or ``"duke"``.

    Returns:
        ``(pid, camid)`` with camid counted from 0 (pid -1 is Market's junk).

    Raises:
        ValueError: The name does not follow the layout, naming the file.
    """
    m = _NAME_RE[layout].match(filename)
    if m is None:
        raise ValueError(
            f"image name {filename!r} does not follow the {layout} pattern "
            f"(expected e.g. {_EXPECTED[layout]!r})"
        )
    pid, cam = int(m.group(1)), int(m.group(2))
    if not 1 <= cam <= _MAX_CAM[layout]:
        raise ValueError(f"image name {filename!r}: camera {cam} outside 1..{_MAX_CAM[layout]}")
    return pid, cam - 1


def scan_dir(
    dir_path: str | os.PathLike, layout: str, rel_to: str | os.PathLike | None = None
) -> list[tuple[str, int, int]]:
    """List a folder's ``*.jpg`` images as sorted ``(path, pid, camid)`` (junk included).

    Args:
        dir_path: A split folder (``bounding_box_train`` ...).
        layout: ``"market"`` or ``"duke"``.
        rel_to: If given, paths are relative to it with '/' separators; else absolute.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: An image name does not parse (the message names it).
    """
    d = Path(dir_path)
    if not d.is_dir():
        raise FileNotFoundError(f"image folder not found: {d}")
    out = []
    for name in sorted(os.listdir(d)):
        if not name.endswith(".jpg"):
            continue  # Thumbs.db, readme.txt ... (torchreid globs '*.jpg' as well)
        try:
            pid, camid = parse_name(name, layout)
        except ValueError as e:
            raise ValueError(f"{d / name}: {e}") from None
        path = (
            (d / name).relative_to(rel_to).as_posix()
            if rel_to is not None
            else str((d / name).absolute())
        )
        out.append((path, pid, camid))
    return out


def relabel(items: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Map pids to 0..N-1 in sorted pid order, keeping the item order."""
    items = list(items)
    pid2label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(p, pid2label[pid], cam) for p, pid, cam in items]


def process_dir(
    dir_path: str | os.PathLike, layout: str, relabel_pids: bool = False
) -> list[tuple[str, int, int]]:
    """torchreid's ``process_dir`` semantics with strict names and a fixed order.

    Junk images (pid -1) are skipped, camids count from 0, and with
    ``relabel_pids`` the pids become 0..N-1 in sorted order.
    """
    items = [it for it in scan_dir(dir_path, layout) if it[1] != -1]
    return relabel(items) if relabel_pids else items


def check_image(path: str | os.PathLike) -> bool:
    """Return True if the image decodes (as torchreid's ``read_image`` would read it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.convert("RGB").load()
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "corrupt"
        return False


def layout_dirs(data_dir: str | os.PathLike, name: str, layout: str) -> dict[str, Path]:
    """The three split folders of a dataset, or a clear error saying what was expected."""
    d = Path(data_dir)
    dirs = {s: d / s for s in SPLIT_DIRS}
    missing = [str(p) for p in dirs.values() if not p.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)}; expected the {layout} layout "
            f"{d}/{{bounding_box_train,query,bounding_box_test}}/*.jpg (names like {_EXPECTED[layout]!r})"
        )
    return dirs


def find_data_dir(root: str | os.PathLike, dataset: str) -> Path:
    """Folder holding a base dataset's split folders, e.g. ``<root>/market1501/Market-1501-v15.09.15``.

    Like torchreid, Market-1501 may also sit directly in ``<root>/market1501``.
    """
    folder, layout = BASE_DATASETS[dataset]
    base = Path(root).expanduser().absolute() / folder
    nested = base / _SUBDIR[layout]
    if nested.is_dir() or layout == "duke" or not (base / "bounding_box_train").is_dir():
        layout_dirs(nested, dataset, layout)
        return nested
    return base


class _SyntheticMixin:
    """Shared constructor of the synthetic datasets; subclasses set the class attributes."""

    layout = "market"
    folder = "synthetic_market"
    #: Keyword arguments of generate_synthetic_dataset; rebound by register_datasets().
    synthetic_kwargs: dict[str, Any] = {}

    def __init__(self, root: str = "", **kwargs: Any) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.dataset_dir = os.path.join(self.root, self.folder)
        if not os.path.exists(self.dataset_dir):
            logger.info(
                "%s not found: generating it with %s", self.dataset_dir, self.synthetic_kwargs
            )
        # Creates the folder if missing; fails naming the differing keys if it holds other parameters.
        _syn.generate_synthetic_dataset(
            self.dataset_dir, layout=self.layout, **self.synthetic_kwargs
        )
        self.data_dir = os.path.join(self.dataset_dir, _SUBDIR[self.layout])
        dirs = layout_dirs(self.data_dir, self.folder, self.layout)
        self.train_dir, self.query_dir, self.gallery_dir = (str(dirs[s]) for s in SPLIT_DIRS)
        train = process_dir(self.train_dir, self.layout, relabel_pids=True)
        query = process_dir(self.query_dir, self.layout)
        gallery = process_dir(self.gallery_dir, self.layout)
        ImageDataset.__init__(self, train, query, gallery, **kwargs)

    def process_dir(self, dir_path: str, relabel: bool = False) -> list[tuple[str, int, int]]:
        """torchreid's hook, with strict parsing (see :func:`process_dir`)."""
        return process_dir(dir_path, self.layout, relabel_pids=relabel)


class SyntheticMarket1501(_SyntheticMixin, Market1501):
    """Synthetic Market-1501 at ``<root>/synthetic_market/Market-1501-v15.09.15``."""

    layout, folder = "market", "synthetic_market"


class SyntheticDukeMTMCreID(_SyntheticMixin, DukeMTMCreID):
    """Synthetic DukeMTMC-reID at ``<root>/synthetic_duke/DukeMTMC-reID``."""

    layout, folder = "duke", "synthetic_duke"


def _image_registry() -> dict:
    """torchreid's private name -> class dict (register_image_dataset refuses re-binding)."""
    registry = getattr(tr_data.datasets, "__image_datasets", None)
    if not isinstance(registry, dict):
        raise RuntimeError(
            "torchreid's dataset registry was not found: unsupported torchreid version"
        )
    return registry


def _bind(name: str, cls: type) -> None:
    """Bind (or re-bind) ``name`` to ``cls`` in torchreid's image dataset registry."""
    _image_registry()[name] = cls


def _check_keys(kind: str, given: dict | None, known: tuple[str, ...]) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {kind} keys {unknown}; known keys: {list(known)}")
    return given


def register_datasets(synthetic: dict | None = None, imbalance: dict | None = None) -> None:
    """Register reid_ir's datasets with torchreid, bound to these keyword arguments.

    Idempotent; calling it again re-binds the names to the new arguments.

    Args:
        synthetic: Keyword arguments of
            :func:`~reid_ir.data.synthetic.generate_synthetic_dataset` (the
            ``data.synthetic`` keys); missing keys take the function's defaults.
        imbalance: The ``data.imbalance`` keys (profile, manifest, seed, rho,
            n_max, min_images, tail_fraction, tail_images, control_of) used by
            ``market1501_imb`` / ``dukemtmcreid_imb``.

    Raises:
        ValueError: An unknown key, listing the known ones.
    """
    syn = _check_keys("data.synthetic", synthetic, SYNTHETIC_KEYS)
    if "image_size" in syn:
        syn["image_size"] = tuple(int(v) for v in syn["image_size"])
    imb = _check_keys("data.imbalance", imbalance, IMBALANCE_KEYS)
    for name, base in (
        ("synthetic_market", SyntheticMarket1501),
        ("synthetic_duke", SyntheticDukeMTMCreID),
    ):
        _bind(
            name,
            type(base.__name__, (base,), {"synthetic_kwargs": dict(syn), "__module__": __name__}),
        )
    del imb  # market1501_imb / dukemtmcreid_imb: bound here once reid_ir.data.imbalance lands


def dataset_kwargs_from_cfg(cfg: Any) -> dict[str, dict]:
    """``register_datasets`` keyword arguments from a config: ``register_datasets(**dataset_kwargs_from_cfg(cfg))``."""
    syn = {k: cfg.data.synthetic[k] for k in SYNTHETIC_KEYS if k in cfg.data.synthetic}
    imb = {k: cfg.data.imbalance[k] for k in IMBALANCE_KEYS if k in cfg.data.imbalance}
    return {"synthetic": syn, "imbalance": imb}
