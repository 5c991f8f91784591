"""Explanation nodes: neuron names, textual and visual explanations, their scores, the report.

Thin glue around :mod:`niwt_pipeline.core.explain` (the method), :mod:`~niwt_pipeline.core.gradcam`
(the maps) and :mod:`niwt_pipeline.core.report` (the HTML page).  Predictions are NIWT's at its
calibrated gamma (chosen on held-out seen classes, never on test data).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field

from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain import (
    NAME_COLUMNS,
    dimension_names,
    neuron_name_agreement,
    neuron_names_from_covariation,
    neuron_names_from_mapper,
    precision_at_k,
    random_precision_at_k,
    row_importance_on_images,
    textual_explanations,
    visual_explanations,
)
from niwt_pipeline.core.explain import score_explanations as score_against_truth
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.core.metrics import calibrated_predictions
from niwt_pipeline.core.modelio import BackboneSpec, image_loader, rebuild_split, sample_rows
from niwt_pipeline.core.report import (
    ExampleRow,
    ReportInputs,
    build_report,
    explanation_grid,
    gzsl_views,
    neuron_names_markdown,
)
from niwt_pipeline.core.training import resolve_device

logger = logging.getLogger(__name__)

METHOD = "niwt"
"""Whose predictions are explained: NIWT's rows (seen rows + transferred unseen rows)."""


class VisualParams(BaseModel):
    """Which test images get Grad-CAM maps."""

    model_config = ConfigDict(extra="forbid")

    images_per_class: int = Field(2, ge=1)
    max_classes: int = Field(6, ge=1)  # about half unseen, half seen classes
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the heat map in the overlay


class ReportParams(BaseModel):
    """What the HTML report shows."""

    model_config = ConfigDict(extra="forbid")

    max_neurons: int = Field(24, ge=1)  # rows of the report's neuron-name table


class ExplanationParams(BaseModel):
    """``params:explanation``."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    batch_size: int = Field(64, ge=1)
    top_k: int = Field(3, ge=1)  # dimensions per neuron name / explanation; precision@k
    max_images: int | None = Field(None, ge=1)  # test images explained (seeded sample)
    seed: int = 0
    covariation_l2_normalise: bool = True  # drop each image's importance scale first
    visual: VisualParams = VisualParams()
    report: ReportParams = ReportParams()


# ---------------------------------------------------------------------------------------
# Helpers: unpacking the persisted inputs
# ---------------------------------------------------------------------------------------
def _dimension_names(domain_knowledge: pd.DataFrame) -> tuple[list[str], bool]:
    """The dimension names and whether they came from the table (False: ``dim_000``..)."""
    columns = list(domain_knowledge_by_class(domain_knowledge).columns)
    names = dimension_names(columns)
    return names, names == [str(c) for c in columns]


def _check_top_k(top_k: int, n_dims: int) -> None:
    if top_k > n_dims:
        raise InputError(
            f"parameters [explanation.top_k]: {top_k} is more than the {n_dims} "
            "domain-knowledge dimensions"
        )


def _mapper(state: dict[str, torch.Tensor]) -> LinearMapper:
    n_out, n_in = state["linear.weight"].shape
    mapper = LinearMapper(int(n_in), int(n_out))
    mapper.load_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return mapper


def _class_rows(
    split: torch.nn.Module, spec: BackboneSpec, niwt_rows: dict[str, Any]
) -> dict[int, torch.Tensor]:
    """``class_id -> (D,)`` classifier row: the trained seen rows and NIWT's unseen rows."""
    weight = split.classifier.weight.detach().cpu().float()
    rows = {int(c): weight[j] for j, c in enumerate(spec.seen_class_ids)}
    for c, w in zip(niwt_rows["unseen_class_id"].tolist(), niwt_rows["unseen_weight"], strict=True):
        rows[int(c)] = w.detach().cpu().float()
    return rows


