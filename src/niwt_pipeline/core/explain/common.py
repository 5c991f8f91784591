"""Shared checks of the explanation code, and the names of the domain-knowledge dimensions."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.data.xlsa17 import dim_names

logger = logging.getLogger(__name__)


def _matrix(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """A finite 2-d float64 array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def _check_names(dk_names: Sequence[str], n_dims: int, where: str) -> list[str]:
    if len(dk_names) != n_dims:
        raise ValueError(f"dk_names: {len(dk_names)} names for the {n_dims} dimensions of {where}")
    return [str(n) for n in dk_names]


def _check_top_k(top_k: int, n_dims: int) -> int:
    """``top_k`` as an int in ``[1, n_dims]``.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(top_k, bool) or int(top_k) != top_k or not 1 <= top_k <= n_dims:
        raise ValueError(f"top_k: expected an integer in [1, {n_dims}], got {top_k!r}")
    return int(top_k)


def _top_k(scores: np.ndarray, top_k: int) -> np.ndarray:
    """``(N, A)`` -> ``(N, top_k)`` column indices, highest score first (stable on ties)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_k]


def dimension_names(columns: Sequence[object] | pd.Index | int) -> list[str]:
    """Names for the domain-knowledge dimensions, falling back to ``dim_000``-style names.

    Args:
        columns: the table's column labels, or the number of dimensions of an unnamed
            matrix.

    Returns:
        The labels as strings when every one is a distinct, non-empty, non-numeric string;
        otherwise ``dim_000``, ``dim_001``, ... (at least three digits, the project's
        convention, see :func:`niwt_pipeline.core.data.xlsa17.dim_names`), logged at INFO.
    """
    if isinstance(columns, int | np.integer):
        labels: list[object] = []
        n = int(columns)
    else:
        labels = list(columns)
        n = len(labels)
    named = (
        n > 0
        and all(isinstance(c, str) and c.strip() and not c.strip().isdigit() for c in labels)
        and len(set(labels)) == n
    )
    if named:
        return [str(c) for c in labels]
    names = dim_names("dim", n)
    if n:
        logger.info(
            "domain knowledge has no usable dimension names; using %s..%s", names[0], names[-1]
        )
    return names


def table_dimension_names(domain_knowledge: pd.DataFrame) -> tuple[list[str], bool]:
    """The dimension names of a canonical domain-knowledge table, and whether they came
    from its columns (``False``: the ``dim_000``.. fallback of :func:`dimension_names`)."""
    columns = list(domain_knowledge_by_class(domain_knowledge).columns)
    names = dimension_names(columns)
    return names, names == [str(c) for c in columns]
