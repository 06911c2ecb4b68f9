"""Fixtures shared by the loss tests."""

import pytest

from reid_ir.losses import fused


@pytest.fixture(params=["numpy", "torch"])
def small_arrays(request, monkeypatch):
    """Run a test with the fused losses' small arrays in numpy (the CPU path) and in torch.

    The torch path is the one GPU tensors take; here it runs on the CPU.
    """
    monkeypatch.setattr(fused, "SMALL_ARRAYS_IN_NUMPY", request.param == "numpy")
    return request.param
