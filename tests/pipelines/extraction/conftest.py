"""Fixtures of the extraction tests."""

from __future__ import annotations

import pytest
import torch


def _assert_identical(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, same_order: bool = True
) -> None:
    """Same names (in the same order unless ``same_order=False``: a safetensors file keeps
    its own), dtypes, shapes and bits (NaN rows included, which ``torch.equal`` alone would
    call different)."""
    assert list(a) == list(b) if same_order else sorted(a) == sorted(b)
    for name, x in a.items():
        y = b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.is_floating_point():
            assert torch.equal(x.view(torch.int32), y.view(torch.int32)), name
            assert torch.equal(x.nan_to_num(), y.nan_to_num()), name
        else:
            assert torch.equal(x, y), name


@pytest.fixture(scope="session")
def assert_identical():
    """``assert_identical(a, b)``: two dicts of tensors are bit for bit the same."""
    return _assert_identical
