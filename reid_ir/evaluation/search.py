"""Distance rows and exact k-NN search over feature matrices.

Two backends compute the same things:

* ``torch``: distances exactly as torchreid's ``compute_distance_matrix``
  computes them (same operations, same float32 rounding), one chunk of query
  rows at a time into a reused buffer. Needs nothing beyond torch and numpy.
* ``faiss``: flat (exhaustive) L2 / inner-product search; on GPU when
  ``faiss.get_num_gpus() > 0``, on the CPU otherwise. faiss is imported lazily,
  only when this backend is chosen.

``auto`` takes faiss when faiss reports a GPU and torch otherwise: on a CPU
the torch path is the faster one here and rounds exactly as torchreid does.

Ordering rule used everywhere in reid_ir.evaluation: gallery items are ordered
by distance, and equal distances by gallery index (what a stable sort does).
The two backends use different BLAS kernels, so their distances can differ in
the last float32 bit; results are identical except where two distances of one
query are within that rounding of each other.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reid_ir.evaluation.sort_keys import key_layout, pack_keys, unpack_keys

logger = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
BACKENDS = ("auto", "faiss", "torch")

_faiss_module: Any = None
_gpu_resources: Any = None


def import_faiss() -> Any:
    """Import faiss on first use.

    Returns:
        The ``faiss`` module.

    Raises:
        ImportError: faiss is not installed (install ``faiss-cpu`` or ``faiss-gpu``,
            or use ``backend="torch"``).
    """
    global _faiss_module
    if _faiss_module is None:
        loader = logging.getLogger("faiss.loader")  # logs each SIMD variant it tries at INFO
        level = loader.level
        loader.setLevel(max(level, logging.WARNING))
        try:
            import faiss
        except ImportError as exc:
            raise ImportError(
                "backend='faiss' needs faiss (pip install faiss-cpu, or faiss-gpu); "
                "use backend='torch' to evaluate without it"
            ) from exc
        finally:
            loader.setLevel(level)
        _faiss_module = faiss
    return _faiss_module


def faiss_available() -> bool:
    """Return True when faiss can be imported."""
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def faiss_num_gpus() -> int:
    """Number of GPUs faiss can use (0 when faiss is missing or CPU-only)."""
    if not faiss_available():
        return 0
    faiss = import_faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def check_metric(metric: str) -> str:
    """Return ``metric`` or raise ValueError listing the known metrics."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def resolve_backend(backend: str) -> str:
    """Map ``auto`` to a concrete backend: faiss when faiss reports a GPU, else torch.

    Args:
        backend: ``"auto"``, ``"faiss"`` or ``"torch"``.

    Returns:
        ``"faiss"`` or ``"torch"``.

    Raises:
        ValueError: unknown backend. ImportError: ``"faiss"`` without faiss.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss":
        import_faiss()
        return "faiss"
    if backend == "torch":
        return "torch"
    return "faiss" if faiss_num_gpus() > 0 else "torch"


def as_feature_matrix(x: Any, name: str) -> torch.Tensor:
    """Validate a feature matrix and return it as a float32 tensor.

    Args:
        x: array-like of shape (n, d) (torch tensor or numpy array).
        name: argument name used in error messages.

    Returns:
        Tensor (n, d) float32 on the input's device (CPU for numpy input).

    Raises:
        ValueError: not 2-D, empty, or containing NaN/inf.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric array of shape (n, d)") from exc
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if not (
        t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.to(torch.float32).contiguous()
    lo, hi = torch.aminmax(t)  # NaN propagates; one pass, no n x d temporary
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise ValueError(f"{name} contains NaN or inf values")
    return t


def squared_norms(x: torch.Tensor, block: int = 16384) -> torch.Tensor:
    """Row-wise ``torch.pow(x, 2).sum(dim=1)`` (torchreid's), in row blocks.

    Same bits as the one-shot expression (each row is reduced the same way); the
    blocks bound the temporary. Few, large ops: when other jobs share the cores,
    every parallel torch op can wait a scheduler slice for its worker thread.
    """
    return torch.cat([torch.pow(x[i : i + block], 2).sum(dim=1) for i in range(0, len(x), block)])


def normalize_features(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows, exactly as torchreid's engine does (``F.normalize``)."""
    return F.normalize(x, p=2, dim=1)


class DistanceRows:
    """Rows of the (num_query, num_gallery) distance matrix, computed on demand.

    Euclidean distances are squared L2, as torchreid computes them; cosine
    distances are ``1 - cos``. Only the requested rows are ever materialised.

    Args:
        qf: query features (num_query, d).
        gf: gallery features (num_gallery, d).
        metric: ``"euclidean"`` or ``"cosine"``.
        backend: ``"auto"``, ``"torch"`` or ``"faiss"``.
    """

    def __init__(
        self, qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean", backend: str = "auto"
    ) -> None:
        check_metric(metric)
        if qf.shape[1] != gf.shape[1]:
            raise ValueError(
                f"qf and gf must have the same feature size, got {qf.shape[1]} and {gf.shape[1]}"
            )
        self.metric = metric
        self.backend = resolve_backend(backend)
        self.num_query, self.num_gallery = int(qf.shape[0]), int(gf.shape[0])
        if metric == "cosine":
            qf, gf = normalize_features(qf), normalize_features(gf)
        if self.backend == "torch":
            self._q, self._g = qf, gf
            if metric == "euclidean":
                # torchreid: torch.pow(x, 2).sum(dim=1)
                self._q2 = squared_norms(qf)
                self._g2 = squared_norms(gf)
        else:
            self._q = np.ascontiguousarray(qf.cpu().numpy(), dtype=np.float32)
            self._g = np.ascontiguousarray(gf.cpu().numpy(), dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """(num_query, num_gallery)."""
        return self.num_query, self.num_gallery

    def rows(self, start: int, end: int, out: np.ndarray | None = None) -> np.ndarray:
        """Distances of queries ``start:end`` to the whole gallery.

        Args:
            start: first query row.
            end: one past the last query row.
            out: optional float32 C-contiguous buffer with at least ``end - start``
                rows of ``num_gallery`` columns; reused to avoid page faults.

        Returns:
            Array (end - start, num_gallery) float32 (a view of ``out`` if given).
        """
        return self._compute(slice(start, end), end - start, out)

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Distances of the queries at ``index`` (1-D int array) to the gallery."""
        index = np.asarray(index, dtype=np.int64)
        return self._compute(index, len(index), out)

    def _compute(self, sel: Any, n: int, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            out = np.empty((n, self.num_gallery), dtype=np.float32)
        buf = out[:n]
        if self.backend == "torch":
            self._torch_rows(sel, buf)
        else:
            self._faiss_rows(sel, buf)
        return buf

    def _torch_rows(self, sel: Any, buf: np.ndarray) -> None:
        if isinstance(sel, np.ndarray):
            sel = torch.from_numpy(sel).to(self._q.device)
        q = self._q[sel]
        on_cpu = q.device.type == "cpu"
        res = torch.from_numpy(buf) if on_cpu else torch.empty(buf.shape, device=q.device)
        if self.metric == "euclidean":
            # torchreid: (|q|^2 + |g|^2).addmm_(q, g.t(), beta=1, alpha=-2)
            torch.add(self._q2[sel][:, None], self._g2[None, :], out=res)
            res.addmm_(q, self._g.t(), beta=1, alpha=-2)
        else:
            # torchreid: 1 - mm(normalize(q), normalize(g).t())
            torch.mm(q, self._g.t(), out=res)
            res.neg_().add_(1)
        if not on_cpu:
            torch.from_numpy(buf).copy_(res.cpu())

    def _faiss_rows(self, sel: Any, buf: np.ndarray) -> None:
        faiss = import_faiss()
        q = np.ascontiguousarray(self._q[sel])
        n, d = q.shape
        if faiss_num_gpus() > 0:
            metric = faiss.METRIC_L2 if self.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
            faiss.pairwise_distance_gpu(_gpu_res(), q, self._g, D=buf, metric=metric)
        elif self.metric == "euclidean":
            faiss.pairwise_L2sqr(
                d,
                n,
                faiss.swig_ptr(q),
                self.num_gallery,
                faiss.swig_ptr(self._g),
                faiss.swig_ptr(buf),
            )
        else:
            np.matmul(q, self._g.T, out=buf)  # what faiss.pairwise_distances does for IP
        if self.metric == "cosine":
            np.subtract(np.float32(1), buf, out=buf)


def _gpu_res() -> Any:
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = import_faiss().StandardGpuResources()
    return _gpu_resources


def smallest_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest entries of each row, ordered by (distance, column).

    A threshold with about 2k entries below it is estimated from a column sample
    (exact ``np.partition`` for rows it leaves short); only the entries below it
    are sorted.

    Args:
        dist: array (n, m) float32.
        k: number of entries to keep (clipped to m).

    Returns:
        (values (n, k) float32, columns (n, k) int64).
    """
    n, m = dist.shape
    k = min(k, m)
    if m <= max(2048, 8 * k):
        thr = np.partition(dist, k - 1, axis=1)[:, k - 1]
    else:
        starts = np.linspace(0, m - 64, 16).astype(np.int64)
        sample = np.concatenate([dist[:, b : b + 64] for b in starts], axis=1)
        ks = min(sample.shape[1] - 1, -(-2 * k * sample.shape[1] // m))
        thr = np.partition(sample, ks, axis=1)[:, ks]
    flat = np.flatnonzero(dist <= thr[:, None])
    short = np.bincount(flat // m, minlength=n) < k
    if short.any():  # the sample missed: exact k-th value for those rows
        thr[short] = np.partition(dist[short], k - 1, axis=1)[:, k - 1]
        flat = np.flatnonzero(dist <= thr[:, None])
    rows = flat // m
    cols = flat - rows * m
    col_bits, _ = key_layout(m)
    keys = np.sort(pack_keys(rows, dist.reshape(-1)[flat], cols, col_bits))
    rows, cols = unpack_keys(keys, col_bits)
    start = np.searchsorted(rows, np.arange(n))
    take = (start[:, None] + np.arange(k)).reshape(-1)
    cols = cols[take].reshape(n, k)
    return np.take_along_axis(dist, cols, axis=1), cols


def knn(
    qf: torch.Tensor,
    gf: torch.Tensor,
    k: int,
    metric: str = "euclidean",
    backend: str = "auto",
    chunk_size: int = 1024,
    return_rowmax: bool = False,
) -> tuple[np.ndarray, ...]:
    """Exact k nearest gallery items of every query.

    Args:
        qf: query features (num_query, d), float32.
        gf: gallery features (num_gallery, d), float32.
        k: neighbours per query (clipped to num_gallery).
        metric: ``"euclidean"`` (squared L2) or ``"cosine"`` (1 - cos).
        backend: ``"auto"``, ``"torch"`` or ``"faiss"``.
        chunk_size: queries per chunk (torch backend).
        return_rowmax: also return each query's largest distance to the gallery.

    Returns:
        ``(dist (num_query, k) float32, index (num_query, k) int64)``, each row
        ordered by (distance, gallery index); plus ``rowmax (num_query,) float32``
        when ``return_rowmax``.
    """
    check_metric(metric)
    backend = resolve_backend(backend)
    if backend == "faiss":
        return _faiss_knn(qf, gf, k, metric, return_rowmax)
    rows = DistanceRows(qf, gf, metric, "torch")
    nq, ng = rows.shape
    k = min(k, ng)
    dist = np.empty((nq, k), np.float32)
    index = np.empty((nq, k), np.int64)
    rowmax = np.empty(nq, np.float32)
    step = max(1, min(chunk_size, (1 << 23) // ng))
    buf = np.empty((min(step, nq), ng), np.float32)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        d = rows.rows(s, e, out=buf)
        if return_rowmax:
            rowmax[s:e] = d.max(axis=1)
        dist[s:e], index[s:e] = smallest_k(d, k)
    return (dist, index, rowmax) if return_rowmax else (dist, index)


def _faiss_knn(
    qf: torch.Tensor, gf: torch.Tensor, k: int, metric: str, return_rowmax: bool
) -> tuple[np.ndarray, ...]:
    faiss = import_faiss()
    if metric == "cosine":
        qf, gf = normalize_features(qf), normalize_features(gf)
    q = np.ascontiguousarray(qf.cpu().numpy(), dtype=np.float32)
    g = np.ascontiguousarray(gf.cpu().numpy(), dtype=np.float32)
    k = min(k, g.shape[0])
    mt = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    search = _faiss_search_fn(faiss)
    dist, index = search(q, g, k, mt)
    if metric == "cosine":
        dist = (np.float32(1) - dist).astype(np.float32)
    # faiss orders ties its own way: restore the (distance, index) rule
    order = np.lexsort((index, dist), axis=-1)
    dist = np.take_along_axis(dist, order, 1)
    index = np.take_along_axis(index, order, 1).astype(np.int64)
    if not return_rowmax:
        return dist, index
    if metric == "euclidean":
        # max_y |x - y|^2 = |x|^2 + max_y <[-2x, 1], [y, |y|^2]>
        q2 = (q.astype(np.float64) ** 2).sum(1)
        qa = np.hstack([-2 * q, np.ones((len(q), 1), np.float32)])
        ga = np.hstack([g, (g.astype(np.float64) ** 2).sum(1, keepdims=True).astype(np.float32)])
        far, _ = search(qa, ga, 1, faiss.METRIC_INNER_PRODUCT)
        rowmax = (q2 + far[:, 0]).astype(np.float32)
    else:
        far, _ = search(np.ascontiguousarray(-q), g, 1, faiss.METRIC_INNER_PRODUCT)
        rowmax = (np.float32(1) + far[:, 0]).astype(np.float32)
    return dist, index, rowmax


def _faiss_search_fn(faiss: Any) -> Any:
    if faiss_num_gpus() > 0:
        return lambda q, g, k, mt: faiss.knn_gpu(_gpu_res(), q, g, k, metric=mt)
    return lambda q, g, k, mt: faiss.knn(q, g, k, metric=mt)
