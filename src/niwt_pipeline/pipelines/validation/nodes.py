"""Validation nodes: a second backbone that never sees the pseudo-unseen classes, and the
choice of every hyper-parameter and calibration gamma on them.

Nothing here reads a test image: the validation problem is the held-out images of the
validation backbone's own classes plus every trainval image of the pseudo-unseen classes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from niwt_pipeline.core.baselines import eszsl_scores
from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.gzsl import problem_for, row_scores, rows_by_class
from niwt_pipeline.core.mapper import MapperConfig, fit_mapper
from niwt_pipeline.core.modelio import BackboneSpec, choose_classes
from niwt_pipeline.core.selection import (
    CRITERIA,
    best_index,
    criterion_value,
    effective_overrides,
    expand_grid,
    fuse_scores,
    make_variant,
    validation_metrics,
)
from niwt_pipeline.core.transfer import TransferConfig, gram_moments
from niwt_pipeline.pipelines.backbone.nodes import BackboneParams, fit_backbone
from niwt_pipeline.pipelines.extraction.nodes import extract_image_outputs
from niwt_pipeline.pipelines.mapping.nodes import MappingParams
from niwt_pipeline.pipelines.transfer.nodes import (
    TransferParams,
    baseline_rows,
    cache_reference,
    niwt_variant_rows,
    seen_rows,
)

logger = logging.getLogger(__name__)

ROLES = ("train", "holdout", "pseudo_unseen")


class ValidationParams(BaseModel):
    """``params:validation``.

    Attributes:
        pseudo_unseen_classes: seen classes held out of the validation backbone (a count, or
            a fraction of the seen classes).
        seed: seeds the choice of those classes.
        criterion: how candidates are ranked on the validation problem: ``H`` (at each
            candidate's best gamma), ``ausuc``, or the ``mean`` of the two.
        reference_max_images: reference images for the validation transfers (a seeded sample
            of the validation backbone's trainval images); ``null`` = as ``transfer.reference``.
        mapper_grid: ``MapperConfig`` field -> values to try.
        niwt_grid: ``TransferConfig`` field (``init`` may also be ``ridge``) or ``anchor``
            (``mean_seen`` | ``ridge``) -> values to try.  The configured
            ``transfer.niwt`` (the reference variant) is always tried too.
        fusion_grid: weights of ESZSL scores fused into the NIWT scores (0 = NIWT alone).
    """

    model_config = ConfigDict(extra="forbid")

    pseudo_unseen_classes: int | float = Field(0.25, gt=0)
    seed: int = 0
    criterion: str = "mean"
    reference_max_images: int | None = Field(256, ge=1)
    mapper_grid: dict[str, list[Any]] = {}
    niwt_grid: dict[str, list[Any]] = {}
    fusion_grid: list[float] = [0.0]

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, value: str) -> str:
        if value not in CRITERIA:
            raise ValueError(f"expected one of {CRITERIA}, got {value!r}")
        return value

    @field_validator("mapper_grid")
    @classmethod
    def _mapper_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        known = set(MapperConfig.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown MapperConfig field(s) {unknown}; expected {sorted(known)}")
        for candidate in expand_grid(value):
            replace(MapperConfig(), **candidate)  # each value must make a valid config
        return value

    @field_validator("niwt_grid")
    @classmethod
    def _niwt_keys(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "fusion" in value:
            raise ValueError("put fusion weights in validation.fusion_grid")
        for candidate in expand_grid(value):
            make_variant(TransferConfig(), candidate)  # each value must make a valid variant
        return value

    @field_validator("fusion_grid")
    @classmethod
    def _fusion(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError(f"expected one or more weights >= 0, got {value}")
        return value


def split_for_validation(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    backbone_split: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Choose the pseudo-unseen classes and give every trainval image of a seen class a role.

    Images of the other seen classes keep the backbone's own train/holdout role (so the
    validation backbone trains on exactly the images the backbone trained on, minus the
    pseudo-unseen classes); every trainval image of a pseudo-unseen class is
    ``pseudo_unseen``.  Test images get no role.

    Returns:
        ``image_id``, ``class_id``, ``role`` in {train, holdout, pseudo_unseen}.
    """
    options = ValidationParams(**params)
    seen_ids = classes.loc[classes["seen"], "class_id"].to_numpy(dtype=np.int64)
    pseudo = choose_classes(seen_ids, options.pseudo_unseen_classes, options.seed)
    table = backbone_split.merge(images[["image_id", "class_id"]], on="image_id", how="left")
    if table["class_id"].isna().any():
        missing = table.loc[table["class_id"].isna(), "image_id"].head(3).tolist()
        raise InputError(f"backbone_split: image ids {missing} are not in images")
    role = np.where(np.isin(table["class_id"], pseudo), "pseudo_unseen", table["role"])
    out = pd.DataFrame(
        {
            "image_id": table["image_id"].astype("int64"),
            "class_id": table["class_id"].astype("int64"),
            "role": pd.Series(role, dtype="str"),
        }
    )
    logger.info(
        "validation: %d pseudo-unseen classes %s; images per role %s",
        len(pseudo),
        pseudo.tolist(),
        out["role"].value_counts().to_dict(),
    )
    return out


def _rows(images: pd.DataFrame, validation_split: pd.DataFrame, *roles: str) -> pd.DataFrame:
    ids = validation_split.loc[validation_split["role"].isin(roles), "image_id"]
    return images[images["image_id"].isin(set(ids))].reset_index(drop=True)


def train_validation_backbone(
    images: pd.DataFrame,
    validation_split: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The backbone's recipe (``params:backbone``) trained without the pseudo-unseen classes.

    Returns:
        state dict, spec (JSON), report (JSON).
    """
    options = BackboneParams(**params)
    pseudo = validation_split["role"] == "pseudo_unseen"
    state, spec, report = fit_backbone(
        options,
        sorted(int(c) for c in validation_split.loc[~pseudo, "class_id"].unique()),
        _rows(images, validation_split, "train"),
        _rows(images, validation_split, "holdout"),
        None,
    )
    report["pseudo_unseen_class_ids"] = sorted(
        int(c) for c in validation_split.loc[pseudo, "class_id"].unique()
    )
    return state, spec, report


def extract_validation_outputs(
    weights: dict[str, Any],
    spec: dict[str, Any],
    images: pd.DataFrame,
    validation_split: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Features and importances of the validation images under the validation backbone
    (``params:extraction``, in one pass)."""
    table = _rows(images, validation_split, *ROLES)
    return extract_image_outputs(weights, spec, table, {**params, "shard_size": None})


def cache_validation_reference(
    weights: dict[str, Any],
    spec: dict[str, Any],
    images: pd.DataFrame,
    params_validation: dict[str, Any],
    params_transfer: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """The reference cache (``transfer.reference``) of the validation backbone; its seen
    classes exclude the pseudo-unseen ones, so their images are never reference images."""
    options = ValidationParams(**params_validation)
    transfer = TransferParams(**params_transfer).model_dump()
    if options.reference_max_images is not None:
        transfer["reference"]["max_images"] = options.reference_max_images
    return cache_reference(weights, spec, images, transfer)


def select_hyperparameters(
    outputs: dict[str, Any],
    reference_cache: dict[str, torch.Tensor],
    weights: dict[str, Any],
    spec_json: dict[str, Any],
    validation_split: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    params_validation: dict[str, Any],
    params_mapping: dict[str, Any],
    params_transfer: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Score every (mapper, NIWT variant, fusion) candidate and the baselines on the
    validation problem; choose the best candidate and every method's gamma.

    Returns:
        choice (JSON: the chosen mapper and NIWT overrides, and per method its validation
        S/U/H/AUSUC and gamma), the table of every candidate, MLflow metrics.
    """
    options = ValidationParams(**params_validation)
    mapping = MappingParams(**params_mapping)
    transfer = TransferParams(**params_transfer)
    spec = BackboneSpec.from_dict(spec_json)
    weight, bias, seen_ids = seen_rows(weights, spec)
    dk = domain_knowledge_by_class(domain_knowledge).to_numpy(np.float64)
    roles = validation_split.set_index("image_id").loc[outputs["image_id"].numpy()]
    role = roles["role"].to_numpy()
    labels = roles["class_id"].to_numpy(dtype=np.int64)
    pseudo = np.unique(labels[role == "pseudo_unseen"])
    features = outputs["features"].numpy().astype(np.float64)
    importance = outputs["importance_gt"].numpy()
    train = role == "train"

    # baselines on the validation backbone
    ridge_w, ridge_b, v, gamma, lam = baseline_rows(
        features[train], labels[train], weight, bias, seen_ids, dk, pseudo, transfer.baselines
    )

    evaluate = np.isin(role, ("holdout", "pseudo_unseen"))
    all_ids = np.union1d(seen_ids, pseudo)
    problem = problem_for(labels[evaluate], all_ids, pseudo)
    feats = features[evaluate]
    seen_table = rows_by_class(weight.numpy(), bias.numpy(), seen_ids)
    eszsl = eszsl_scores(feats, v, dk[all_ids])
    ridge = row_scores(feats, {**seen_table, **rows_by_class(ridge_w, ridge_b, pseudo)}, all_ids)
    ridge_rows_t = torch.as_tensor(np.asarray(ridge_w), dtype=weight.dtype)

    base = transfer.niwt
    niwt_candidates = [{}, *expand_grid(options.niwt_grid)]
    gram = reference_cache.get("gram")
    moments = gram_moments([gram], weight) if gram is not None else None
    records: list[dict[str, Any]] = []
    for mapper_overrides in expand_grid(options.mapper_grid):
        mapper_config = replace(mapping.mapper, **mapper_overrides)
        mapper, _ = fit_mapper(dk, importance[train], labels[train], seen_ids, mapper_config)
        target = mapper.predict(dk[pseudo]).numpy()
        done: set[str] = set()
        for overrides in niwt_candidates:
            key = json.dumps(effective_overrides(overrides, base), sort_keys=True)
            if key in done:
                continue
            done.add(key)
            started = time.perf_counter()
            variant = make_variant(replace(base, progress=False), overrides)
            result = niwt_variant_rows(
                target,
                weight,
                bias,
                variant,
                reference_cache,
                weights,
                spec,
                ridge_rows_t,
                moments,
            )
            niwt = row_scores(
                feats,
                {**seen_table, **rows_by_class(result.weight.numpy(), result.bias.numpy(), pseudo)},
                all_ids,
            )
            seconds = time.perf_counter() - started
            for fusion in options.fusion_grid:
                metrics = validation_metrics(fuse_scores(niwt, eszsl, fusion), problem)
                records.append(
                    {
                        "mapper": json.dumps(mapper_overrides, sort_keys=True),
                        "niwt": key,
                        "fusion": float(fusion),
                        "reference": overrides == {} and fusion == 0,
                        **metrics,
                        "criterion": criterion_value(metrics, options.criterion),
                        "transfer_seconds": seconds,
                        "transfer_loss": float(result.best_loss),
                    }
                )
    table = pd.DataFrame.from_records(records)
    best = best_index(table["criterion"].tolist())
    chosen_row = table.iloc[best]
    table.insert(0, "chosen", np.arange(len(table)) == best)
    mapper_choice = json.loads(chosen_row["mapper"])
    reference = table[table["reference"] & (table["mapper"] == chosen_row["mapper"])].iloc[0]

    def summary(metrics: Any) -> dict[str, float]:
        keys = ("S", "U", "H", "gamma", "ausuc", "zsl_top1", "H_uncalibrated")
        return {k: float(metrics[k]) for k in keys}

    methods = {
        "niwt": summary(reference),
        "niwt_tuned": summary(chosen_row),
        "weight_regression": validation_metrics(ridge, problem),
        "eszsl": validation_metrics(eszsl, problem),
    }
    choice = {
        "pseudo_unseen_class_ids": [int(c) for c in pseudo],
        "criterion": options.criterion,
        "n_candidates": len(table),
        "mapper": mapper_choice,
        "niwt_tuned": {**json.loads(chosen_row["niwt"]), "fusion": float(chosen_row["fusion"])},
        "niwt_reference": asdict(base),
        "eszsl": {"gamma": float(gamma), "lambda": float(lam)},
        "methods": methods,
    }
    for method, values in methods.items():
        logger.info(
            "validation %s: H %.1f (gamma %.3g), AUSUC %.1f, ZSL %.1f",
            method,
            100 * values["H"],
            values["gamma"],
            100 * values["ausuc"],
            100 * values["zsl_top1"],
        )
    logger.info(
        "validation chose mapper %s, NIWT %s (of %d candidates)",
        choice["mapper"],
        choice["niwt_tuned"],
        len(table),
    )
    mlflow_metrics = {
        f"{method}.{key}": {"value": 100 * float(values[key]), "step": 0}
        for method, values in methods.items()
        for key in ("H", "ausuc")
    }
    return choice, table, mlflow_metrics
