"""The validation protocol: every choice and every calibration gamma made on pseudo-unseen
classes, never on test images.

A share of the seen classes becomes pseudo-unseen (:func:`~niwt_pipeline.core.roles.
validation_roles`); a second backbone is trained without them; then
:func:`search_candidates` replays the whole method on that backbone for every candidate of a
grid (mapper settings x NIWT variants, the paper's among them, x fusion weights with ESZSL)
and scores each as a GZSL problem: the held-out images of the remaining classes plus every
image of the pseudo-unseen classes, each candidate at its own best gamma (calibrated
stacking, Chao et al., ECCV 2016).  Every baseline's own settings (the ridge penalty of
``weight_regression``, ESZSL's two regularisers, SAE's, the learning rate and epochs of
ALE, SJE and DeViSE, f-CLSWGAN's synthetic features per class) are chosen on the same
problem by the same criterion (:func:`tune_baselines`) before NIWT's candidates, which use
those very baselines (ridge initialisation and anchor, the ESZSL fusion); so every
method's settings and gamma come from it.
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

from niwt_pipeline.core.baseline_models import FittedBaselines, compatibility_config
from niwt_pipeline.core.baselines import (
    DEFAULT_GRID,
    BaselineConfig,
    ESZSLGrid,
    ESZSLModel,
    SAEGrid,
    SAEModel,
    seen_positions,
    weight_regression_rows,
)
from niwt_pipeline.core.compatibility import LOSSES, CompatibilityConfig, fit_compatibility
from niwt_pipeline.core.generative import GeneratorConfig, fclswgan_rows, fit_generator
from niwt_pipeline.core.gzsl import GZSLProblem, problem_for
from niwt_pipeline.core.mapper import MapperConfig, fit_mapper
from niwt_pipeline.core.methods import ENSEMBLE
from niwt_pipeline.core.rows import ClassRows, RowSet
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
from niwt_pipeline.core.transfer.variants import (
    effective_overrides,
    make_variant,
    matched_rows,
    variant_rows,
)

logger = logging.getLogger(__name__)

#: The settings a baseline candidate records.
_CONFIG_FIELDS = frozenset(BaselineConfig.__dataclass_fields__)
#: Baseline settings that count (epochs, features per class): whole numbers.
_COUNT_SETTINGS = (*(f"{loss}_epochs" for loss in LOSSES), "fclswgan_n_synthetic")
#: The columns of the candidate table besides the metrics.
_SUMMARY_KEYS = ("S_calibrated", "U_calibrated", "H_calibrated", "gamma", "ausuc", "zsl_top1", "H")


@dataclass
class SearchConfig:
    """The candidates the validation tries and how it ranks them.

    Attributes:
        criterion: ``H_calibrated`` (at each candidate's best gamma), ``ausuc`` or ``mean``.
        mapper_grid: :class:`MapperConfig` field -> values to try.
        niwt_grid: :class:`TransferConfig` field (``init`` may be ``ridge``), ``anchor`` or
            ``logit_matching`` -> values to try; the configured variant (no overrides) and
            the paper's (``niwt_paper``) are always tried too, each with every
            ``logit_matching`` value of the grid (``none`` when it has none).  The faithful
            paper row, unmatched, is always scored (for ``niwt_paper``'s gamma) and is a
            ``niwt_tuned`` candidate only where ``none`` is among those values.
        fusion_grid: weights of ESZSL's scores fused into NIWT's (0 = NIWT alone).
        baseline_grid: :class:`BaselineConfig` field -> values to try for the settings the
            configuration leaves ``None`` (a set value is the only one tried).
    """

    criterion: str = "mean"
    mapper_grid: dict[str, list[Any]] = field(default_factory=dict)
    niwt_grid: dict[str, list[Any]] = field(default_factory=dict)
    fusion_grid: list[float] = field(default_factory=lambda: [0.0])
    baseline_grid: dict[str, list[float]] = field(
        default_factory=lambda: {
            "ridge_alpha": [0.01, 0.1, 1.0, 10.0, 100.0],
            "eszsl_gamma": list(DEFAULT_GRID),
            "eszsl_lambda": list(DEFAULT_GRID),
            "sae_lambda": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0],
            **{f"{loss}_lr": [0.01, 0.1, 1.0, 10.0] for loss in LOSSES},
            **{f"{loss}_epochs": [5, 10, 25, 50] for loss in LOSSES},
            "fclswgan_n_synthetic": [50, 100, 300, 1000],
        }
    )

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {self.criterion!r}")
        unknown = sorted(set(self.baseline_grid) - _CONFIG_FIELDS)
        if unknown:
            raise ValueError(
                f"baseline_grid: unknown BaselineConfig field(s) {unknown}; expected some of "
                f"{sorted(_CONFIG_FIELDS)}"
            )
        for key, values in self.baseline_grid.items():
            counts = key in _COUNT_SETTINGS
            kinds = int if counts else int | float
            numbers = isinstance(values, list | tuple) and all(
                isinstance(v, kinds) and not isinstance(v, bool) for v in values
            )
            if (
                not numbers
                or not values
                or min(values) < 0
                or (key != "ridge_alpha" and min(values) <= 0)
            ):
                expected = "whole numbers >= 1" if counts else "values > 0"
                raise ValueError(f"baseline_grid.{key}: expected {expected} (a list), got {values}")


def _summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in _SUMMARY_KEYS}


def _values(config: BaselineConfig, search: SearchConfig, key: str) -> list[float]:
    """The values the validation tries for one baseline setting: the configured one when
    set, else the grid's."""
    value = getattr(config, key)
    return [float(value)] if value is not None else [float(v) for v in search.baseline_grid[key]]


def tune_baselines(
    features: np.ndarray,
    labels: np.ndarray,
    seen: ClassRows,
    dk: np.ndarray,
    problem_features: np.ndarray,
    problem: GZSLProblem,
    class_ids: np.ndarray,
    config: BaselineConfig,
    search: SearchConfig,
    compatibility: CompatibilityConfig,
    generator: GeneratorConfig,
) -> tuple[FittedBaselines, BaselineConfig, dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Choose the baselines' settings on the validation problem, as NIWT's are chosen: each
    candidate scored as a GZSL problem at its own best gamma and ranked by
    ``search.criterion`` (ties: the first in grid order).

    * ``weight_regression``: the ridge penalty (:func:`ridge_rows`);
    * ESZSL: ``(gamma, lam)`` over the grid, exactly (:class:`ESZSLGrid`);
    * SAE: ``lam`` (:class:`SAEGrid`);
    * ALE, SJE, DeViSE: the learning rate and the number of epochs (one training per rate,
      a model kept after each epoch of the grid);
    * f-CLSWGAN: the synthetic features per new class (one generator, a final classifier
      per candidate).

    Args:
        features: (N, D) the validation backbone's features of its training images.
        labels: (N,) their class ids (seen by that backbone).
        seen: that backbone's seen rows.
        dk: (C, A) domain knowledge of every class, row = class id.
        problem_features: (M, D) features of the validation problem's images.
        problem: the validation problem.
        class_ids: (C,) its classes in column order (seen + pseudo-unseen).
        config: the configured settings (``None`` = chosen here).
        search: the grids and the criterion.
        compatibility: ALE's, SJE's and DeViSE's fixed settings.
        generator: f-CLSWGAN's fixed settings.

    Returns:
        The chosen baselines fitted on the validation backbone (``weight_regression`` and
        ``fclswgan`` rows of the pseudo-unseen classes), the chosen settings, per method
        every candidate's settings, ``H_calibrated``, ``ausuc``, ``zsl_top1``, calibration
        ``gamma`` and criterion (JSON), and per method the chosen candidate's validation
        metrics.

    Raises:
        ValueError: when every candidate of a baseline scored NaN.
    """
    seen_ids = seen.class_ids
    all_ids = np.asarray(class_ids)
    new_ids = all_ids[~np.isin(all_ids, seen_ids)]
    signatures = dk[all_ids]
    summary = ("H_calibrated", "ausuc", "gamma", "zsl_top1")
    methods = ("weight_regression", "eszsl", *LOSSES, "sae", "fclswgan")
    tables: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    scored: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    fitted: dict[str, list[Any]] = {m: [] for m in methods}

    def record(method: str, settings: dict[str, float], scores: np.ndarray, model: Any) -> None:
        metrics = validation_metrics(scores, problem)
        tables[method].append(
            {
                **settings,
                **{k: float(metrics[k]) for k in summary},
                "criterion": criterion_value(metrics, search.criterion),
            }
        )
        scored[method].append(metrics)
        fitted[method].append(model)

    for alpha in _values(config, search, "ridge_alpha"):
        rows = weight_regression_rows(seen, dk, new_ids, alpha)
        scores = (seen + rows).scores(problem_features, all_ids)
        record("weight_regression", {"ridge_alpha": alpha}, scores, rows)
    positions = seen_positions(seen_ids, labels)
    eszsl_grid = ESZSLGrid(features, positions, dk[seen_ids])
    for gamma, lam, scores in eszsl_grid.grid_scores(
        problem_features,
        signatures,
        _values(config, search, "eszsl_gamma"),
        _values(config, search, "eszsl_lambda"),
    ):
        # the (D, A) projection is built for the chosen pair only
        record("eszsl", {"eszsl_gamma": gamma, "eszsl_lambda": lam}, scores, (gamma, lam))
    sae_grid = SAEGrid(features, positions, dk[seen_ids])
    for lam in _values(config, search, "sae_lambda"):
        sae = SAEModel(sae_grid.projection(lam), lam)
        record("sae", {"sae_lambda": lam}, sae.scores(problem_features, signatures), sae)
    for loss in LOSSES:
        epochs = [int(e) for e in _values(config, search, f"{loss}_epochs")]
        for lr in _values(config, search, f"{loss}_lr"):
            trained = fit_compatibility(
                features,
                positions,
                dk[seen_ids],
                compatibility_config(compatibility, loss, lr, max(epochs)),
                snapshots=sorted(set(epochs)),
            )
            for model in trained:
                settings = {f"{loss}_lr": lr, f"{loss}_epochs": int(model.settings["epochs"])}
                record(loss, settings, model.scores(problem_features, signatures), model)
    trained_generator = fit_generator(features, positions, dk[seen_ids], generator)
    for n_synthetic in _values(config, search, "fclswgan_n_synthetic"):
        rows = fclswgan_rows(
            trained_generator,
            features,
            labels,
            all_ids,
            dk,
            new_ids,
            replace(generator, n_synthetic=int(n_synthetic)),
        )
        scores = rows.scores(problem_features, all_ids)
        record("fclswgan", {"fclswgan_n_synthetic": int(n_synthetic)}, scores, rows)
    best = {m: best_index([c["criterion"] for c in t]) for m, t in tables.items()}
    settings: dict[str, Any] = {}
    for method, table in tables.items():
        settings.update({k: v for k, v in table[best[method]].items() if k in _CONFIG_FIELDS})
    chosen = BaselineConfig(**settings)
    pick = {m: fitted[m][best[m]] for m in methods}
    gamma, lam = pick["eszsl"]
    result = FittedBaselines(
        rows=RowSet({"weight_regression": pick["weight_regression"], "fclswgan": pick["fclswgan"]}),
        eszsl=ESZSLModel(eszsl_grid.projection(gamma, lam), gamma, lam),
        sae=pick["sae"],
        compatibility={loss: pick[loss] for loss in LOSSES},
        generator=trained_generator,
    )
    logger.info(
        "validation chose the baselines' settings %s (of %s candidates)",
        json.dumps(asdict(chosen)),
        {m: len(t) for m, t in tables.items()},
    )
    return result, chosen, tables, {m: scored[m][best[m]] for m in methods}


def search_candidates(
    outputs: Mapping[str, torch.Tensor],
    roles: pd.DataFrame,
    cache: ReferenceCache,
    backbone: TrainedBackbone,
    dk: np.ndarray,
    mapper: MapperConfig,
    niwt: TransferConfig,
    paper: TransferConfig,
    baselines: BaselineConfig,
    search: SearchConfig,
    compatibility: CompatibilityConfig,
    generator: GeneratorConfig,
    gram_budget_bytes: int = 2 * 1024**3,
) -> tuple[dict[str, Any], pd.DataFrame, ClassRows]:
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
        paper: the paper's settings (``niwt_paper``, :func:`~niwt_pipeline.core.transfer.
            config.paper_config`): scored for its gamma, and a candidate like any other.
        baselines: the configured baselines' settings (``None`` = chosen here).
        search: the grids and the criterion.
        compatibility: ALE's, SJE's and DeViSE's fixed settings.
        generator: f-CLSWGAN's fixed settings.
        gram_budget_bytes: whether G may be computed from cached activations.

    Returns:
        The choice (JSON: the mapper and NIWT overrides chosen by NIWT's rows alone, the
        ensemble's ESZSL weight chosen for those rows, the baselines' settings
        (``baselines``) with every baseline candidate (``baseline_candidates``), and per
        method its validation metrics and gamma) and the table of every NIWT row scored
        (``candidate``: whether it may be chosen; ``chosen``: the ``niwt_tuned`` candidate;
        ``chosen_ensemble``: the ensemble's; ``configured``: the configured transfer
        settings; ``paper``: the faithful paper row),
        and the ``niwt_tuned`` rows of the pseudo-unseen classes (what the explanations'
        choice is made with).

    Raises:
        ValueError: when every candidate scored NaN, or a grid key has no values.
    """
    grid = expand_grid(search.niwt_grid)  # raises on a key without values, before any work
    paper_overrides = {
        key: value
        for key, value in asdict(paper).items()
        if key != "progress" and getattr(niwt, key) != value
    }
    paper_key = json.dumps(effective_overrides(paper_overrides, niwt), sort_keys=True)
    # the grid's logit matching applies to every transfer setting, the configured and the
    # paper's included; the faithful paper row (unmatched) is scored for niwt_paper, and is
    # a niwt_tuned candidate only where the grid tries no matching
    matching = list(search.niwt_grid.get("logit_matching", ["none"]))
    candidates = [
        (origin, {**overrides, "logit_matching": m} if m != "none" else overrides, True)
        for origin, overrides in (("configured", {}), ("paper", paper_overrides))
        for m in matching
    ]
    candidates += [("grid", overrides, True) for overrides in grid]
    if "none" not in matching:
        candidates.append(("paper", paper_overrides, False))
    seen = backbone.seen_rows()
    seen_ids = seen.class_ids
    table = roles.set_index("image_id").loc[outputs["image_id"].numpy()]
    role = table["role"].to_numpy()
    labels = table["class_id"].to_numpy(dtype=np.int64)
    pseudo = np.unique(labels[role == "pseudo_unseen"])
    features = outputs["features"].numpy().astype(np.float64)
    importance = outputs["importance_gt"].numpy()
    train = role == "train"

    evaluate = np.isin(role, ("holdout", "pseudo_unseen"))
    all_ids = np.union1d(seen_ids, pseudo)
    problem = problem_for(labels[evaluate], all_ids, pseudo)
    feats = features[evaluate]
    fitted, baseline_choice, baseline_table, baseline_metrics = tune_baselines(
        features[train],
        labels[train],
        seen,
        dk,
        feats,
        problem,
        all_ids,
        baselines,
        search,
        compatibility,
        generator,
    )
    ridge = fitted.rows["weight_regression"]
    eszsl = fitted.eszsl.scores(feats, dk[all_ids])

    moments = gram_moments([cache.gram], seen.weight) if cache.gram is not None else None
    training = (features[train], labels[train])
    records: list[dict[str, Any]] = []
    candidate_rows: dict[tuple[str, str], ClassRows] = {}
    for mapper_overrides in expand_grid(search.mapper_grid):
        fitted, _ = fit_mapper(
            dk, importance[train], labels[train], seen_ids, replace(mapper, **mapper_overrides)
        )
        target = fitted.predict(dk[pseudo]).numpy()
        done: set[str] = set()
        # candidates that differ only in logit matching share one transfer
        transferred: dict[str, tuple[ClassRows, Any, float]] = {}
        for origin, overrides, eligible in candidates:
            effective = effective_overrides(overrides, niwt)
            key = json.dumps(effective, sort_keys=True)
            if key in done:
                continue
            done.add(key)
            variant = make_variant(replace(niwt, progress=False), overrides)
            transfer_key = json.dumps(
                {k: v for k, v in effective.items() if k != "logit_matching"}, sort_keys=True
            )
            started = time.perf_counter()
            if transfer_key not in transferred:
                raw, result = variant_rows(
                    "niwt",
                    target,
                    pseudo,
                    seen,
                    replace(variant, logit_matching="none"),
                    cache,
                    backbone,
                    ridge,
                    moments,
                    gram_budget_bytes,
                )
                transferred[transfer_key] = raw, result, time.perf_counter() - started
            raw, result, seconds = transferred[transfer_key]
            started = time.perf_counter()
            rows = matched_rows(raw, variant, seen, training)
            seconds += time.perf_counter() - started
            scores = (seen + rows).scores(feats, all_ids)
            candidate_rows[json.dumps(mapper_overrides, sort_keys=True), key] = rows
            # the rows alone always; a row that is no candidate only alone
            fusions = sorted({0.0, *search.fusion_grid}) if eligible else [0.0]
            for fusion in fusions:
                metrics = validation_metrics(fuse_scores(scores, eszsl, fusion), problem)
                records.append(
                    {
                        "mapper": json.dumps(mapper_overrides, sort_keys=True),
                        "niwt": key,
                        "fusion": float(fusion),
                        "candidate": eligible,
                        "configured": origin == "configured" and fusion == 0,
                        "paper": key == paper_key and fusion == 0,
                        **metrics,
                        "criterion": criterion_value(metrics, search.criterion),
                        "transfer_seconds": seconds,
                        "transfer_loss": float(result.best_loss),
                    }
                )
    results = pd.DataFrame.from_records(records)
    # NIWT's rows alone choose the mapper and variant; the ensemble's weight is then
    # chosen among the fusions of those very rows (a weight of 0 is the rows alone).
    eligible = results["candidate"].to_numpy(dtype=bool)
    alone = (results["fusion"] == 0).to_numpy() & eligible
    criteria = results["criterion"].to_numpy(dtype=np.float64)
    best = int(np.flatnonzero(alone)[best_index(criteria[alone].tolist())])
    chosen = results.iloc[best]
    same_rows = np.flatnonzero(
        (results["mapper"] == chosen["mapper"]).to_numpy()
        & (results["niwt"] == chosen["niwt"]).to_numpy()
        & eligible
    )
    fused = int(same_rows[best_index(criteria[same_rows].tolist())])
    results.insert(0, "chosen", np.arange(len(results)) == best)
    results.insert(1, "chosen_ensemble", np.arange(len(results)) == fused)
    faithful = results[results["paper"] & (results["mapper"] == chosen["mapper"])].iloc[0]
    methods = {
        "niwt_paper": _summary(faithful),
        "niwt_tuned": _summary(chosen),
        ENSEMBLE: _summary(results.iloc[fused]),
        **{method: _summary(metrics) for method, metrics in baseline_metrics.items()},
    }
    choice = {
        "pseudo_unseen_class_ids": [int(c) for c in pseudo],
        "criterion": search.criterion,
        "n_candidates": int(eligible.sum()),
        "mapper": json.loads(chosen["mapper"]),
        "niwt_tuned": json.loads(chosen["niwt"]),
        ENSEMBLE: {"fusion": float(results.iloc[fused]["fusion"])},
        "niwt": asdict(niwt),
        "niwt_paper": asdict(paper),
        "baselines": asdict(baseline_choice),
        "methods": methods,
        "baseline_candidates": baseline_table,
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
        choice["n_candidates"],
    )
    tuned_rows = candidate_rows[chosen["mapper"], chosen["niwt"]].with_method("niwt_tuned")
    return choice, results, tuned_rows
