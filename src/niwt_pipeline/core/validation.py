"""The validation protocol: every choice and every calibration gamma made on pseudo-unseen
classes, never on test images.

A share of the seen classes becomes pseudo-unseen (:func:`~niwt_pipeline.core.roles.
validation_roles`); a second backbone is trained without them; then
:func:`search_candidates` replays the whole method on that backbone for every candidate of a
grid (mapper settings x NIWT variants x fusion weights with ESZSL) and scores each as a GZSL
problem: the held-out images of the remaining classes plus every image of the
pseudo-unseen classes, each candidate at its own best gamma (calibrated stacking, Chao et
al., ECCV 2016).  The baselines are scored on the same problem, so every method's gamma
comes from it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.baselines import BaselineConfig, fit_baselines
from niwt_pipeline.core.gzsl import problem_for
from niwt_pipeline.core.mapper import MapperConfig, fit_mapper
from niwt_pipeline.core.methods import ENSEMBLE
from niwt_pipeline.core.selection import (
    CRITERIA,
    best_index,
    criterion_value,
    expand_grid,
    fuse_scores,
    validation_metrics,
)
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.transfer.config import TransferConfig
from niwt_pipeline.core.transfer.gram import gram_moments
from niwt_pipeline.core.transfer.reference import ReferenceCache
from niwt_pipeline.core.transfer.variants import effective_overrides, make_variant, variant_rows

logger = logging.getLogger(__name__)

#: The columns of the candidate table besides the metrics.
_SUMMARY_KEYS = ("S_calibrated", "U_calibrated", "H_calibrated", "gamma", "ausuc", "zsl_top1", "H")


@dataclass
class SearchConfig:
    """The candidates the validation tries and how it ranks them.

    Attributes:
        criterion: ``H_calibrated`` (at each candidate's best gamma), ``ausuc`` or ``mean``.
        mapper_grid: :class:`MapperConfig` field -> values to try.
        niwt_grid: :class:`TransferConfig` field (``init`` may be ``ridge``) or ``anchor``
            -> values to try; the configured variant (no overrides) is always tried too.
        fusion_grid: weights of ESZSL's scores fused into NIWT's (0 = NIWT alone).
    """

    criterion: str = "mean"
    mapper_grid: dict[str, list[Any]] = field(default_factory=dict)
    niwt_grid: dict[str, list[Any]] = field(default_factory=dict)
    fusion_grid: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {self.criterion!r}")


def _summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in _SUMMARY_KEYS}


def search_candidates(
    outputs: Mapping[str, torch.Tensor],
    roles: pd.DataFrame,
    cache: ReferenceCache,
    backbone: TrainedBackbone,
    dk: np.ndarray,
    mapper: MapperConfig,
    niwt: TransferConfig,
    baselines: BaselineConfig,
    search: SearchConfig,
    gram_budget_bytes: int = 2 * 1024**3,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score every (mapper, NIWT variant, fusion) candidate and the baselines on the
    validation problem; choose the best candidate and every method's gamma.

    Candidates that cannot give different rows (e.g. a learning rate for the closed-form
    solver, :func:`effective_overrides`) are scored once.

    Args:
        outputs: the validation backbone's extraction of the validation images:
            ``image_id`` (N,), ``features`` (N, D), ``importance_gt`` (N, K).
        roles: ``image_id``, ``class_id``, ``role`` (train / holdout / pseudo_unseen) of
            those images.
        cache: the validation backbone's reference cache.
        backbone: the validation backbone (it never saw the pseudo-unseen classes).
        dk: (C, A) domain knowledge of every class, row = class id.
        mapper: the mapper settings the grid's overrides apply to.
        niwt: the configured NIWT settings (``transfer.niwt``) the grid's overrides apply to.
        baselines: the baselines' settings.
        search: the grids and the criterion.
        gram_budget_bytes: whether G may be computed from cached activations.

    Returns:
        The choice (JSON: the mapper and NIWT overrides chosen by NIWT's rows alone, the
        ensemble's ESZSL weight chosen for those rows, and per method its validation
        metrics and gamma) and the table of every candidate (``chosen``: the ``niwt_tuned``
        candidate; ``chosen_ensemble``: the ensemble's).

    Raises:
        ValueError: when every candidate scored NaN.
    """
    seen = backbone.seen_rows()
    seen_ids = seen.class_ids
    table = roles.set_index("image_id").loc[outputs["image_id"].numpy()]
    role = table["role"].to_numpy()
    labels = table["class_id"].to_numpy(dtype=np.int64)
    pseudo = np.unique(labels[role == "pseudo_unseen"])
    features = outputs["features"].numpy().astype(np.float64)
    importance = outputs["importance_gt"].numpy()
    train = role == "train"

    ridge, eszsl_model = fit_baselines(features[train], labels[train], seen, dk, pseudo, baselines)
    evaluate = np.isin(role, ("holdout", "pseudo_unseen"))
    all_ids = np.union1d(seen_ids, pseudo)
    problem = problem_for(labels[evaluate], all_ids, pseudo)
    feats = features[evaluate]
    eszsl = eszsl_model.scores(feats, dk[all_ids])
    ridge_scores = (seen + ridge).scores(feats, all_ids)

    candidates = [{}, *expand_grid(search.niwt_grid)]
    moments = gram_moments([cache.gram], seen.weight) if cache.gram is not None else None
    records: list[dict[str, Any]] = []
    for mapper_overrides in expand_grid(search.mapper_grid):
        fitted, _ = fit_mapper(
            dk, importance[train], labels[train], seen_ids, replace(mapper, **mapper_overrides)
        )
        target = fitted.predict(dk[pseudo]).numpy()
        done: set[str] = set()
        for overrides in candidates:
            key = json.dumps(effective_overrides(overrides, niwt), sort_keys=True)
            if key in done:
                continue
            done.add(key)
            started = time.perf_counter()
            variant = make_variant(replace(niwt, progress=False), overrides)
            rows, result = variant_rows(
                "niwt",
                target,
                pseudo,
                seen,
                variant,
                cache,
                backbone,
                ridge,
                moments,
                gram_budget_bytes,
            )
            scores = (seen + rows).scores(feats, all_ids)
            seconds = time.perf_counter() - started
            for fusion in sorted({0.0, *search.fusion_grid}):  # the rows alone always
                metrics = validation_metrics(fuse_scores(scores, eszsl, fusion), problem)
                records.append(
                    {
                        "mapper": json.dumps(mapper_overrides, sort_keys=True),
                        "niwt": key,
                        "fusion": float(fusion),
                        "configured": overrides == {} and fusion == 0,
                        **metrics,
                        "criterion": criterion_value(metrics, search.criterion),
                        "transfer_seconds": seconds,
                        "transfer_loss": float(result.best_loss),
                    }
                )
    results = pd.DataFrame.from_records(records)
    # NIWT's rows alone choose the mapper and variant; the ensemble's weight is then
    # chosen among the fusions of those very rows (a weight of 0 is the rows alone).
    alone = (results["fusion"] == 0).to_numpy()
    criteria = results["criterion"].to_numpy(dtype=np.float64)
    best = int(np.flatnonzero(alone)[best_index(criteria[alone].tolist())])
    chosen = results.iloc[best]
    same_rows = np.flatnonzero(
        ((results["mapper"] == chosen["mapper"]) & (results["niwt"] == chosen["niwt"])).to_numpy()
    )
    fused = int(same_rows[best_index(criteria[same_rows].tolist())])
    results.insert(0, "chosen", np.arange(len(results)) == best)
    results.insert(1, "chosen_ensemble", np.arange(len(results)) == fused)
    configured = results[results["configured"] & (results["mapper"] == chosen["mapper"])].iloc[0]
    methods = {
        "niwt": _summary(configured),
        "niwt_tuned": _summary(chosen),
        ENSEMBLE: _summary(results.iloc[fused]),
        "weight_regression": validation_metrics(ridge_scores, problem),
        "eszsl": validation_metrics(eszsl, problem),
    }
    choice = {
        "pseudo_unseen_class_ids": [int(c) for c in pseudo],
        "criterion": search.criterion,
        "n_candidates": len(results),
        "mapper": json.loads(chosen["mapper"]),
        "niwt_tuned": json.loads(chosen["niwt"]),
        ENSEMBLE: {"fusion": float(results.iloc[fused]["fusion"])},
        "niwt": asdict(niwt),
        "eszsl": {"gamma": eszsl_model.gamma, "lambda": eszsl_model.lam},
        "methods": methods,
    }
    for method, values in methods.items():
        logger.info(
            "validation %s: H_calibrated %.1f (gamma %.3g), AUSUC %.1f, ZSL %.1f",
            method,
            100 * values["H_calibrated"],
            values["gamma"],
            100 * values["ausuc"],
            100 * values["zsl_top1"],
        )
    logger.info(
        "validation chose mapper %s, NIWT %s, ensemble with ESZSL at weight %g (of %d candidates)",
        choice["mapper"],
        choice["niwt_tuned"],
        choice[ENSEMBLE]["fusion"],
        len(results),
    )
    return choice, results
