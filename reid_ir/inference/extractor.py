"""Features of any images from a trained model: the run's own model, weights and test preprocessing.

:class:`FeatureExtractor` turns image paths, PIL images, HxWx3 uint8 RGB arrays or
preprocessed tensors into L2-normalised (N, D) float32 features, in batches, on the
GPU when there is one. It is built from a run folder (``config.yaml`` +
``checkpoints/``), or from a config and a weights file (a reid_ir checkpoint or a
torchreid one). The model is built by the same function and config mapping the
training builder uses (:func:`reid_ir.models.backbone_kwargs`), so the neck and the
side of it retrieval reads (``model.neck``, ``test.feature``) are the run's own.
Preprocessing is torchreid's test transform (resize to ``data.height`` x
``data.width``, ToTensor, normalise with ``data.norm_mean`` / ``data.norm_std``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

#: lists at least this long get a progress bar (``progress=None``)
PROGRESS_MIN_IMAGES = 1000


def build_test_transform(
    height: int, width: int, norm_mean: Sequence[float], norm_std: Sequence[float]
) -> Callable:
    """torchreid's test transform: Resize((height, width)), ToTensor, Normalize(mean, std).

    Built by torchreid's own ``build_transforms`` (its progress prints silenced),
    so it is the transform torchreid's data manager evaluates with.

    Returns:
        A callable PIL image -> tensor (3, height, width) float32.
    """
    from reid_ir import compat

    with contextlib.redirect_stdout(io.StringIO()):
        _, transform_te = compat.data.transforms.build_transforms(
            int(height),
            int(width),
            transforms=[],
            norm_mean=list(norm_mean),
            norm_std=list(norm_std),
        )
    return transform_te


def build_model_from_cfg(cfg: Any) -> nn.Module:
    """The run's embedding model with untrained weights, built as training builds it.

    ``model.pretrained`` is ignored (the weights come from a checkpoint next), so
    nothing is downloaded.
    """
    from reid_ir.models import backbone_kwargs, build_backbone

    kwargs = backbone_kwargs(cfg)
    kwargs.update(pretrained=False, use_gpu=False)
    return build_backbone(**kwargs)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: the first CUDA device when torch sees one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _to_pil(item: Any, where: str):
    """One image input as an RGB PIL image; paths are read failing with the file's name."""
    from PIL import Image

    from reid_ir.data.checked import read_image_checked

    if isinstance(item, (str, os.PathLike)):
        return read_image_checked(item)
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(
                f"{where}: an array image must be (H, W, 3) uint8 RGB, got shape "
                f"{item.shape} dtype {item.dtype}"
            )
        return Image.fromarray(item, "RGB")
    raise TypeError(
        f"{where}: expected an image path, a PIL image or an (H, W, 3) uint8 array, "
        f"got {type(item).__name__}"
    )


class _ImageList(torch.utils.data.Dataset):
    """Images of a list, preprocessed one by one (for a DataLoader's workers)."""

    def __init__(self, items: Sequence[Any], transform: Callable) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(_to_pil(self.items[i], f"image {i}"))