def _rows_for(rows: dict[int, torch.Tensor], class_ids: np.ndarray) -> torch.Tensor:
    missing = sorted({int(c) for c in class_ids} - set(rows))
    if missing:
        raise InputError(
            f"no classifier row for class id(s) {missing[:5]}: niwt_rows and backbone_spec do not "
            "cover every class; re-run `kedro run --pipeline=transfer`"
        )
    if len(class_ids) == 0:
        return torch.empty((0, next(iter(rows.values())).shape[0]))
    return torch.stack([rows[int(c)] for c in class_ids])


def _require_image_files(paths: list[str]) -> None:
    """Fail naming the first missing file (the images table outlived its files)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{missing[0]}: image file not found{more}; the images table points at files that "
            "no longer exist (moved dataset?): re-run `kedro run --pipeline=ingestion` and the "
            "pipelines after it"
        )


def _image_ids_in(image_outputs: dict[str, Any]) -> dict[int, int]:
    return {int(i): j for j, i in enumerate(image_outputs["image_id"].tolist())}


# ---------------------------------------------------------------------------------------
# Neuron names
# ---------------------------------------------------------------------------------------
def name_neurons(
    mapper_weights: dict[str, torch.Tensor],
    image_importance: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, str]:
    """Name every neuron of the importance layer by its top domain-knowledge dimensions,
    twice: from the mapper's weights, and independently from the Pearson correlation of the
    neuron's importance with each dimension over the seen training images.

    Returns:
        ``neuron_names``: ``source`` (``mapper``/``covariation``), ``neuron``, ``rank``,
        ``dimension``, ``score``; and its markdown rendering with the agreement.
    """
    options = ExplanationParams(**params)
    started = time.perf_counter()
    dk = domain_knowledge_by_class(domain_knowledge)
    names, named = _dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    columns = [c for c in image_importance.columns if c.startswith("k_")]
    importance = image_importance[columns].to_numpy(dtype=np.float64)
    dk_per_image = dk.loc[image_importance["class_id"].to_numpy()].to_numpy(dtype=np.float64)

    by_mapper = neuron_names_from_mapper(_mapper(mapper_weights), names, options.top_k)
    by_covariation = neuron_names_from_covariation(
        importance,
        dk_per_image,
        names,
        options.top_k,
        l2_normalise=options.covariation_l2_normalise,
    )
    agreement = neuron_name_agreement(
        by_mapper, by_covariation, options.top_k, n_dimensions=len(names)
    )
    table = pd.concat(
        [by_mapper.assign(source="mapper"), by_covariation.assign(source="covariation")],
        ignore_index=True,
    )[["source", *NAME_COLUMNS]]
    table["source"] = table["source"].astype("str")
    markdown = neuron_names_markdown(table, agreement.as_dict())
    if not named:
        markdown += "\nThe domain knowledge has no usable dimension names: indices are shown.\n"
    logger.info(
        "neuron names: %d neurons x top-%d of %d dimensions in %.1f s; mapper vs covariation "
        "agreement %.3f (random %.3f)",
        agreement.n_neurons,
        options.top_k,
        len(names),
        time.perf_counter() - started,
        agreement.agreement,
        agreement.random_baseline,
    )
    return table, markdown


# ---------------------------------------------------------------------------------------
# Textual explanations
# ---------------------------------------------------------------------------------------
def explain_predictions(
    image_outputs: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    niwt_rows: dict[str, Any],
    inverse_map_weights: dict[str, torch.Tensor],
    test_scores: dict[str, Any],
    calibration: dict[str, Any],
    params: dict[str, Any],
) -> pd.DataFrame:
    """Explain NIWT's calibrated prediction on every test image in domain-knowledge words.

    The importance of the predicted class's row on the image (a seen row of the backbone or a
    new NIWT row), ``alpha = G(x) w_pred``, goes through the inverse map; its top-k dimensions
    make ``"predicted <class> because: <dim>, <dim>, <dim>"``.

    Returns:
        One row per explained test image: ``image_id``, ``path``, ``split``,
        ``true_class_id``, ``true_class``, ``true_seen``, ``predicted_class_id``,
        ``predicted_class``, ``predicted_seen``, ``correct``, then ``dimension_<r>``,
        ``dimension_id_<r>``, ``score_<r>`` for ranks ``r = 1..top_k``, and ``text``.
    """
    options = ExplanationParams(**params)
    started = time.perf_counter()
    spec = BackboneSpec.from_dict(backbone_spec)
    device = resolve_device(options.device)
    split = rebuild_split(spec, backbone_weights).to(device)
    names, _ = _dimension_names(domain_knowledge)
    _check_top_k(options.top_k, len(names))
    ordered = classes.sort_values("class_id").reset_index(drop=True)
    class_ids = ordered["class_id"].to_numpy(dtype=np.int64)
    class_name = dict(zip(class_ids.tolist(), ordered["name"].astype(str), strict=True))
    class_seen = dict(zip(class_ids.tolist(), ordered["seen"].astype(bool), strict=True))

    gamma = float(calibration["methods"][METHOD]["gamma"])
    scores = test_scores[METHOD].numpy().astype(np.float64)
    predicted = class_ids[calibrated_predictions(scores, ordered["seen"].to_numpy(), gamma)]
    table = images.set_index("image_id").loc[test_scores["image_id"].numpy()].reset_index()
    table["predicted_class_id"] = predicted
    table = sample_rows(table, options.max_images, options.seed)
    _require_image_files(table["path"].tolist())
    without = sorted(set(class_ids.tolist()) - set(table["class_id"].tolist()))
    if without:
        logger.info(
            "textual explanations: %d class(es) without test images to explain, skipped: %s",
            len(without),
            ", ".join(class_name[c] for c in without[:10]) + (", ..." if len(without) > 10 else ""),
        )

    rows = _rows_for(_class_rows(split, spec, niwt_rows), table["predicted_class_id"].to_numpy())
    inverse = InverseMap.from_state(inverse_map_weights)
    loader = image_loader(
        table, spec, batch_size=options.batch_size, labels=np.zeros(len(table), dtype=np.int64)
    )
    importance = torch.zeros((len(table), inverse.weight.shape[0]))
    for x, _, index in loader:
        importance[index] = row_importance_on_images(split, x, rows[index]).float().cpu()

    explained = textual_explanations(
        importance,
        inverse,
        names,
        [class_name[int(c)] for c in table["predicted_class_id"]],
        options.top_k,
    )
    frame = pd.DataFrame(
        {
            "image_id": table["image_id"].to_numpy(dtype=np.int64),
            "path": table["path"].astype("str").to_numpy(),
            "split": table["split"].astype("str").to_numpy(),
            "true_class_id": table["class_id"].to_numpy(dtype=np.int64),
            "true_class": [class_name[int(c)] for c in table["class_id"]],
            "true_seen": [class_seen[int(c)] for c in table["class_id"]],
            "predicted_class_id": table["predicted_class_id"].to_numpy(dtype=np.int64),
            "predicted_class": [class_name[int(c)] for c in table["predicted_class_id"]],
            "predicted_seen": [class_seen[int(c)] for c in table["predicted_class_id"]],
        }
    )
    frame["correct"] = frame["true_class_id"] == frame["predicted_class_id"]
    for r in range(options.top_k):
        frame[f"dimension_{r + 1}"] = pd.array([e.dimensions[r] for e in explained], dtype="str")
        frame[f"dimension_id_{r + 1}"] = np.array(
            [e.dimension_ids[r] for e in explained], dtype=np.int64
        )
        frame[f"score_{r + 1}"] = np.array([e.scores[r] for e in explained], dtype=np.float64)
    frame["text"] = pd.array([e.text for e in explained], dtype="str")
    for column in ("true_class", "predicted_class"):
        frame[column] = frame[column].astype("str")

    check = _seen_row_check(image_outputs, spec, frame, importance)
    logger.info(
        "textual explanations: %d test images (%d predicted unseen) at gamma %.3g in %.1f s; "
        "correct %.1f%%; seen-row importance vs extraction: max rel. diff %s",
        len(frame),
        int((~frame["predicted_seen"]).sum()),
        gamma,
        time.perf_counter() - started,
        100.0 * float(frame["correct"].mean()) if len(frame) else math.nan,
        "n/a" if check is None else f"{check:.1e}",
    )
    return frame


def _seen_row_check(
    image_outputs: dict[str, Any], spec: BackboneSpec, frame: pd.DataFrame, importance: torch.Tensor
) -> float | None:
    """Max relative difference between the importance computed here and the extraction's
    ``importance_pred`` on images where NIWT predicts the backbone's own (seen) prediction."""
    if "importance_pred" not in image_outputs or not len(frame):
        return None
    position = _image_ids_in(image_outputs)
    where = np.array([position[int(i)] for i in frame["image_id"]])
    backbone_pred = np.asarray(spec.seen_class_ids)[image_outputs["predicted"].numpy()[where]]
    same = backbone_pred == frame["predicted_class_id"].to_numpy()
    if not same.any():
        return None
    reference = image_outputs["importance_pred"][torch.as_tensor(where[same])].float()
    diff = (importance[torch.as_tensor(np.flatnonzero(same))] - reference).abs().max()
    return float(diff / reference.abs().max().clamp_min(1e-12))


