"""NIWT variants: the transfer settings plus the choices around them (start rows, anchor,
score fusion), and the rows of one variant for a set of new classes.

The weight transfer itself is that of Selvaraju et al., "Choose Your Neuron: Incorporating
Domain Knowledge through Neuron-Importance" (ECCV 2018, sec. 3.3, eq. 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.transfer.config import TransferConfig, TransferResult
from niwt_pipeline.core.transfer.gram import GramMoments
from niwt_pipeline.core.transfer.matching import LOGIT_MATCHING, match_seen_logits
from niwt_pipeline.core.transfer.reference import ReferenceCache
from niwt_pipeline.core.transfer.solvers import transfer_rows

ROW_SOURCES = ("mean_seen", "ridge")
_GRADIENT_ONLY = ("lr", "lam", "init", "optimizer", "max_steps", "patience", "batch_size")


@dataclass
class NIWTVariant:
    """One NIWT variant: the transfer hyper-parameters and the choices around them.

    Attributes:
        config: the :class:`TransferConfig` of the rows.
        ridge_init: start the gradient solver from the ridge-regression rows.
        anchor: what ``lam`` (gradient) or ``ls_alpha`` (least squares) pulls the rows
            toward: ``"mean_seen"`` (the paper's anchor) or ``"ridge"`` (the ridge-regression
            rows of the same classes).
        fusion: weight of the ESZSL scores added to the NIWT scores (per-image standardised,
            :func:`~niwt_pipeline.core.selection.fuse_scores`); 0 = NIWT alone.
        logit_matching: ``"none"`` or ``"seen_negatives"``: after the transfer, scale and
            shift each row so its logits over the seen training images have the mean and
            standard deviation of a seen row's on images of other classes
            (:mod:`~niwt_pipeline.core.transfer.matching`; this project's option, not the
            paper's).

    Raises:
        ValueError: on an unknown ``anchor`` or ``logit_matching``, or ``fusion`` < 0.
    """

    config: TransferConfig
    ridge_init: bool = False
    anchor: str = "mean_seen"
    fusion: float = 0.0
    logit_matching: str = "none"

    def __post_init__(self) -> None:
        if self.anchor not in ROW_SOURCES:
            raise ValueError(
                f"NIWT variant anchor: expected one of {ROW_SOURCES}, got {self.anchor!r}"
            )
        if self.fusion < 0:
            raise ValueError(f"NIWT variant fusion: expected >= 0, got {self.fusion}")
        if self.logit_matching not in LOGIT_MATCHING:
            raise ValueError(
                f"NIWT variant logit_matching: expected one of {LOGIT_MATCHING}, "
                f"got {self.logit_matching!r}"
            )


def make_variant(base: TransferConfig, overrides: Mapping[str, Any]) -> NIWTVariant:
    """``base`` with ``overrides``: any :class:`TransferConfig` field, ``init`` may also be
    ``"ridge"``, plus ``anchor``, ``fusion`` and ``logit_matching``.

    Raises:
        ValueError: on an unknown key or a bad value.
    """
    values = dict(overrides)
    anchor = values.pop("anchor", "mean_seen")
    fusion = float(values.pop("fusion", 0.0))
    matching = values.pop("logit_matching", "none")
    ridge_init = values.get("init") == "ridge"
    if ridge_init:
        values["init"] = "mean_seen"  # replaced by the ridge rows
    known = {f.name for f in fields(TransferConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"NIWT variant: unknown key(s) {unknown}; expected TransferConfig fields, "
            "'anchor', 'fusion' or 'logit_matching'"
        )
    config = replace(base, **values)
    return NIWTVariant(
        config=config,
        ridge_init=ridge_init,
        anchor=anchor,
        fusion=fusion,
        logit_matching=matching,
    )


def effective_overrides(overrides: Mapping[str, Any], base: TransferConfig) -> dict[str, Any]:
    """The overrides that change the rows: the least-squares solver ignores the gradient
    solver's keys, the gradient solver ignores ``ls_alpha``, and the anchor only matters
    with a positive ``lam`` (gradient) or ``ls_alpha`` (least squares), and values equal to
    ``base``'s are dropped.  Two candidates with equal effective overrides give the same
    rows (used to skip duplicates in a grid)."""
    values = {
        key: value
        for key, value in overrides.items()
        if not (key == "anchor" and value == "mean_seen")
        and not (key == "logit_matching" and value == "none")
        and not (hasattr(base, key) and getattr(base, key) == value)
    }
    solver = values.get("solver", base.solver)
    if solver == "least_squares":
        for key in _GRADIENT_ONLY:
            values.pop(key, None)
        strength = values.get("ls_alpha", base.ls_alpha)
    else:
        values.pop("ls_alpha", None)
        strength = values.get("lam", base.lam)
    if strength == 0:
        values.pop("anchor", None)
    return values


def variant_rows(
    method: str,
    target: np.ndarray,
    class_ids: np.ndarray,
    seen: ClassRows,
    variant: NIWTVariant,
    cache: ReferenceCache,
    backbone: TrainedBackbone,
    ridge: ClassRows | None = None,
    moments: GramMoments | None = None,
    gram_budget_bytes: int = 2 * 1024**3,
    training: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[ClassRows, TransferResult]:
    """NIWT rows of one variant for the classes ``class_ids`` (Selvaraju et al. 2018, sec. 3.3).

    Args:
        method: the name the rows are stored under.
        target: (U, K) the mapper's predicted importance of each new class.
        class_ids: (U,) the new classes, in ``target``'s row order.
        seen: the backbone's seen rows (S, D) and biases (the init, anchor and norm scale).
        variant: the transfer settings and choices.
        cache: G or the activations of the reference images.
        backbone: the trained backbone (its head, when the cache holds activations).
        ridge: ridge-regressed rows covering ``class_ids``, needed by the ``ridge`` init
            and anchor.
        moments: :class:`GramMoments` of the same cache, reused by the least-squares solver.
        gram_budget_bytes: whether G may be computed from cached activations.
        training: ``(features (N, D), labels (N,))`` of the backbone's seen training images,
            needed by ``logit_matching="seen_negatives"``.

    Returns:
        The rows (float32, as the seen rows) and the transfer's result.

    Raises:
        ValueError: when the variant needs ridge rows or training features and none are
            given.
        InputError: when ``ridge`` lacks a row for one of ``class_ids``.
    """
    needs_ridge = variant.ridge_init or variant.anchor == "ridge"
    if needs_ridge and ridge is None:
        raise ValueError("this NIWT variant needs the ridge-regression rows")
    if variant.logit_matching != "none" and training is None:
        raise ValueError("this NIWT variant's logit matching needs the seen training features")
    ridge_weight = (
        torch.as_tensor(ridge.rows_for(class_ids)[0], dtype=torch.float32)
        if needs_ridge and ridge is not None
        else None
    )
    result = transfer_rows(
        target,
        torch.as_tensor(seen.weight),
        torch.as_tensor(seen.bias),
        variant.config,
        init_weight=ridge_weight if variant.ridge_init else None,
        anchor=ridge_weight if variant.anchor == "ridge" else None,
        moments=moments,
        gram_budget_bytes=gram_budget_bytes,
        **cache.sources(backbone),
    )
    rows = ClassRows(method, np.asarray(class_ids, dtype=np.int64), result.weight, result.bias)
    return matched_rows(rows, variant, seen, training), result


def matched_rows(
    rows: ClassRows,
    variant: NIWTVariant,
    seen: ClassRows,
    training: tuple[np.ndarray, np.ndarray] | None,
) -> ClassRows:
    """``rows`` after the variant's logit matching (unchanged with ``"none"``).

    Args:
        rows: the transferred rows (U, D).
        variant: the variant (its ``logit_matching``).
        seen: the backbone's seen rows.
        training: ``(features (N, D), labels (N,))`` of its seen training images.

    Raises:
        ValueError: as :func:`~niwt_pipeline.core.transfer.matching.match_seen_logits`, or
            when matching is asked for without ``training``.
    """
    if variant.logit_matching == "none":
        return rows
    if training is None:
        raise ValueError("this NIWT variant's logit matching needs the seen training features")
    return match_seen_logits(rows, seen, *training)