class FeatureExtractor:
    """Image -> L2-normalised embedding with a trained model.

    Args:
        model: the embedding model (:class:`reid_ir.models.EmbeddingModel` or any
            module mapping (B, 3, H, W) to (B, D)); put in eval mode here.
        transform: PIL image -> tensor (3, H, W), e.g. :func:`build_test_transform`.
        device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda:0"``...
        batch_size: images per forward pass.
        num_workers: DataLoader processes that decode and preprocess image
            lists (0: in this process).
        normalize: L2-normalise the features (inner product = cosine).

    Attributes:
        model, transform, device, batch_size, num_workers, normalize.
        feat_dim: D, when the model exposes it (``EmbeddingModel.feat_dim``).
        cfg: the config it was built from (``from_run`` / ``from_config``), else None.
        weights: path of the loaded weights, else None.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: Callable,
        device: str | torch.device | None = "auto",
        batch_size: int = 64,
        num_workers: int = 0,
        normalize: bool = True,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.transform = transform
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.normalize = bool(normalize)
        self.feat_dim = getattr(model, "feat_dim", None)
        self.cfg: Any = None
        self.weights: str | None = None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_config(
        cls,
        config: Any,
        weights: str | os.PathLike,
        opts: Sequence[str] = (),
        **kwargs: Any,
    ) -> FeatureExtractor:
        """Build from a config (YAML path or CfgNode) and a weights file.

        Args:
            config: a YAML config file (``_BASE_`` chains work) or a loaded CfgNode.
            weights: a reid_ir checkpoint (model under ``'model'``) or torchreid
                weights (``{'state_dict': ...}`` of the bare backbone), loaded with
                :func:`reid_ir.models.load_model_weights`.
            opts: KEY VALUE overrides applied to a YAML config.
            **kwargs: :class:`FeatureExtractor` arguments (device, batch_size, ...);
                ``batch_size`` defaults to ``test.batch_size``.
        """
        from reid_ir.config import load_cfg
        from reid_ir.models import load_model_weights

        cfg = load_cfg(config, opts) if isinstance(config, (str, os.PathLike)) else config
        model = build_model_from_cfg(cfg)
        load_model_weights(model, os.fspath(weights))
        out = cls._from_cfg(cfg, model, **kwargs)
        out.weights = os.fspath(weights)
        return out

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        opts: Sequence[str] = (),
        **kwargs: Any,
    ) -> FeatureExtractor:
        """Build from a run folder: its ``config.yaml`` and its newest (or a given) checkpoint.

        Args:
            run_dir: the folder a training run wrote (``data.save_dir``).
            checkpoint: a checkpoint file; default: the one ``checkpoints/last_checkpoint`` names.
            opts: KEY VALUE config overrides (e.g. ``["test.feature", "before_bn"]``,
                or ``["model.neck", "none"]`` for a run older than ``model.neck``).
            **kwargs: :class:`FeatureExtractor` arguments.

        Raises:
            FileNotFoundError: ``run_dir`` has no ``config.yaml``.
            CheckpointError: no checkpoint, a damaged one, or one whose model does
                not match the config (names the missing / unexpected tensors).
        """
        from reid_ir.config import load_cfg
        from reid_ir.engine.checkpoint import check_state_dict_compatible, load_checkpoint

        run_dir = Path(run_dir)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{cfg_path} does not exist: expected a run folder written by tools/train_net.py "
                "(config.yaml + checkpoints/)"
            )
        cfg = load_cfg(cfg_path, opts)
        ckpt = load_checkpoint(checkpoint if checkpoint is not None else run_dir)
        model = build_model_from_cfg(cfg)
        check_state_dict_compatible(model, ckpt["model"], "model", ckpt["path"])
        model.load_state_dict(ckpt["model"])
        logger.info("%s: epoch %s weights from %s", run_dir, ckpt.get("epoch"), ckpt["path"])
        out = cls._from_cfg(cfg, model, **kwargs)
        out.weights = ckpt["path"]
        return out

    @classmethod
    def _from_cfg(cls, cfg: Any, model: nn.Module, **kwargs: Any) -> FeatureExtractor:
        kwargs.setdefault("batch_size", int(cfg.test.batch_size))
        if kwargs.get("device", "auto") in (None, "auto") and not cfg.use_gpu:
            kwargs["device"] = "cpu"
        transform = build_test_transform(
            cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std
        )
        out = cls(model, transform, **kwargs)
        out.cfg = cfg
        return out

    # ------------------------------------------------------------------ extraction
    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the model sees, when built from a config."""
        return None if self.cfg is None else (int(self.cfg.data.height), int(self.cfg.data.width))

    @torch.inference_mode()
    def embed_tensor(self, images: torch.Tensor) -> np.ndarray:
        """Features of a preprocessed batch.

        Args:
            images: (B, 3, H, W) or (3, H, W) float, already resized and normalised.

        Returns:
            (B, D) float32 numpy array (L2-normalised when ``normalize``).

        Raises:
            ValueError: the model produced NaN or inf.
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        feats = self.model(images.to(self.device, non_blocking=True)).float()
        if self.normalize:
            feats = F.normalize(feats, p=2, dim=1)
        out = feats.cpu().numpy()
        if not np.isfinite(out).all():
            raise ValueError("the model produced NaN/inf features: are the weights diverged?")
        return out

    def iter_batches(
        self, images: Sequence[Any], progress: bool | None = None
    ) -> Iterator[np.ndarray]:
        """Features of ``images`` (paths, PIL images or uint8 RGB arrays), one batch at a time.

        Yields:
            (b, D) float32 arrays, in input order, ``batch_size`` rows each but the last.
        """
        dataset = _ImageList(images, self.transform)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        show = len(images) >= PROGRESS_MIN_IMAGES if progress is None else progress
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(images), unit="img", desc="features")
        for batch in loader:
            yield self.embed_tensor(batch)
            if show:
                bar.update(len(batch))
        if show:
            bar.close()

    def __call__(self, images: Any, progress: bool | None = None) -> np.ndarray:
        """Features of one image or many.

        Args:
            images: a path, PIL image or (H, W, 3) uint8 RGB array; a list of those;
                or a preprocessed tensor (B, 3, H, W) / (3, H, W).
            progress: show a progress bar (default: for lists of 1000 images or more).

        Returns:
            (N, D) float32 array, L2-normalised rows (when ``normalize``).
        """
        if isinstance(images, torch.Tensor):
            return self.embed_tensor(images)
        if isinstance(images, np.ndarray) and images.ndim == 4:  # (N, H, W, 3) stack
            images = list(images)
        elif isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert"):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("no images given")
        return np.concatenate(list(self.iter_batches(images, progress)), axis=0)
