"""The shape of metrics handed to kedro-mlflow's metrics datasets, shared by the pipelines.

``MlflowMetricsHistoryDataset`` takes ``{name: {"value": float, "step": int}}``; these
helpers build that from plain numbers.  Nothing here imports mlflow: the catalog entries log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def as_metrics(values: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{name: number}`` -> ``{name: {"value": float(number), "step": 0}}``."""
    return {name: {"value": float(value), "step": 0} for name, value in values.items()}


def flatten_metrics(prefix: str, values: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Nested dicts of numbers -> dotted names (``prefix.key.sub``); booleans, strings,
    ``None`` and NaN are left out (MLflow metrics are numbers)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_metrics(name, value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not (isinstance(value, float) and math.isnan(value)):
                out[name] = {"value": float(value), "step": 0}
    return out
