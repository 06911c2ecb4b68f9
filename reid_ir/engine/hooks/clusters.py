"""Per-class spherical k-means clusters of the training embeddings (CLMLE).

:class:`ClusterHook` keeps, for every training identity, up to K cluster
centroids of its L2-normalised training embeddings. The CLMLE loss
(:mod:`reid_ir.losses.clmle`) reads them at every step; the k-nearest-cluster
classifier (:mod:`reid_ir.evaluation.knc`) reads them at evaluation.

When the clusters are recomputed:

* ``before_train``: only when the hook holds no clusters yet (a fresh run). A
  resumed run restores centroids and assignments from the checkpoint instead;
* ``after_epoch``: every ``refresh_epochs`` epochs (priority ``PRIORITY_STATE``,
  so the checkpoint written later in the same ``after_epoch`` holds the new
  clusters).

Storage: a flat centroid table ``centroids`` (M, D) sorted by class, its class
ids ``centroid_labels`` (M,), and ``assignments`` (N,) - the centroid row of
every training image in the order of ``trainer.extract_train_embeddings()``.
:meth:`ClusterHook.padded` gives the (C, K, D) + (C, K) view the loss uses.

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

from reid_ir.engine.hooks.base import PRIORITY_STATE, HookBase

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


def _broadcast_from_rank0(
    tensors: list[torch.Tensor] | None, dtypes: list[torch.dtype], dim: int
) -> list[torch.Tensor]:
    """Broadcast rank 0's (centroids, labels, assignments) to every rank."""
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


class ClusterHook(HookBase):
    """Holds per-class clusters of the training embeddings; refreshes and checkpoints them.

    Args:
        num_classes: C, the number of training identities.
        clusters_per_class: K, the most clusters of one class.
        refresh_epochs: re-cluster after every this many epochs (0: only at the
            start of a fresh run).
        min_cluster_size: images per cluster a class needs to get more than one
            (see :func:`num_clusters_for`).
        niter: k-means iterations.
        seed: base k-means seed (class c uses ``seed + c``).
    """

    priority = PRIORITY_STATE

    def __init__(
        self,
        num_classes: int,
        clusters_per_class: int = 3,
        refresh_epochs: int = 1,
        min_cluster_size: int = 1,
        niter: int = 20,
        seed: int = 0,
    ) -> None:
        self.num_classes = num_classes
        self.clusters_per_class = clusters_per_class
        self.refresh_epochs = refresh_epochs
        self.min_cluster_size = min_cluster_size
        self.niter = niter
        self.seed = seed
        self.centroids: torch.Tensor | None = None  # (M, D)
        self.centroid_labels: torch.Tensor | None = None  # (M,)
        self.assignments: torch.Tensor | None = None  # (N,)
        self.refreshed_epoch = -1  # epochs trained when the clusters were computed
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
        """Install clusters (CPU copies) and drop the cached padded views."""
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

    def refresh(
        self,
        features: torch.Tensor | None = None,
        pids: torch.Tensor | None = None,
        epochs_done: int = -1,
    ) -> None:
        """Re-cluster ``features``/``pids`` (default: the trainer's training-set embeddings).

        Args:
            features: (N, D) embeddings or None to call ``trainer.extract_train_embeddings()``.
            pids: (N,) class ids.
            epochs_done: training epochs finished by the model that embedded
                ``features`` (stored as ``refreshed_epoch``; -1: unknown).
        """
        if features is None:
            features, pids = self.trainer.extract_train_embeddings()
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
                self.niter,
                self.seed,
            )
        if _distributed():
            dtypes = [torch.float32, torch.long, torch.long]
            result = _broadcast_from_rank0(
                list(result) if result is not None else None, dtypes, features.shape[1]
            )
        self.set_clusters(*result, epoch=epoch)
        counts = torch.bincount(self.centroid_labels, minlength=self.num_classes)
        logger.info(
            "CLMLE clusters refreshed after %d epochs: %d centroids over %d classes (%d with >1 cluster) in %.1fs",
            epoch, len(self.centroid_labels), int((counts > 0).sum()), int((counts > 1).sum()),
            time.perf_counter() - start,
        )  # fmt: skip

    def padded(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        """Padded centroids (C, K, D) and validity mask (C, K) on ``device`` (cached).

        Raises:
            RuntimeError: when no clusters exist yet.
        """
        if not self.has_clusters:
            raise RuntimeError(
                "ClusterHook has no clusters yet: call refresh() or run before_train"
            )
        key = (str(device), dtype)
        if key not in self._cache:
            padded, valid = pad_centroids(self.centroids, self.centroid_labels, self.num_classes)
            self._cache[key] = (padded.to(device=device, dtype=dtype), valid.to(device))
        return self._cache[key]

    def before_train(self) -> None:
        if self.has_clusters:
            logger.info(
                "CLMLE clusters already present (restored from a checkpoint; computed after %d epochs)",
                self.refreshed_epoch,
            )
            return
        self.refresh(epochs_done=int(getattr(self.trainer, "epoch", 0)))

    def after_epoch(self) -> None:
        if self.refresh_epochs > 0 and (int(self.trainer.epoch) + 1) % self.refresh_epochs == 0:
            self.refresh(epochs_done=int(self.trainer.epoch) + 1)

    def state_dict(self) -> dict:
        if not self.has_clusters:
            return {}
        return {
            "centroids": self.centroids.clone(),
            "centroid_labels": self.centroid_labels.clone(),
            "assignments": self.assignments.clone(),
            "refreshed_epoch": self.refreshed_epoch,
            "num_classes": self.num_classes,
        }

    def load_state_dict(self, state: dict) -> None:
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
