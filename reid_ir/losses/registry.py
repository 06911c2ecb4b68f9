"""The loss registry: ``loss.name`` in a config picks an entry here.

Every loss module registers its classes with :data:`LOSSES` at import; the
package ``reid_ir.losses`` imports them all. Build a loss in one line without a
config::

    build_loss("softmax", num_classes=751, feat_dim=512, label_smooth=True)

or from a config with :func:`build_loss_from_cfg`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from reid_ir.errors import ConfigError
from reid_ir.registry import Registry

LOSSES = Registry("loss")

#: Registry prefix of the UNPG variants (``unpg_am_softmax`` wraps ``am_softmax``; see unpg.py).
UNPG_PREFIX = "unpg_"


def build_loss(
    name: str,
    num_classes: int,
    feat_dim: int,
    class_counts: torch.Tensor | None = None,
    **kwargs: Any,
):
    """Instantiate the loss registered as ``name``.

    Args:
        name: registry name (``softmax``, ``am_softmax``, ...).
        num_classes: number of training identities C.
        feat_dim: embedding size D.
        class_counts: (C,) training images per class; passed to losses that
            take it (weighted softmax, diagnostics).
        **kwargs: the loss's own keyword arguments.

    Returns:
        The loss module.
    """
    factory = LOSSES.get(name)
    context = {"num_classes": num_classes, "feat_dim": feat_dim, "class_counts": class_counts}
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in context.items():
        if key in params or accepts_any:
            kwargs.setdefault(key, value)
    return factory(**kwargs)


def configured_loss_name(cfg) -> str:
    """The registry name a config asks for: ``loss.name``, or ``unpg_<loss.name>`` when ``loss.unpg.enabled``.

    Raises:
        ConfigError: UNPG enabled over a loss without a UNPG variant.
    """
    name = str(cfg.loss.name)
    if not cfg.loss.unpg.enabled or name.startswith(UNPG_PREFIX):
        return name
    if UNPG_PREFIX + name not in LOSSES:
        heads = [n[len(UNPG_PREFIX) :] for n in LOSSES.names() if n.startswith(UNPG_PREFIX)]
        raise ConfigError(
            f"loss.unpg.enabled needs a cosine-margin head; {name!r} has none. Heads with UNPG: {heads}"
        )
    return UNPG_PREFIX + name


def loss_kwargs(cfg) -> dict:
    """Keyword arguments of the configured loss, read from cfg."""
    return LOSSES.kwargs_from_cfg(configured_loss_name(cfg), cfg)


def build_loss_from_cfg(cfg, num_classes: int, feat_dim: int, class_counts: torch.Tensor | None = None):
    """Build the configured loss with the keyword arguments its entry reads from cfg.

    With ``loss.triplet.weight`` > 0 the loss is wrapped to add a batch-hard
    triplet term (:class:`~reid_ir.losses.triplet.WithTriplet`).
    """
    loss = build_loss(
        configured_loss_name(cfg), num_classes=num_classes, feat_dim=feat_dim, class_counts=class_counts,
        **loss_kwargs(cfg),
    )
    if cfg.loss.triplet.weight > 0:
        from reid_ir.losses.triplet import WithTriplet

        loss = WithTriplet(loss, float(cfg.loss.triplet.margin), float(cfg.loss.triplet.weight))
    return loss