# ---------------------------------------------------------------------------------------
# Visual explanations
# ---------------------------------------------------------------------------------------
def _choose_classes(classes: pd.DataFrame, explained: pd.DataFrame, max_classes: int) -> list[int]:
    """Up to ``max_classes`` classes with explained test images: about half unseen (first),
    the rest seen; classes without test images are skipped with a notice."""
    has_images = set(explained["true_class_id"].tolist())
    ordered = classes.sort_values("class_id")
    pools = {}
    for seen in (False, True):
        pool = []
        for cid, name in zip(
            ordered.loc[ordered["seen"] == seen, "class_id"],
            ordered.loc[ordered["seen"] == seen, "name"],
            strict=True,
        ):
            if int(cid) in has_images:
                pool.append(int(cid))
            else:
                logger.info(
                    "visual explanations: class %s has no test images to explain: skipped", name
                )
        pools[seen] = pool
    n_unseen = min(len(pools[False]), math.ceil(max_classes / 2))
    n_seen = min(len(pools[True]), max_classes - n_unseen)
    n_unseen = min(len(pools[False]), max_classes - n_seen)
    return pools[False][:n_unseen] + pools[True][:n_seen]


def visualise_explanations(
    textual_explanations: pd.DataFrame,
    classes: pd.DataFrame,
    backbone_weights: dict[str, Any],
    backbone_spec: dict[str, Any],
    niwt_rows: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], Figure]:
    """Grad-CAM maps of the predicted row and of the true class's row (NIWT's new rows for
    unseen classes, the trained rows for seen ones) on a few test images per class.

    Returns:
        ``explanation_examples``: ``image_id`` (N,), ``original``, ``cam_predicted``,
        ``cam_true`` (N, H, W, 3) uint8; and a figure of them beside each textual explanation.
    """
    options = ExplanationParams(**params)
    visual = options.visual
    started = time.perf_counter()
    spec = BackboneSpec.from_dict(backbone_spec)
    split = rebuild_split(spec, backbone_weights).to(resolve_device(options.device))
    chosen_classes = _choose_classes(classes, textual_explanations, visual.max_classes)
    picked = [
        sample_rows(
            textual_explanations[textual_explanations["true_class_id"] == cid].sort_values(
                "image_id"
            ),
            visual.images_per_class,
            options.seed,
        )
        for cid in chosen_classes
    ]
    table = (
        pd.concat(picked, ignore_index=True) if picked else textual_explanations.iloc[:0]
    ).reset_index(drop=True)
    paths = table["path"].tolist()
    _require_image_files(paths)
    rows = _class_rows(split, spec, niwt_rows)
    side = spec.image_size
    empty = torch.empty((0, side, side, 3), dtype=torch.uint8)

    def maps(class_ids: np.ndarray, alpha: float) -> torch.Tensor:
        if not paths:
            return empty
        overlays = visual_explanations(split, paths, _rows_for(rows, class_ids), spec, alpha=alpha)
        return torch.from_numpy(np.stack([np.asarray(o, dtype=np.uint8) for o in overlays]))

    original = maps(table["true_class_id"].to_numpy(), 0.0)
    cam_predicted = maps(table["predicted_class_id"].to_numpy(), visual.alpha)
    cam_true = maps(table["true_class_id"].to_numpy(), visual.alpha)
    examples = _example_rows(table, original, cam_predicted, cam_true)
    figure = explanation_grid(
        examples,
        title=f"Grad-CAM of NIWT's rows at layer {spec.layer} "
        f"({sum(not r.true_seen for r in examples)} unseen-class and "
        f"{sum(r.true_seen for r in examples)} seen-class test images)",
    )
    logger.info(
        "visual explanations: Grad-CAM of %d test images from %d classes in %.1f s",
        len(table),
        len(chosen_classes),
        time.perf_counter() - started,
    )
    out = {
        "image_id": torch.tensor(table["image_id"].to_numpy(dtype=np.int64)),
        "original": original,
        "cam_predicted": cam_predicted,
        "cam_true": cam_true,
    }
    return out, figure


