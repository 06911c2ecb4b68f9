"""Backbones from torchreid's model zoo, returning signed embeddings through a neck.

torchreid's models end in a ``classifier`` Linear layer whose output they
return in training mode. In reid_ir the classifier belongs to the loss, so
:func:`build_backbone` replaces it with the identity, and a *neck* sits between
the backbone's pooled feature and every loss (``model.neck``):

============ ================================================================
``bnneck``   BoT / fast-reid: the pooled feature without a trailing ReLU ->
             BatchNorm1d whose bias is frozen at 0. For ``osnet_*`` the
             backbone's own ``fc`` (Linear -> BN -> ReLU) loses its ReLU and
             its BN becomes the neck's; other backbones get a new BN.
``linear_bn`` Linear(feature_dim, ``model.embedding_dim``) -> BatchNorm1d.
``none``     the backbone's output as torchreid returns it (for ``osnet_*``
             after a ReLU, so every feature is >= 0); kept to reproduce old runs.
============ ================================================================

Cosine heads need signed features: with non-negative ones every class center
lies in the positive orthant and cosines to wrong classes cannot go below 0.

In training mode the model returns the neck's output (after the BN). In eval
mode it returns the side ``test_feature`` names (``test.feature``):
``after_bn`` (default) or ``before_bn``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from reid_ir import compat
from reid_ir.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

#: ``model.neck`` values.
NECKS = ("bnneck", "linear_bn", "none")
#: ``test.feature`` values: which side of the neck retrieval reads.
TEST_FEATURES = ("after_bn", "before_bn")


def _frozen_bias_bn(bn: nn.BatchNorm1d) -> nn.BatchNorm1d:
    """``bn`` with its bias set to 0 and frozen (BoT's BNNeck), weight 1."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


def _split_osnet_fc(backbone: nn.Module) -> nn.BatchNorm1d | None:
    """Take the BN out of an OSNet-style ``fc`` (Linear -> BN -> ReLU), dropping the ReLU.

    Returns the BN (for the neck) and leaves ``backbone.fc`` as the layers
    before it, or returns None when ``fc`` does not end that way.
    """
    fc = getattr(backbone, "fc", None)
    if not isinstance(fc, nn.Sequential):
        return None
    layers = list(fc)
    if layers and isinstance(layers[-1], nn.ReLU):
        layers = layers[:-1]
    if not layers or not isinstance(layers[-1], nn.BatchNorm1d):
        return None
    backbone.fc = nn.Sequential(*layers[:-1])
    return layers[-1]


class EmbeddingModel(nn.Module):
    """A torchreid backbone without its classifier, followed by a neck.

    Args:
        backbone: a torchreid model with ``classifier`` and ``feature_dim``.
        neck: one of :data:`NECKS`.
        embedding_dim: output size of the ``linear_bn`` neck (0 with the other necks).
        test_feature: one of :data:`TEST_FEATURES`: what eval mode returns.

    Attributes:
        feat_dim: size D of the returned embeddings.
        pre_neck: layers between the backbone output and the neck's BN
            (identity, or the ``linear_bn`` projection).
        bn: the neck's BatchNorm1d (identity for ``none``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: str = "bnneck",
        embedding_dim: int = 0,
        test_feature: str = "after_bn",
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "classifier") or not hasattr(backbone, "feature_dim"):
            raise ConfigError(
                f"model {type(backbone).__name__} has no 'classifier' layer or 'feature_dim' attribute; "
                "reid_ir needs torchreid models built that way (osnet_*, resnet*, ...)"
            )
        if neck not in NECKS:
            raise ConfigError(f"model.neck: unknown neck {neck!r}; expected one of {list(NECKS)}")
        if test_feature not in TEST_FEATURES:
            raise ConfigError(
                f"test.feature: unknown feature side {test_feature!r}; expected one of {list(TEST_FEATURES)}"
            )
        if neck == "linear_bn" and embedding_dim <= 0:
            raise ConfigError("model.neck linear_bn needs model.embedding_dim > 0")
        if neck != "linear_bn" and embedding_dim > 0:
            raise ConfigError(
                f"model.embedding_dim {embedding_dim} needs model.neck linear_bn (got {neck!r})"
            )
        backbone.classifier = nn.Identity()
        self.neck_name, self.test_feature = neck, test_feature
        self.feat_dim = int(backbone.feature_dim)
        self.pre_neck: nn.Module = nn.Identity()
        self.bn: nn.Module = nn.Identity()
        if neck == "bnneck":
            bn = _split_osnet_fc(backbone) or nn.BatchNorm1d(self.feat_dim)
            self.bn = _frozen_bias_bn(bn)
        elif neck == "linear_bn":
            self.pre_neck = nn.Linear(self.feat_dim, embedding_dim)
            self.bn = nn.BatchNorm1d(embedding_dim)
            self.feat_dim = embedding_dim
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W). Returns: embeddings (B, D), see the class docstring."""
        out = self.backbone(images)
        if isinstance(out, (tuple, list)):  # models built with loss='triplet' return (y, v)
            out = out[-1]
        before = self.pre_neck(out)
        if not self.training and self.test_feature == "before_bn":
            return before
        return self.bn(before)


def build_backbone(
    name: str,
    pretrained: bool = False,
    embedding_dim: int = 0,
    use_gpu: bool = False,
    neck: str = "bnneck",
    test_feature: str = "after_bn",
) -> EmbeddingModel:
    """Build torchreid model ``name`` as an :class:`EmbeddingModel`.

    Args:
        name: torchreid model name (``osnet_x0_25``, ``resnet50``, ...).
        pretrained: load ImageNet weights (needs them cached or internet).
        embedding_dim: see :class:`EmbeddingModel`.
        use_gpu: forwarded to torchreid's factory.
        neck: see :class:`EmbeddingModel`.
        test_feature: see :class:`EmbeddingModel`.

    Raises:
        ConfigError: unknown model name (lists the known ones).
    """
    try:
        backbone = compat.models.build_model(name, num_classes=1, loss="softmax", pretrained=pretrained, use_gpu=use_gpu)
    except KeyError as e:
        raise ConfigError(f"model.name {name!r} is not a torchreid model: {e}") from e
    model = EmbeddingModel(backbone, neck, embedding_dim, test_feature)
    logger.info(
        "backbone %s (pretrained=%s), neck %s: %d-d embeddings, retrieval reads %s",
        name, pretrained, neck, model.feat_dim, test_feature,
    )
    return model


def backbone_kwargs(cfg) -> dict:
    """Keyword arguments of :func:`build_backbone` from a config (``model.*``, ``test.feature``)."""
    return {
        "name": cfg.model.name,
        "pretrained": bool(cfg.model.pretrained),
        "embedding_dim": int(cfg.model.embedding_dim),
        "use_gpu": bool(cfg.use_gpu and torch.cuda.is_available()),
        "neck": str(cfg.model.neck),
        "test_feature": str(cfg.test.feature),
    }


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load weights for ``model`` from a reid_ir checkpoint or a torchreid one.

    torchreid checkpoints (``{'state_dict': ...}``, keys possibly prefixed with
    ``module.``) are loaded without their classifier; reid_ir checkpoints store
    the backbone under ``'model'``.

    Raises:
        CheckpointError: ``path`` does not exist or holds no state dict matching the model.
    """
    import os

    if not os.path.isfile(path):
        raise CheckpointError(f"model.load_weights: no such file {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / not a torch file
        raise CheckpointError(f"model.load_weights: cannot read {path!r} as a torch checkpoint: {e}") from e
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"model.load_weights: {path!r} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    if not any(k in own for k in state):  # torchreid checkpoint of the bare backbone
        state = {f"backbone.{k}": v for k, v in state.items()}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"model.load_weights: no tensor in {path!r} matches the model's parameters")
    missing = sorted(set(own) - set(matched))
    model.load_state_dict(matched, strict=False)
    logger.info("loaded %d tensors from %s (%d model tensors not in the file)", len(matched), path, len(missing))
    if missing:
        logger.warning("not loaded from %s: %s", path, missing[:10])
