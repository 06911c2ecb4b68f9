"""Per-class spherical k-means clusters of the training embeddings (CLMLE's state).

:class:`ClusterBank` keeps, for every training identity, up to K cluster
centroids of its L2-normalised training embeddings. It is owned by the CLMLE
loss (:mod:`reid_ir.losses.clmle`), which reads it at every step; the
k-nearest-cluster classifier (:mod:`reid_ir.evaluation.knc`) reads it at
evaluation. When to recompute the clusters is the engine's business
(:class:`reid_ir.engine.hooks.clusters.ClusterHook`, built from the loss); this
module only computes and holds them.

Storage: a flat centroid table ``centroids`` (M, D) sorted by class, its class
ids ``centroid_labels`` (M,), and ``assignments`` (N,) - the centroid row of
every training image in the order of the features given to
:meth:`ClusterBank.refresh`. :meth:`ClusterBank.padded` gives the (C, K, D) +
(C, K) view the loss uses.

Distributed: when ``torch.distributed`` is initialised, k-means runs on rank 0
and the result is broadcast, so every rank holds identical clusters.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def num_clusters_for(num_images: int, max_clusters: int, min_cluster_size: int = 1) -> int:
    """Clusters given to a class: ``clamp(num_images // min_cluster_size, 1, max_clusters)``.

    A class with a single image gets one cluster; a class gets more clusters
    only when each can hold ``min_cluster_size`` images on average.
    """
    if num_images <= 0:
        return 0
    return int(max(1, min(max_clusters, num_images // max(1, min_cluster_size))))


def _spherical_kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """(k, D) unit centroids of the unit rows ``x`` (n, D), n >= k, via faiss."""
    if k == 1:
        mean = x.mean(axis=0, keepdims=True)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)
    import faiss  # imported here: data never loads (and faiss never initialises) at import

    km = faiss.Kmeans(
        x.shape[1],
        k,
        spherical=True,
        niter=niter,
        seed=seed,
        min_points_per_centroid=1,  # small classes are the point here; no warning per class
        max_points_per_centroid=1 << 30,  # never subsample a class
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids


def cluster_per_class(
    features: torch.Tensor,
    pids: torch.Tensor,
    max_clusters: int,
    min_cluster_size: int = 1,
    niter: int = 20,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spherical k-means over each class's L2-normalised embeddings.

    One faiss call per class (a Python loop over classes; run once per refresh,
    never per step). Class c uses seed ``seed + c`` so its clusters do not depend
    on the other classes. Clusters left empty by the final assignment are dropped.

    Args:
        features: (N, D) embeddings (any norm; normalised here).
        pids: (N,) class ids in [0, C).
        max_clusters: K, the most clusters of one class.
        min_cluster_size: see :func:`num_clusters_for`.
        niter: k-means iterations.
        seed: base seed.

    Returns:
        ``centroids`` (M, D) float32 unit vectors, grouped by ascending class;
        ``centroid_labels`` (M,) int64; ``assignments`` (N,) int64 row of
        ``centroids`` nearest (cosine) to each image among its class's centroids.
    """
    x = F.normalize(torch.as_tensor(features).detach().float().cpu(), dim=1).numpy()
    y = torch.as_tensor(pids).detach().cpu().long().numpy()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"features have {x.shape[0]} rows but pids {y.shape[0]}")
    order = np.argsort(y, kind="stable")
    classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    cents, labels = [], []
    assignments = np.empty(len(y), dtype=np.int64)
    row = 0
    for c, start, n in zip(classes.tolist(), starts.tolist(), counts.tolist(), strict=True):
        idx = order[start : start + n]
        xc = x[idx]
        k = num_clusters_for(n, max_clusters, min_cluster_size)
        cc = _spherical_kmeans(xc, k, niter, seed + c)
        nearest = (xc @ cc.T).argmax(axis=1)
        used = np.unique(nearest)  # drop clusters that ended up empty
        remap = np.full(len(cc), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        assignments[idx] = row + remap[nearest]
        cents.append(cc[used])
        labels.append(np.full(len(used), c, dtype=np.int64))
        row += len(used)
    d = x.shape[1]
    centroids = torch.from_numpy(np.concatenate(cents)) if cents else torch.zeros(0, d)
    centroid_labels = (
        torch.from_numpy(np.concatenate(labels)) if labels else torch.zeros(0, dtype=torch.long)
    )
    return F.normalize(centroids.float(), dim=1), centroid_labels, torch.from_numpy(assignments)


def pad_centroids(
    centroids: torch.Tensor, centroid_labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (M, D) table sorted by class -> padded (C, K, D) tensor + (C, K) mask.

    K is the largest number of clusters of any class; padded slots are zero
    vectors with ``valid`` False.
    """
    counts = torch.bincount(centroid_labels, minlength=num_classes)
    k = max(int(counts.max()) if len(counts) else 1, 1)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(centroid_labels)) - first[centroid_labels]
    padded = centroids.new_zeros(num_classes, k, centroids.shape[1])
    valid = torch.zeros(num_classes, k, dtype=torch.bool)
    padded[centroid_labels, slot] = centroids
    valid[centroid_labels, slot] = True
    return padded, valid


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_from_rank0(
    tensors: list[torch.Tensor] | None, dtypes: list[torch.dtype], dim: int
) -> list[torch.Tensor]:
    """Broadcast rank 0's (centroids (M, D), labels (M,), assignments (N,)) to every rank.

    Args:
        tensors: rank 0's three tensors; None on the other ranks.
        dtypes: their dtypes (the receiving ranks allocate with them).
        dim: D.

    Returns:
        The three tensors, on the CPU, identical on every rank.
    """
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    sizes = torch.zeros(2, dtype=torch.long, device=device)
    if tensors is not None:
        sizes[0], sizes[1] = len(tensors[1]), len(tensors[2])
    dist.broadcast(sizes, 0)
    m, n = (int(s) for s in sizes.tolist())
    shapes = [(m, dim), (m,), (n,)]
    out = []
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        t = (
            tensors[i].to(device)
            if tensors is not None
            else torch.empty(shape, dtype=dtype, device=device)
        )
        dist.broadcast(t, 0)
        out.append(t.cpu())
    return out


class ClusterBank(nn.Module):
    """Per-class clusters of the training embeddings, owned by a loss.

    The tables are plain CPU tensor attributes, not buffers: their row count M
    changes at every refresh, and the owning loss's ``state_dict`` stays free of
    them (checkpoints carry them through the engine's ``ClusterHook``, with
    :meth:`cluster_state` / :meth:`load_cluster_state`). They are named so, not
    ``state_dict``, because ``nn.Module.state_dict`` is what the owning loss's
    own ``state_dict`` is built from.

    Args:
        num_classes: C, the number of training identities.
        clusters_per_class: K, the most clusters of one class.
        min_cluster_size: images per cluster a class needs to get more than one
            (see :func:`num_clusters_for`).
        kmeans_iters: k-means iterations.
        seed: base k-means seed (class c uses ``seed + c``).

    Attributes:
        centroids: (M, D) float32 unit centroids grouped by ascending class, or None.
        centroid_labels: (M,) int64 class of each centroid, or None.
        assignments: (N,) int64 centroid row of each training image, or None.
        refreshed_epoch: epochs trained by the model that embedded the clustered
            features (-1: unknown or never clustered).
    """

    def __init__(
        self,
        num_classes: int,
        clusters_per_class: int = 3,
        min_cluster_size: int = 1,
        kmeans_iters: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.clusters_per_class = clusters_per_class
        self.min_cluster_size = min_cluster_size
        self.kmeans_iters = kmeans_iters
        self.seed = seed
        self.centroids: torch.Tensor | None = None  # (M, D)
        self.centroid_labels: torch.Tensor | None = None  # (M,)
        self.assignments: torch.Tensor | None = None  # (N,)
        self.refreshed_epoch = -1
        self._cache: dict = {}

    @property
    def has_clusters(self) -> bool:
        """True once clusters were computed or restored."""
        return self.centroids is not None and len(self.centroids) > 0

    def set_clusters(
        self,
        centroids: torch.Tensor,
        centroid_labels: torch.Tensor,
        assignments: torch.Tensor,
        epoch: int = -1,
    ) -> None:
        """Install clusters (CPU copies) and drop the cached padded views.

        Args:
            centroids: (M, D) unit centroids grouped by ascending class.
            centroid_labels: (M,) class ids in [0, C), ascending.
            assignments: (N,) centroid row of each training image.
            epoch: stored as ``refreshed_epoch``.

        Raises:
            ValueError: labels outside [0, C) or not grouped by ascending class.
        """
        labels = centroid_labels.long().cpu()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"centroid labels must lie in [0, {self.num_classes})")
        if len(labels) > 1 and bool((labels[1:] < labels[:-1]).any()):
            raise ValueError("centroids must be grouped by ascending class id")
        self.centroids = centroids.detach().float().cpu()
        self.centroid_labels = labels
        self.assignments = assignments.long().cpu()
        self.refreshed_epoch = int(epoch)
        self._cache = {}

    @torch.no_grad()
    def refresh(self, features: torch.Tensor, pids: torch.Tensor, epochs_done: int = -1) -> None:
        """Re-cluster ``features``/``pids`` (on rank 0, broadcast under torch.distributed).

        Args:
            features: (N, D) embeddings of the training set.
            pids: (N,) class ids.
            epochs_done: training epochs finished by the model that embedded
                ``features`` (stored as ``refreshed_epoch``; -1: unknown).
        """
        features = torch.as_tensor(features)
        epoch = int(epochs_done)
        start = time.perf_counter()
        result = None
        if not _distributed() or dist.get_rank() == 0:
            result = cluster_per_class(
                features,
                pids,
                self.clusters_per_class,
                self.min_cluster_size,
                self.kmeans_iters,
                self.seed,
            )
        if _distributed():
            dtypes = [torch.float32, torch.long, torch.long]
            result = broadcast_from_rank0(
                list(result) if result is not None else None, dtypes, features.shape[1]
            )
        self.set_clusters(*result, epoch=epoch)
        counts = torch.bincount(self.centroid_labels, minlength=self.num_classes)
        logger.info(
            "CLMLE clusters refreshed after %d epochs: %d centroids over %d classes (%d with >1 cluster) in %.1fs",
            epoch, len(self.centroid_labels), int((counts > 0).sum()), int((counts > 1).sum()),
            time.perf_counter() - start,
        )  # fmt: skip

    def padded(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded centroids (C, K, D) and validity mask (C, K) on ``device`` (cached).

        Raises:
            RuntimeError: when no clusters exist yet.
        """
        if not self.has_clusters:
            raise RuntimeError(
                "ClusterBank has no clusters yet: call refresh() (the engine's ClusterHook "
                "does in before_train)"
            )
        key = (str(device), dtype)
        if key not in self._cache:
            padded, valid = pad_centroids(self.centroids, self.centroid_labels, self.num_classes)
            self._cache[key] = (padded.to(device=device, dtype=dtype), valid.to(device))
        return self._cache[key]

    def cluster_state(self) -> dict:
        """The clusters as a checkpointable dict (empty without clusters).

        Keys: ``centroids`` (M, D), ``centroid_labels`` (M,), ``assignments`` (N,),
        ``refreshed_epoch``, ``num_classes``.
        """
        if not self.has_clusters:
            return {}
        return {
            "centroids": self.centroids.clone(),
            "centroid_labels": self.centroid_labels.clone(),
            "assignments": self.assignments.clone(),
            "refreshed_epoch": self.refreshed_epoch,
            "num_classes": self.num_classes,
        }

    def load_cluster_state(self, state: dict) -> None:
        """Restore :meth:`cluster_state`'s dict; an empty one leaves the bank as it is (warns).

        Raises:
            ValueError: the state is for another number of classes.
        """
        if not state or "centroids" not in state:
            logger.warning(
                "checkpoint holds no CLMLE clusters; they will be recomputed before training"
            )
            return
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"checkpoint clusters are for {state['num_classes']} classes, the loss has {self.num_classes}"
            )
        self.set_clusters(
            state["centroids"],
            state["centroid_labels"],
            state["assignments"],
            epoch=state["refreshed_epoch"],
        )

    def extra_repr(self) -> str:
        m = len(self.centroids) if self.has_clusters else 0
        return (
            f"num_classes={self.num_classes}, clusters_per_class={self.clusters_per_class}, "
            f"min_cluster_size={self.min_cluster_size}, centroids={m}"
        )
