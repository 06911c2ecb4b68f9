"""A saved faiss index over a gallery's features, with the gallery's paths beside it.

Features are L2-normalised, so the inner product is the cosine similarity.
Three kinds of index:

* ``flat`` (default): exact inner-product search (``IndexFlatIP``);
* ``ivf``: inverted lists over a k-means coarse quantizer (``IndexIVFFlat``,
  ``nlist`` lists, ``nprobe`` of them visited per query): approximate, for
  galleries of millions;
* ``hnsw``: a navigable small-world graph (``IndexHNSWFlat``, ``hnsw_m`` links
  per node, ``ef_search`` candidates per query): approximate, no training.

An approximate index answers :meth:`GalleryIndex.recall_at_k`: the fraction of
exact top-k neighbours it also returns, measured against exact search over the
same stored vectors. With ``use_gpu`` (default: when faiss reports a GPU) flat
and IVF indexes search on the GPU; HNSW has no GPU version and stays on the CPU.

Saved layout (a folder): ``index.faiss`` (CPU index), ``paths.txt`` (one gallery
path per line, index order), ``index.json`` (kind, parameters, size, dim, and any
``info`` the builder passed, e.g. the model that made the features) and, when
given, ``labels.csv`` (``path,pid,camid``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reid_ir.evaluation.search import faiss_num_gpus, import_faiss
from reid_ir.inference.labels import read_labels_csv, write_labels_csv
from reid_ir.reports.tables import write_text_atomic

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
FORMAT = "reid_ir.gallery_index"
INDEX_FILE, PATHS_FILE, META_FILE, LABELS_FILE = (
    "index.faiss",
    "paths.txt",
    "index.json",
    "labels.csv",
)


def as_unit_rows(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """Validate features and return them L2-normalised, float32, C-contiguous.

    Args:
        x: array-like (n, d).
        name: argument name for error messages.
        dim: expected d, when known.

    Raises:
        ValueError: not 2-D, empty, wrong width, NaN/inf or an all-zero row.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has {a.shape[1]}-d rows, the index holds {dim}-d features")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(
            f"{name} has all-zero rows (e.g. row {int(np.flatnonzero(norms[:, 0] == 0)[0])})"
        )
    return np.ascontiguousarray(a / norms, dtype=np.float32)


