"""Classifier rows: the value object every row-based method produces.

A method that classifies with one linear row per class (the trained seen classifier,
NIWT's transferred rows, ridge-regressed rows) returns a :class:`ClassRows`: the class ids,
the rows, the biases and the method's name.  Scores over any set of classes come from one
place, :meth:`ClassRows.scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from niwt_pipeline.core.errors import InputError


def _array(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


@dataclass(frozen=True)
class ClassRows:
    """One linear row and bias per class: ``score_c(z) = z . weight[c] + bias[c]``.

    Attributes:
        method: the method that made the rows (e.g. ``"niwt"``, ``"weight_regression"``,
            ``"seen"`` for the trained classifier).
        class_ids: (R,) int64 canonical class ids, one per row, distinct.
        weight: (R, D) rows, in the dtype they were computed in (float32 or float64).
        bias: (R,) biases, same dtype as computed.

    Raises:
        ValueError: on shapes that do not agree or repeated class ids.
    """

    method: str
    class_ids: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        ids = np.asarray(_array(self.class_ids), dtype=np.int64).reshape(-1)
        weight, bias = _array(self.weight), _array(self.bias).reshape(-1)
        object.__setattr__(self, "class_ids", ids)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        if weight.ndim != 2 or weight.shape[0] != len(ids) or bias.shape != (len(ids),):
            raise ValueError(
                f"ClassRows({self.method!r}): {len(ids)} class ids, weight {weight.shape}, "
                f"bias {bias.shape} do not agree"
            )
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"ClassRows({self.method!r}): repeated class ids {ids.tolist()}")

    @property
    def dim(self) -> int:
        """D, the width of the features the rows apply to."""
        return int(self.weight.shape[1])

    def __len__(self) -> int:
        return len(self.class_ids)

    def rows_for(self, class_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows and biases of ``class_ids``, in that order: ((C, D), (C,)).

        Raises:
            InputError: naming the class ids that have no row.
        """
        position = {int(c): j for j, c in enumerate(self.class_ids)}
        wanted = [int(c) for c in np.asarray(class_ids).reshape(-1)]
        missing = sorted({c for c in wanted if c not in position})
        if missing:
            raise InputError(
                f"{self.method}: no classifier row for class id(s) {missing[:10]}; the rows "
                f"cover {sorted(position)[:10]}{' ...' if len(position) > 10 else ''}"
            )
        index = np.array([position[c] for c in wanted], dtype=np.int64)
        return self.weight[index], self.bias[index]

    def scores(self, features: np.ndarray, class_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Linear scores ``z @ w_c + b_c`` of every image for ``class_ids``, in float64.

        Args:
            features: (N, D) penultimate features.
            class_ids: (C,) the classes to score, in column order.

        Returns:
            (N, C) float64.

        Raises:
            InputError: when a class has no row.
        """
        weight, bias = self.rows_for(class_ids)
        return np.asarray(features).astype(np.float64) @ weight.astype(np.float64).T + bias.astype(
            np.float64
        )

    def with_method(self, method: str) -> ClassRows:
        """The same rows under another method name."""
        return ClassRows(method, self.class_ids, self.weight, self.bias)

    def __add__(self, other: ClassRows) -> ClassRows:
        """The rows of both (e.g. seen rows + new rows); the method name is ``other``'s.

        Raises:
            ValueError: when both have a row for the same class.
        """
        if self.dim != other.dim:
            raise ValueError(f"cannot join rows of width {self.dim} and {other.dim}")
        return ClassRows(
            other.method,
            np.concatenate([self.class_ids, other.class_ids]),
            np.concatenate([self.weight, other.weight]),  # mixed dtypes widen exactly
            np.concatenate([self.bias, other.bias]),
        )

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """``{<prefix>.class_id, <prefix>.weight, <prefix>.bias}`` for a safetensors file."""
        return {  # copies: the arrays may be read-only views (pandas, safetensors)
            f"{prefix}.class_id": torch.from_numpy(np.array(self.class_ids)),
            f"{prefix}.weight": torch.from_numpy(np.array(self.weight)),
            f"{prefix}.bias": torch.from_numpy(np.array(self.bias)),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> ClassRows:
        """Read back what :meth:`to_tensors` wrote under ``prefix``.

        Raises:
            InputError: when one of the three tensors is missing.
        """
        keys = [f"{prefix}.{name}" for name in ("class_id", "weight", "bias")]
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise InputError(f"class rows {prefix!r}: missing tensors {missing}")
        return cls(prefix, *(tensors[k].numpy() for k in keys))


class RowSet(dict[str, ClassRows]):
    """Several methods' rows, method -> :class:`ClassRows` (saved as one safetensors file)."""

    def to_safetensors(self) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        """Tensors ``<method>.class_id/.weight/.bias`` and the methods in order."""
        tensors: dict[str, torch.Tensor] = {}
        for method, rows in self.items():
            tensors.update(rows.to_tensors(method))
        return tensors, {"methods": list(self)}

    @classmethod
    def from_safetensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> RowSet:
        """Read back what :meth:`to_safetensors` wrote.

        Raises:
            InputError: when the metadata names no methods or a method's tensors are missing.
        """
        methods = metadata.get("methods")
        if not isinstance(methods, list):
            raise InputError("class rows file: its metadata lists no methods")
        return cls({m: ClassRows.from_tensors(tensors, m) for m in methods})
