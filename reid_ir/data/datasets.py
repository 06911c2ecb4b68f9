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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reid_ir.compat import ImageDataset
from reid_ir.compat import data as tr_data
from reid_ir.data import imbalance as _imb
from reid_ir.data import synthetic as _syn
from reid_ir.errors import DataError, DatasetNotFoundError

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
    "id_half",
    "val_ids",
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
    dir_path: str | os.PathLike,
    layout: str,
    rel_to: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[tuple[str, int, int]]:
    """List a folder's ``*.jpg`` images as sorted ``(path, pid, camid)`` (junk included).

    Args:
        dir_path: A split folder (``bounding_box_train`` ...).
        layout: ``"market"`` or ``"duke"``.
        rel_to: If given, paths are relative to it with '/' separators; else absolute.
        progress: Show a tqdm progress bar.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: An image name does not parse (the message names it).
    """
    d = Path(dir_path)
    if not d.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {d}")
    out = []
    names = sorted(os.listdir(d))
    for name in tqdm(
        names, desc=f"scanning {d.name}", unit="img", disable=not progress, leave=False
    ):
        if not name.endswith(".jpg"):
            continue  # Thumbs.db, readme.txt ... (torchreid globs '*.jpg' as well)
        try:
            pid, camid = parse_name(name, layout)
        except ValueError as e:
            raise DataError(f"{d / name}: {e}") from None
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
        raise DatasetNotFoundError(
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
    data_dir = base / _SUBDIR[layout]
    if layout == "market" and not data_dir.is_dir() and (base / "bounding_box_train").is_dir():
        data_dir = base  # torchreid's deprecated flat layout
    layout_dirs(data_dir, dataset, layout)  # raises naming what it expected
    return data_dir


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


def make_split(
    dataset: str,
    root: str | os.PathLike,
    profile: str = "full",
    seed: int = 0,
    progress: bool = False,
    **params: Any,
) -> dict:
    """Scan a dataset's training folder and build its imbalance manifest.

    Args:
        dataset: ``market1501`` or ``dukemtmcreid``.
        root: The data root (``data.root``) holding ``market1501/`` or ``dukemtmc-reid/``.
        profile: Imbalance profile (see :mod:`reid_ir.data.imbalance`).
        seed: Seed of the split.
        progress: Show a progress bar while scanning.
        **params: The other ``data.imbalance`` keys (rho, n_max, ...).

    Returns:
        The manifest dict (see :func:`reid_ir.data.imbalance.make_manifest`).
    """
    if dataset not in BASE_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {list(BASE_DATASETS)}")
    data_dir = find_data_dir(root, dataset)
    records = scan_dir(
        data_dir / "bounding_box_train",
        BASE_DATASETS[dataset][1],
        rel_to=data_dir,
        progress=progress,
    )
    return _imb.make_manifest(dataset, records, profile, seed, **params)


def manifest_records(
    manifest: dict, dataset: str, data_dir: str | os.PathLike
) -> list[tuple[str, int, int]]:
    """The manifest's images as ``(absolute path, pid, camid)``, checked against the dataset.

    Raises:
        ValueError: The manifest belongs to another dataset, or names a file
            outside ``bounding_box_train`` or with a name of another layout.
        FileNotFoundError: Files named by the manifest are missing (lists some).
    """
    if manifest.get("dataset") != dataset:
        raise DataError(f"the manifest is for dataset {manifest.get('dataset')!r}, not {dataset!r}")
    layout = BASE_DATASETS[dataset][1]
    data_dir = Path(data_dir)
    out, missing = [], []
    for rel in manifest["images"]:
        folder, _, name = rel.partition("/")
        if folder != "bounding_box_train" or "/" in name:
            raise DataError(f"manifest image {rel!r} is not in bounding_box_train/ of {dataset}")
        try:
            pid, camid = parse_name(name, layout)
        except ValueError as e:
            raise DataError(f"manifest image {rel!r} does not belong to {dataset}: {e}") from None
        path = data_dir / rel
        if not path.is_file():
            missing.append(str(path))
        out.append((str(path), pid, camid))
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} images of the manifest are missing, e.g. {missing[:3]}"
        )
    return out


def validation_holdout(
    records: Sequence[tuple[str, int, int]], num_ids: int, seed: int = 0
) -> tuple[list, list, list]:
    """Hold out ``num_ids`` training identities as a validation query/gallery.

    The identities are drawn (seeded hash order) among those seen by at least
    two cameras, so every query has a true match under Market's rule (gallery
    images of the query's identity *and* camera do not count). Each held-out
    identity gives one query image per camera (its first by name), the rest of
    its images form the gallery.

    Args:
        records: the training folder's ``(path, pid, camid)`` (junk pid -1 ignored).
        num_ids: identities to hold out (>= 2).
        seed: draw seed (``data.imbalance.seed``).

    Returns:
        ``(train, query, gallery)`` record lists; train keeps every other identity.

    Raises:
        ValueError: ``num_ids`` < 2, or more than the identities with two cameras
            (or leaving fewer than two identities to train on).
    """
    by_pid: dict[int, list[tuple[str, int, int]]] = {}
    for rec in records:
        if rec[1] != -1:
            by_pid.setdefault(rec[1], []).append(rec)
    eligible = sorted(
        (pid for pid, recs in by_pid.items() if len({c for _, _, c in recs}) >= 2),
        key=lambda pid: _imb._key(seed, "validation", pid),
    )
    if num_ids < 2 or num_ids > len(eligible) or len(by_pid) - num_ids < 2:
        raise ValueError(
            f"data.imbalance.val_ids={num_ids}: expected 2..{min(len(eligible), len(by_pid) - 2)} "
            f"(identities seen by two cameras: {len(eligible)}, identities: {len(by_pid)})"
        )
    held = set(eligible[:num_ids])
    train = [r for r in records if r[1] != -1 and r[1] not in held]
    query, gallery = [], []
    for pid in sorted(held):
        first_of_camera: set[int] = set()
        for rec in sorted(by_pid[pid]):
            if rec[2] in first_of_camera:
                gallery.append(rec)
            else:
                first_of_camera.add(rec[2])
                query.append(rec)
    return train, query, gallery