def _example_rows(
    table: pd.DataFrame,
    original: torch.Tensor,
    cam_predicted: torch.Tensor,
    cam_true: torch.Tensor,
) -> list[ExampleRow]:
    return [
        ExampleRow(
            original=original[i].numpy(),
            cam_predicted=cam_predicted[i].numpy(),
            cam_true=cam_true[i].numpy(),
            true_class=str(row.true_class),
            predicted_class=str(row.predicted_class),
            true_seen=bool(row.true_seen),
            predicted_seen=bool(row.predicted_seen),
            text=str(row.text),
        )
        for i, row in enumerate(table.itertuples(index=False))
    ]


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------
def _truth(
    explained: pd.DataFrame, image_attributes: pd.DataFrame, domain_knowledge: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """The explained images that can be scored, their 0/1 truth ``(N, A)`` and its source."""
    dk = domain_knowledge_by_class(domain_knowledge)
    columns = [str(c) for c in dk.columns]
    attributes = [c for c in image_attributes.columns if c != "image_id"]
    if len(image_attributes) and sorted(attributes) == sorted(columns):
        known = image_attributes.set_index("image_id")[columns]
        keep = explained["image_id"].isin(known.index).to_numpy()
        truth = known.loc[explained.loc[keep, "image_id"]].to_numpy(dtype=np.float64)
        return (
            explained[keep].reset_index(drop=True),
            truth,
            {
                "source_of_truth": "image_attributes",
                "truth_description": "the true 0/1 attributes of each test image "
                "(image_attributes, known exactly where the images were generated)",
            },
        )
    reason = (
        "no per-image attributes"
        if not len(image_attributes)
        else "the per-image attributes do not match the domain-knowledge dimensions"
    )
    values = dk.to_numpy(dtype=np.float64)
    above = values > values.mean(axis=0, keepdims=True)
    position = {int(c): j for j, c in enumerate(dk.index)}
    truth = above[[position[int(c)] for c in explained["true_class_id"]]].astype(np.float64)
    return (
        explained.reset_index(drop=True),
        truth,
        {
            "source_of_truth": "class_attributes_thresholded",
            "truth_description": f"{reason}: a dimension counts as true for an image when the "
            "class-level domain-knowledge value of its TRUE class is above that dimension's mean "
            "over all classes",
            "threshold": "mean over classes, per dimension",
        },
    )


def _clean(value: Any) -> Any:
    """NaN -> None (valid JSON), recursively; numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    return value


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(name, value))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value is not None:
            out[name] = {"value": float(value), "step": 0}
    return out


def score_explanations(
    neuron_names: pd.DataFrame,
    textual_explanations: pd.DataFrame,
    image_attributes: pd.DataFrame,
    domain_knowledge: pd.DataFrame,
    calibration: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """How good the explanations are, as numbers (JSON and MLflow metrics).

    * neuron names: top-k agreement of the two namings vs two random namings;
    * textual explanations: precision@k against the truth, for correctly and incorrectly
      classified images, over all / seen-class / unseen-class test images, with two
      baselines: naming k random dimensions, and naming the predicted class's k largest
      domain-knowledge dimensions (no image importance involved).  The truth is each image's
      true attributes where the dataset has them (the generated world), else the TRUE class's
      attributes above their mean over classes; ``source_of_truth`` says which.
    """
    options = ExplanationParams(**params)
    k = options.top_k
    names, named = _dimension_names(domain_knowledge)
    agreement = neuron_name_agreement(
        neuron_names[neuron_names["source"] == "mapper"],
        neuron_names[neuron_names["source"] == "covariation"],
        k,
        n_dimensions=len(names),
    )
    scored, truth, source = _truth(textual_explanations, image_attributes, domain_knowledge)
    ids = scored[[f"dimension_id_{r + 1}" for r in range(k)]].to_numpy(dtype=np.int64)
    dk = domain_knowledge_by_class(domain_knowledge)
    position = {int(c): j for j, c in enumerate(dk.index)}
    prior_scores = dk.to_numpy(dtype=np.float64)[
        [position[int(c)] for c in scored["predicted_class_id"]]
    ]
    prior = np.argsort(-prior_scores, axis=1, kind="stable")[:, :k] if len(scored) else ids

    groups: dict[str, dict[str, Any]] = {}
    masks = {
        "all": np.ones(len(scored), dtype=bool),
        "seen": scored["true_seen"].to_numpy(dtype=bool),
        "unseen": ~scored["true_seen"].to_numpy(dtype=bool),
    }
    correct = scored["correct"].to_numpy(dtype=bool)
    for group, mask in masks.items():
        if not mask.any():
            groups[group] = {"n_images": 0}
            continue
        result = score_against_truth(
            ids[mask].tolist(),
            truth[mask],
            scored["predicted_class_id"].to_numpy()[mask],
            scored["true_class_id"].to_numpy()[mask],
            k,
        )
        values: dict[str, Any] = {
            "n_images": int(mask.sum()),
            "n_correct": result.n_correct,
            "n_incorrect": result.n_incorrect,
            "all": result.precision,
            "correct": result.precision_correct,
            "incorrect": result.precision_incorrect,
            "random": result.random_precision,
            "class_prior": precision_at_k(prior[mask].tolist(), truth[mask], k),
        }
        for label, subset in (("correct", mask & correct), ("incorrect", mask & ~correct)):
            values[f"random_{label}"] = (
                random_precision_at_k(truth[subset], k) if subset.any() else math.nan
            )
            values[f"class_prior_{label}"] = (
                precision_at_k(prior[subset].tolist(), truth[subset], k)
                if subset.any()
                else math.nan
            )
        groups[group] = values

    metrics = _clean(
        {
            "method": METHOD,
            "top_k": k,
            "dimension_names": "domain-knowledge column names"
            if named
            else "indices dim_000.. (the domain knowledge has no usable dimension names)",
            "neuron_names": {
                **agreement.as_dict(),
                "covariation": "Pearson correlation, over the seen training images, of each "
                "neuron's importance"
                + (" (rows L2-normalised)" if options.covariation_l2_normalise else "")
                + " with the image's class-level domain knowledge",
            },
            "textual": {
                **source,
                "gamma": float(calibration["methods"][METHOD]["gamma"]),
                "n_images_explained": int(len(textual_explanations)),
                "n_images_scored": int(len(scored)),
                "precision_at_k": groups,
            },
        }
    )
    mlflow_metrics = {
        **_flatten(
            "neuron_names",
            {
                "agreement": agreement.agreement,
                "random_baseline": agreement.random_baseline,
            },
        ),
        **_flatten(f"precision_at_{k}", metrics["textual"]["precision_at_k"]),
    }
    unseen = groups.get("unseen", {})
    logger.info(
        "explanation scores (%s): precision@%d correct unseen %s vs random %s; neuron-name "
        "agreement %.3f vs random %.3f",
        source["source_of_truth"],
        k,
        _pct(unseen.get("correct")),
        _pct(unseen.get("random_correct")),
        agreement.agreement,
        agreement.random_baseline,
    )
    return metrics, mlflow_metrics


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


# ---------------------------------------------------------------------------------------
# The run report
# ---------------------------------------------------------------------------------------
def _timings(
    backbone_report: dict[str, Any], transfer_report: dict[str, Any]
) -> list[tuple[str, float | None, str]]:
    """The stage timings the stages persisted in their own reports."""
    out: list[tuple[str, float | None, str]] = [
        ("backbone training", backbone_report.get("train_seconds"), "backbone_report.train_seconds")
    ]
    for part in ("unseen", "tuned"):
        timings = (transfer_report.get(part) or {}).get("timings") or {}
        if "optimise" in timings:
            steps = (transfer_report.get(part) or {}).get("steps")
            out.append(
                (
                    f"NIWT transfer, {part} rows ({steps} steps)",
                    timings["optimise"],
                    f"transfer_report.{part}.timings.optimise",
                )
            )
    return out


def build_run_report(
    ingestion_summary: dict[str, Any],
    gzsl_metrics: dict[str, Any],
    test_scores: dict[str, Any],
    calibration: dict[str, Any],
    images: pd.DataFrame,
    classes: pd.DataFrame,
    textual_explanations: pd.DataFrame,
    explanation_examples: dict[str, torch.Tensor],
    neuron_names: pd.DataFrame,
    explanation_metrics: dict[str, Any],
    backbone_report: dict[str, Any],
    transfer_report: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """One self-contained HTML page: data and split, GZSL metrics of NIWT and the baselines,
    seen-unseen curves, confusion matrix and per-class accuracy (recomputed from the test
    scores at each method's calibrated gamma), example explanations with their Grad-CAM
    maps, the explanation scores, the neuron names and the stage timings."""
    options = ExplanationParams(**params)
    started = time.perf_counter()
    methods = [m for m in gzsl_metrics["methods"] if m in test_scores]
    image_classes = (
        images.set_index("image_id").loc[test_scores["image_id"].numpy(), "class_id"].to_numpy()
    )
    views = gzsl_views(
        {m: test_scores[m].numpy() for m in methods},
        image_classes,
        classes,
        {m: calibration["methods"][m]["gamma"] for m in methods},
        confusion_method=METHOD,
    )
    by_id = textual_explanations.set_index("image_id")
    examples = _example_rows(
        by_id.loc[explanation_examples["image_id"].numpy()].reset_index(),
        explanation_examples["original"],
        explanation_examples["cam_predicted"],
        explanation_examples["cam_true"],
    )
    notes = []
    if not str(explanation_metrics.get("dimension_names", "")).startswith("domain-knowledge"):
        notes.append(f"Dimension names: {explanation_metrics.get('dimension_names')}.")
    if views.classes_without_images:
        notes.append(
            f"{len(views.classes_without_images)} class(es) without test images were skipped "
            "by the explanations."
        )
    page = build_report(
        ReportInputs(
            summary=ingestion_summary,
            gzsl=gzsl_metrics,
            views=views,
            examples=examples,
            explanation_metrics=explanation_metrics,
            neuron_names=neuron_names,
            timings=_timings(backbone_report, transfer_report),
            max_neurons=options.report.max_neurons,
            extra_notes=notes,
        )
    )
    for figure in (views.curve_figure, views.confusion_figure, views.accuracy_figure):
        figure.clear()
    logger.info(
        "run report: %d methods, %d example explanations, %.0f kB of HTML in %.1f s",
        len(methods),
        len(examples),
        len(page) / 1024,
        time.perf_counter() - started,
    )
    return page
