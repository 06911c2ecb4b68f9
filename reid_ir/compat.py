"""One place that imports torchreid.

PyPI's ``torchreid`` 0.2.5 repackages deep-person-reid 1.4.0 under the
namespace ``torchreid.reid``; a source install of deep-person-reid exposes the
same modules as ``torchreid``. Everything in reid_ir imports torchreid through
this module so that both work.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # torchreid warns at import that its Cython ranking is unavailable; reid_ir evaluates
    # with its own evaluator (reid_ir.evaluation), so the warning is irrelevant here
    warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)
    try:  # PyPI torchreid 0.2.5
        from torchreid.reid import data, engine, losses, metrics, models, optim, utils  # noqa: F401
        from torchreid.reid.data import ImageDataset  # noqa: F401

        TORCHREID_NAMESPACE = "torchreid.reid"
    except ImportError:  # deep-person-reid installed from source
        from torchreid import data, engine, losses, metrics, models, optim, utils  # noqa: F401
        from torchreid.data import ImageDataset  # noqa: F401

        TORCHREID_NAMESPACE = "torchreid"

__all__ = [
    "data",
    "engine",
    "losses",
    "metrics",
    "models",
    "optim",
    "utils",
    "ImageDataset",
    "TORCHREID_NAMESPACE",
]