class _ImbalancedMixin:
    """Shared constructor of the ``*_imb`` datasets; subclasses set the class attributes."""

    base_name = "market1501"
    #: The data.imbalance keys; rebound by register_datasets().
    imbalance_kwargs: dict[str, Any] = {}

    def __init__(self, root: str = "", **kwargs: Any) -> None:
        folder, self.layout = BASE_DATASETS[self.base_name]
        self.root = os.path.abspath(os.path.expanduser(root))
        self.dataset_dir = os.path.join(self.root, folder)
        self.data_dir = str(find_data_dir(self.root, self.base_name))
        dirs = layout_dirs(self.data_dir, self.base_name, self.layout)
        self.train_dir, self.query_dir, self.gallery_dir = (str(dirs[s]) for s in SPLIT_DIRS)
        kw = dict(self.imbalance_kwargs)
        manifest_path = kw.pop("manifest", "")
        val_ids = int(kw.pop("val_ids", 0) or 0)
        if val_ids and manifest_path:
            raise ValueError(
                "data.imbalance.val_ids holds identities out of the split made from the profile "
                "keys; it cannot be combined with data.imbalance.manifest"
            )
        if val_ids:
            records = scan_dir(Path(self.train_dir), self.layout, rel_to=self.data_dir)
            kept, val_query, val_gallery = validation_holdout(records, val_ids, kw.get("seed", 0))
            self.manifest = _imb.make_manifest(
                self.base_name, kept, kw.pop("profile", "full"), kw.pop("seed", 0), **kw
            )
            source = (
                f"validation ({val_ids} training ids held out as query/gallery), profile "
                f"{self.manifest['profile']} {self.manifest['params']} seed {self.manifest['seed']}"
            )
        elif manifest_path:
            self.manifest = _imb.load_manifest(manifest_path)
            source = manifest_path
        else:
            self.manifest = make_split(
                self.base_name, self.root, kw.pop("profile", "full"), kw.pop("seed", 0), **kw
            )
            source = f"profile {self.manifest['profile']} {self.manifest['params']} seed {self.manifest['seed']}"
        train = relabel(manifest_records(self.manifest, self.base_name, self.data_dir))
        logger.info(
            "%s_imb train split from %s: %s", self.base_name, source, self.manifest["summary"]
        )
        if val_ids:
            data_dir = Path(self.data_dir)
            query = [(str(data_dir / p), pid, cam) for p, pid, cam in val_query]
            gallery = [(str(data_dir / p), pid, cam) for p, pid, cam in val_gallery]
            logger.info(
                "validation query/gallery: %d / %d images of %d held-out training ids",
                len(query), len(gallery), val_ids,
            )
        else:
            query = process_dir(self.query_dir, self.layout)
            gallery = process_dir(self.gallery_dir, self.layout)
        ImageDataset.__init__(self, train, query, gallery, **kwargs)

    def process_dir(self, dir_path: str, relabel: bool = False) -> list[tuple[str, int, int]]:
        """torchreid's hook, with strict parsing (see :func:`process_dir`)."""
        return process_dir(dir_path, self.layout, relabel_pids=relabel)


class ImbalancedMarket1501(_ImbalancedMixin, Market1501):
    """Market-1501 whose training set is an imbalance split (``market1501_imb``)."""

    base_name = "market1501"


class ImbalancedDukeMTMCreID(_ImbalancedMixin, DukeMTMCreID):
    """DukeMTMC-reID whose training set is an imbalance split (``dukemtmcreid_imb``)."""

    base_name = "dukemtmcreid"


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
    if imb:
        _imb.profile_params(
            imb.get("profile", "full"),
            **{k: v for k, v in imb.items() if k not in ("profile", "val_ids")},
        )
    for name, base in (
        ("market1501_imb", ImbalancedMarket1501),
        ("dukemtmcreid_imb", ImbalancedDukeMTMCreID),
    ):
        _bind(
            name,
            type(base.__name__, (base,), {"imbalance_kwargs": dict(imb), "__module__": __name__}),
        )


def dataset_kwargs_from_cfg(cfg: Any) -> dict[str, dict]:
    """``register_datasets`` keyword arguments from a config: ``register_datasets(**dataset_kwargs_from_cfg(cfg))``."""
    syn = {k: cfg.data.synthetic[k] for k in SYNTHETIC_KEYS if k in cfg.data.synthetic}
    imb = {k: cfg.data.imbalance[k] for k in IMBALANCE_KEYS if k in cfg.data.imbalance}
    return {"synthetic": syn, "imbalance": imb}
