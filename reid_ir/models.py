"""Backbones from torchreid's model zoo, returning embeddings in every mode.

torchreid's models end in a ``classifier`` Linear layer whose output they
return in training mode. In reid_ir the classifier belongs to the loss, so
:func:`build_backbone` replaces it with the identity: the model then returns
its (B, D) embedding in train and eval mode alike.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from reid_ir import compat

logger = logging.getLogger(__name__)


class EmbeddingModel(nn.Module):
    """A torchreid backbone without its classifier, plus an optional projection.

    Args:
        backbone: a torchreid model with ``classifier`` and ``feature_dim``.
        embedding_dim: 0 keeps the backbone's feature size; >0 adds
            Linear(feature_dim, embedding_dim) + BatchNorm1d.

    Attributes:
        feat_dim: size D of the returned embeddings.
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int = 0) -> None:
        super().__init__()
        if not hasattr(backbone, "classifier") or not hasattr(backbone, "feature_dim"):
            raise ValueError(
                f"model {type(backbone).__name__} has no 'classifier' layer or 'feature_dim' attribute; "
                "reid_ir needs torchreid models built that way (osnet_*, resnet*, ...)"
            )
        backbone.classifier = nn.Identity()
        self.backbone = backbone
        self.feat_dim = int(backbone.feature_dim)
        self.neck: nn.Module = nn.Identity()
        if embedding_dim > 0:
            self.neck = nn.Sequential(nn.Linear(self.feat_dim, embedding_dim), nn.BatchNorm1d(embedding_dim))
            self.feat_dim = embedding_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: embeddings (B, D)."""
        out = self.backbone(images)
        if isinstance(out, (tuple, list)):  # models built with loss='triplet' return (y, v)
            out = out[-1]
        return self.neck(out)


def build_backbone(name: str, pretrained: bool = False, embedding_dim: int = 0, use_gpu: bool = False) -> EmbeddingModel:
    """Build torchreid model ``name`` as an :class:`EmbeddingModel`.

    Args:
        name: torchreid model name (``osnet_x0_25``, ``resnet50``, ...).
        pretrained: load ImageNet weights (needs them cached or internet).
        embedding_dim: see :class:`EmbeddingModel`.
        use_gpu: forwarded to torchreid's factory.

    Raises:
        KeyError: unknown model name (lists the known ones).
    """
    try:
        backbone = compat.models.build_model(name, num_classes=1, loss="softmax", pretrained=pretrained, use_gpu=use_gpu)
    except KeyError as e:
        raise KeyError(f"model.name {name!r} is not a torchreid model: {e}") from e
    model = EmbeddingModel(backbone, embedding_dim)
    logger.info("backbone %s (pretrained=%s): %d-d embeddings", name, pretrained, model.feat_dim)
    return model


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load weights for ``model`` from a reid_ir checkpoint or a torchreid one.

    torchreid checkpoints (``{'state_dict': ...}``, keys possibly prefixed with
    ``module.``) are loaded without their classifier; reid_ir checkpoints store
    the backbone under ``'model'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict matching the model.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.load_weights: no such file {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / not a torch file
        raise ValueError(f"model.load_weights: cannot read {path!r} as a torch checkpoint: {e}") from e
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.load_weights: {path!r} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    if not any(k in own for k in state):  # torchreid checkpoint of the bare backbone
        state = {f"backbone.{k}": v for k, v in state.items()}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"model.load_weights: no tensor in {path!r} matches the model's parameters")
    missing = sorted(set(own) - set(matched))
    model.load_state_dict(matched, strict=False)
    logger.info("loaded %d tensors from %s (%d model tensors not in the file)", len(matched), path, len(missing))
    if missing:
        logger.warning("not loaded from %s: %s", path, missing[:10])
