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

from reid_ir.registry import Registry

LOSSES = Registry("loss")


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
    """The registry name a config asks for: ``loss.name``, or ``unpg_<loss.name>`` when ``loss.unpg.enabled``."""
    from reid_ir.losses.unpg import resolve_loss_name  # unpg imports this module

    return resolve_loss_name(cfg)


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