def order_ties(sims: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by similarity (high first), equal similarities by gallery index.

    faiss orders ties its own way; this is reid_ir's rule (a stable sort on
    distance). Missing results (index -1) go last.
    """
    key = np.where(index < 0, np.inf, -sims.astype(np.float64))
    order = np.lexsort((np.where(index < 0, np.iinfo(np.int64).max, index), key), axis=-1)
    return np.take_along_axis(sims, order, 1), np.take_along_axis(index, order, 1)


class GalleryIndex:
    """A faiss index over gallery features plus the gallery's paths (and labels).

    Build with :meth:`build`, reopen with :meth:`load`.

    Args:
        index: a CPU faiss index holding the N gallery vectors.
        paths: the N gallery paths, index order.
        kind: one of :data:`KINDS` (how ``index`` was built).
        params: the kind's search parameters.
        labels: optional (pids, camids), N each.
        info: provenance saved with the index.
        use_gpu: search on the GPU (default: when faiss reports one; never for HNSW).

    Attributes:
        index: the faiss index (on the GPU when ``on_gpu``).
        paths: gallery paths, index order.
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        params: the kind's parameters (``nlist``, ``nprobe``, ``hnsw_m``, ``ef_search``).
        labels: optional (pids, camids) int64 arrays, index order.
        info: free-form provenance saved with the index (JSON-serialisable).
        on_gpu: whether searches run on the GPU.
    """

    def __init__(
        self,
        index: Any,
        paths: Sequence[str],
        kind: str,
        params: dict,
        labels: tuple[np.ndarray, np.ndarray] | None = None,
        info: dict | None = None,
        use_gpu: bool | None = None,
    ) -> None:
        if index.ntotal != len(paths):
            raise ValueError(
                f"the index holds {index.ntotal} vectors but {len(paths)} paths were given"
            )
        self.kind, self.params = kind, dict(params)
        self.paths = [str(p) for p in paths]
        self.labels = labels
        self.info = dict(info or {})
        self._cpu_index = index
        self._exact: GalleryIndex | None = None
        self._apply_search_params(index)
        if kind == "ivf":
            index.make_direct_map()  # reconstruct() for exact recall checks
        use_gpu = faiss_num_gpus() > 0 if use_gpu is None else bool(use_gpu)
        self.on_gpu = use_gpu and kind != "hnsw"
        self.index = index
        if self.on_gpu:
            faiss = import_faiss()
            self.index = faiss.index_cpu_to_all_gpus(index)
            self._apply_search_params(self.index)

    # ------------------------------------------------------------------ build / io
    @classmethod
    def build(
        cls,
        features: Any,
        paths: Sequence[str],
        kind: str = "flat",
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 80,
        labels: tuple[Any, Any] | None = None,
        info: dict | None = None,
        use_gpu: bool | None = None,
        seed: int = 0,
    ) -> GalleryIndex:
        """Index gallery features.

        Args:
            features: (N, D) gallery features (normalised here if they are not).
            paths: N gallery paths, same order.
            kind: one of :data:`KINDS`.
            nlist: IVF lists (default ``4 * sqrt(N)``, at most N // 39 so each
                list gets faiss's minimum of 39 training points, at least 1).
            nprobe: IVF lists visited per query.
            hnsw_m: HNSW links per node.
            ef_search: HNSW candidate list size at search time.
            ef_construction: HNSW candidate list size while building.
            labels: optional (pids, camids), N each.
            info: provenance to save with the index.
            use_gpu: search on the GPU (default: when faiss reports one).
            seed: k-means seed of the IVF quantizer.

        Raises:
            ValueError: unknown kind, bad features, or paths / labels of another length.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {list(KINDS)}")
        x = as_unit_rows(features, "gallery features")
        n, d = x.shape
        if len(paths) != n:
            raise ValueError(f"{n} gallery features but {len(paths)} paths")
        faiss = import_faiss()
        params: dict[str, Any] = {}
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = int(nlist) if nlist else max(1, min(int(4 * np.sqrt(n)), n // 39))
            if not 1 <= nlist <= n:
                raise ValueError(f"nlist must be in [1, {n}] for {n} gallery vectors, got {nlist}")
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.train(x)
            params = {"nlist": nlist, "nprobe": min(int(nprobe), nlist)}
        else:
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            params = {"hnsw_m": int(hnsw_m), "ef_search": int(ef_search)}
        index.add(x)
        if labels is not None:
            labels = tuple(np.asarray(v, dtype=np.int64).reshape(-1) for v in labels)
            if any(len(v) != n for v in labels):
                raise ValueError(f"labels must hold {n} pids and {n} camids")
        logger.info("built a %s index over %d %d-d gallery features %s", kind, n, d, params or "")
        return cls(index, paths, kind, params, labels, info, use_gpu)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index, paths, metadata (and labels) into ``folder`` (created)."""
        faiss = import_faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{INDEX_FILE}.tmp"
        faiss.write_index(self._cpu_index, str(tmp))
        os.replace(tmp, folder / INDEX_FILE)
        write_text_atomic(folder / PATHS_FILE, "".join(p + "\n" for p in self.paths))
        if self.labels is not None:
            write_labels_csv(folder / LABELS_FILE, self.paths, *self.labels)
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "params": self.params,
            "size": len(self.paths),
            "dim": self.dim,
            "metric": "inner_product (cosine of L2-normalised features)",
            "info": self.info,
        }
        write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
        logger.info("saved the %s index (%d items) to %s", self.kind, len(self.paths), folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, use_gpu: bool | None = None) -> GalleryIndex:
        """Open an index written by :meth:`save`.

        Raises:
            FileNotFoundError: a file of the layout is missing (named).
            ValueError: the files disagree (paths vs vectors) or are not ours.
        """
        folder = Path(folder)
        for name in (INDEX_FILE, PATHS_FILE, META_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name} does not exist: expected a gallery index folder written by "
                    f"GalleryIndex.save / tools/search_gallery.py ({INDEX_FILE}, {PATHS_FILE}, {META_FILE})"
                )
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
            raise ValueError(f"{folder / META_FILE} is not a reid_ir gallery index description")
        index = import_faiss().read_index(str(folder / INDEX_FILE))
        paths = (folder / PATHS_FILE).read_text(encoding="utf-8").splitlines()
        labels = None
        if (folder / LABELS_FILE).is_file():
            labels = read_labels_csv(folder / LABELS_FILE, paths)
        return cls(
            index, paths, meta["kind"], meta.get("params", {}), labels, meta.get("info"), use_gpu
        )

    # ------------------------------------------------------------------ search
    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self._cpu_index.d)

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery items of each query by cosine similarity.

        Args:
            queries: (Q, D) features (normalised here if they are not).
            k: results per query (clipped to the gallery size).

        Returns:
            (similarities (Q, k) float32, indices (Q, k) int64), best first, equal
            similarities by gallery index; an approximate index may return fewer
            than k items for a query: index -1, similarity -inf there.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        q = as_unit_rows(queries, "query features", self.dim)
        k = min(int(k), len(self.paths))
        sims, idx = self.index.search(q, k)
        sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
        return order_ties(sims, idx.astype(np.int64))

    def vectors(self) -> np.ndarray:
        """The stored gallery vectors (N, D) float32, index order."""
        return self._cpu_index.reconstruct_n(0, self._cpu_index.ntotal)

    def exact_search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the stored vectors (what a ``flat`` index returns)."""
        if self.kind == "flat":
            return self.search(queries, k)
        if self._exact is None:
            self._exact = GalleryIndex.build(
                self.vectors(), self.paths, "flat", use_gpu=self.on_gpu
            )
        return self._exact.search(queries, k)

    def recall_at_k(self, queries: Any, k: int = 10) -> float:
        """Mean fraction of the exact top-k neighbours this index also returns in its top-k.

        Args:
            queries: (Q, D) query features.
            k: list length compared.

        Returns:
            Recall in [0, 1]; 1.0 for a ``flat`` index.
        """
        k = min(int(k), len(self.paths))
        _, exact = self.exact_search(queries, k)
        _, approx = self.search(queries, k)
        return _overlap(exact, approx)

    def self_recall_at_k(self, k: int = 10, sample: int = 1000, seed: int = 0) -> tuple[float, int]:
        """recall@k with ``sample`` gallery vectors as queries, each one's own match left out.

        Returns:
            (recall, number of queries used).
        """
        n = len(self.paths)
        k = min(int(k), n - 1)
        if k < 1:
            return 1.0, 0
        ids = np.random.default_rng(seed).choice(n, size=min(int(sample), n), replace=False)
        q = np.stack([self._cpu_index.reconstruct(int(i)) for i in ids])
        _, exact = self.exact_search(q, k + 1)
        _, approx = self.search(q, k + 1)
        return _overlap(_drop(exact, ids, k), _drop(approx, ids, k)), len(ids)

    def _apply_search_params(self, index: Any) -> None:
        if self.kind == "ivf":
            index.nprobe = int(self.params["nprobe"])
        elif self.kind == "hnsw":
            index.hnsw.efSearch = int(self.params["ef_search"])


def _drop(index: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without its own id, first k kept (-1 padded)."""
    out = np.full((len(ids), k), -1, np.int64)
    for r, (row, own) in enumerate(zip(index, ids, strict=True)):
        kept = row[row != own][:k]
        out[r, : len(kept)] = kept
    return out


def _overlap(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean over rows of |exact row & approx row| / |exact row| (ids >= 0 only)."""
    hits = [
        len(set(e[e >= 0].tolist()) & set(a[a >= 0].tolist())) / max(1, int((e >= 0).sum()))
        for e, a in zip(exact, approx, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0
