"""reid_ir's data layer: synthetic data, imbalance splits, datasets and samplers.

Imports are lazy so that ``import reid_ir.data`` neither loads torchreid nor
touches its registries; call :func:`register_datasets` for that.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "generate_synthetic_dataset": "reid_ir.data.synthetic",
    "register_datasets": "reid_ir.data.datasets",
    "dataset_kwargs_from_cfg": "reid_ir.data.datasets",
    "check_image": "reid_ir.data.datasets",
    "build_train_sampler": "reid_ir.data.samplers",
    "SAMPLERS": "reid_ir.data.samplers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reid_ir.data' has no attribute {name!r}")
