"""reid_ir: imbalance-robust re-ID losses and a fast evaluator for torchreid.

Importing this package loads no data and does not touch torchreid's registries;
call :func:`register` (the engine and CLI do) to make our datasets and samplers
visible to torchreid by name.
"""

__version__ = "0.1.0"


def register() -> None:
    """Register reid_ir's datasets with torchreid (idempotent)."""
    from reid_ir.data.datasets import register_datasets

    register_datasets()
