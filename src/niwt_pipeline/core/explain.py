"""NIWT's explanations: neuron names, textual explanations and their scores, visual maps.

* **Neuron names** (DESIGN.md section 1): for each channel ``k`` of the importance layer,
  the domain-knowledge dimensions that map most strongly onto it, read off the learned
  mapper's weight (:func:`neuron_names_from_mapper`) or, independently of the mapper,
  from how each dimension co-varies with the channel's importance over seen images
  (:func:`neuron_names_from_covariation`).  :func:`neuron_name_agreement` compares two
  namings against the analytic chance level.
* **Textual explanations**: the inverse map (importance -> domain knowledge, see
  :func:`niwt_pipeline.core.mapper.fit_inverse_map`) applied to the importance of the
  predicted class on an image, ``alpha = G(x) w_pred`` (:func:`row_importance_on_images`,
  which works for new unseen rows too); the top dimensions become
  ``"predicted <class> because: <dim>, <dim>, <dim>"``.  Where the true per-image
  attributes are known (the generated world), :func:`score_explanations` gives
  precision@k for correctly and incorrectly classified images and the chance level.
* **Visual explanations**: Grad-CAM of the predicted row (:mod:`niwt_pipeline.core.gradcam`)
  overlaid on the image the model saw (:func:`visual_explanations`).

Every ranking is by signed score, highest first: a dimension names a neuron when more of
it means more importance, not less.  Ties keep the lower dimension index first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from niwt_pipeline.core.backbones import SplitModel
from niwt_pipeline.core.data.xlsa17 import dim_names
from niwt_pipeline.core.gradcam import gradcam, overlay, row_gradients
from niwt_pipeline.core.imageset import ImageTableDataset
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.core.modelio import BackboneSpec

logger = logging.getLogger(__name__)

NAME_COLUMNS = ("neuron", "rank", "dimension", "score")
"""Columns of a neuron-name table: channel index, 1-based rank, dimension name, score."""


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------
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


def _names_table(scores: np.ndarray, dk_names: list[str], top_k: int) -> pd.DataFrame:
    """``scores: (K, A)`` -> the long table of each neuron's top-k dimensions."""
    top = _top_k(scores, top_k)
    n_neurons = scores.shape[0]
    neuron = np.repeat(np.arange(n_neurons, dtype=np.int64), top_k)
    return pd.DataFrame(
        {
            "neuron": neuron,
            "rank": np.tile(np.arange(1, top_k + 1, dtype=np.int64), n_neurons),
            "dimension": pd.array([dk_names[a] for a in top.ravel()], dtype="str"),
            "score": np.take_along_axis(scores, top, axis=1).ravel(),
        }
    )


# ---------------------------------------------------------------------------------------
# Neuron names
# ---------------------------------------------------------------------------------------
def neuron_names_from_mapper(
    mapper_weight: np.ndarray | torch.Tensor | LinearMapper,
    dk_names: Sequence[str],
    top_k: int = 3,
) -> pd.DataFrame:
    """Each neuron's top domain-knowledge dimensions by the learned mapping's weight.

    Args:
        mapper_weight: ``(K, A)`` weight of a linear map domain knowledge -> importance,
            or a :class:`~niwt_pipeline.core.mapper.LinearMapper`.  A mapper that
            standardises its inputs computes ``W ((dk - in_mean) / in_scale) + b``; its
            score is the weight on the *unstandardised* domain knowledge,
            ``W[k, a] / in_scale[a]`` (the mean only shifts the bias), i.e. the change in
            neuron ``k``'s predicted importance per unit of dimension ``a`` -- comparable
            across dimensions that share a range, as max-scaled attributes do.
        dk_names: the A dimension names (see :func:`dimension_names`).
        top_k: dimensions per neuron.

    Returns:
        ``K * top_k`` rows with columns :data:`NAME_COLUMNS`, by neuron then rank.

    Raises:
        ValueError: on a weight that is not 2-d, names that do not match ``A``, or a bad
            ``top_k``.
    """
    if isinstance(mapper_weight, LinearMapper):
        with torch.no_grad():
            weight = mapper_weight.linear.weight / mapper_weight.in_scale
    else:
        weight = mapper_weight
    scores = _matrix(weight, "mapper_weight")
    names = _check_names(dk_names, scores.shape[1], f"mapper_weight {scores.shape}")
    return _names_table(scores, names, _check_top_k(top_k, scores.shape[1]))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N, K), (N, A)`` -> ``(K, A)`` Pearson correlations; 0 where a column is constant."""
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    xn = np.sqrt((xc**2).sum(0))
    yn = np.sqrt((yc**2).sum(0))
    den = np.outer(xn, yn)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (xc.T @ yc) / den
    return np.where(den > 0, corr, 0.0)


def neuron_names_from_covariation(
    importance: np.ndarray | torch.Tensor,
    dk_per_image: np.ndarray | torch.Tensor,
    dk_names: Sequence[str],
    top_k: int = 3,
    *,
    l2_normalise: bool = False,
) -> pd.DataFrame:
    """Each neuron's dimensions whose value correlates most with the neuron's importance.

    Independent of the mapper: for every neuron ``k`` and dimension ``a``, the Pearson
    correlation over the images of ``importance[:, k]`` and ``dk_per_image[:, a]``.
    A constant neuron or dimension correlates 0 with everything.

    Args:
        importance: ``(N, K)`` per-image importance (e.g. of the ground-truth class on the
            seen training images).
        dk_per_image: ``(N, A)`` each image's domain knowledge (its class's vector
            ``dk[labels]``, or its true attributes where known).
        dk_names: the A dimension names.
        top_k: dimensions per neuron.
        l2_normalise: divide each importance row by its L2 norm first, removing the
            per-image scale that the mapper's cosine loss ignores.

    Returns:
        ``K * top_k`` rows with columns :data:`NAME_COLUMNS`; ``score`` is the correlation.

    Raises:
        ValueError: on shapes that do not match (naming them), fewer than two images, or
            a bad ``top_k``.
    """
    imp = _matrix(importance, "importance")
    dk = _matrix(dk_per_image, "dk_per_image")
    if imp.shape[0] != dk.shape[0]:
        raise ValueError(
            f"importance {imp.shape} and dk_per_image {dk.shape} must have the same rows"
        )
    if imp.shape[0] < 2:
        raise ValueError(f"need at least two images to correlate, got {imp.shape[0]}")
    names = _check_names(dk_names, dk.shape[1], f"dk_per_image {dk.shape}")
    top_k = _check_top_k(top_k, dk.shape[1])
    if l2_normalise:
        norm = np.linalg.norm(imp, axis=1, keepdims=True)
        imp = imp / np.where(norm > 0, norm, 1.0)
    return _names_table(_pearson(imp, dk), names, top_k)


@dataclass
class NameAgreement:
    """How often two neuron namings agree, and what chance would give.

    Attributes:
        agreement: mean over neurons of ``|top-k of a  &  top-k of b| / k``.
        random_baseline: its expected value for two independent uniformly random k-subsets
            of the A dimensions, ``k / A`` (the overlap is hypergeometric with mean ``k^2/A``).
        top_k: k.
        n_dimensions: A.
        n_neurons: neurons compared.
    """

    agreement: float
    random_baseline: float
    top_k: int
    n_dimensions: int
    n_neurons: int

    def as_dict(self) -> dict[str, float | int]:
        """Scalars, for metric logging."""
        return asdict(self)


def _top_sets(table: pd.DataFrame, top_k: int, name: str) -> dict[int, set[str]]:
    missing = [c for c in NAME_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; expected {list(NAME_COLUMNS)}")
    top = table[table["rank"] <= top_k]
    sets = {int(k): set(group["dimension"]) for k, group in top.groupby("neuron")}
    short = [k for k, dims in sets.items() if len(dims) < top_k]
    if short:
        raise ValueError(f"{name}: neuron {short[0]} has fewer than top_k = {top_k} dimensions")
    return sets


def neuron_name_agreement(
    table_a: pd.DataFrame, table_b: pd.DataFrame, top_k: int, *, n_dimensions: int
) -> NameAgreement:
    """Mean top-k overlap of two neuron-name tables, with the analytic chance level.

    Args:
        table_a, table_b: tables with columns :data:`NAME_COLUMNS` (from
            :func:`neuron_names_from_mapper` / :func:`neuron_names_from_covariation`),
            holding at least ``top_k`` ranks for the same neurons.
        top_k: k.
        n_dimensions: A, the number of dimensions the names were drawn from.

    Raises:
        ValueError: when the tables name different neurons, hold fewer than ``top_k``
            ranks, lack columns, or ``top_k`` is not in ``[1, n_dimensions]``.
    """
    top_k = _check_top_k(top_k, n_dimensions)
    sets_a = _top_sets(table_a, top_k, "table_a")
    sets_b = _top_sets(table_b, top_k, "table_b")
    if set(sets_a) != set(sets_b) or not sets_a:
        raise ValueError(
            f"the tables name different neurons: {len(sets_a)} in table_a, {len(sets_b)} in "
            f"table_b, {len(set(sets_a) & set(sets_b))} in both"
        )
    overlap = [len(sets_a[k] & sets_b[k]) / top_k for k in sets_a]
    return NameAgreement(
        agreement=float(np.mean(overlap)),
        random_baseline=top_k / n_dimensions,
        top_k=top_k,
        n_dimensions=int(n_dimensions),
        n_neurons=len(overlap),
    )


# ---------------------------------------------------------------------------------------
# Textual explanations
# ---------------------------------------------------------------------------------------
def row_importance_on_images(
    split: SplitModel, x: torch.Tensor, rows: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """NIWT importance of arbitrary classifier rows on images: ``alpha_i = G(x_i) rows_i``.

    The gradient of ``z_i . rows_i`` w.r.t. the activations, summed over positions (the
    definition of :mod:`niwt_pipeline.core.importance`; for a seen row it equals that
    class's importance), by one ``autograd.grad`` per batch
    (:func:`niwt_pipeline.core.gradcam.row_gradients`).  Works for new unseen rows.

    Args:
        split: the cut model; its state is left as it was.
        x: ``(B, 3, H, W)`` images.
        rows: ``(B, D)`` one row per image (e.g. each image's predicted row), or ``(D,)``.

    Returns:
        ``(B, K)`` detached importances on the model's device.
    """
    _, grad = row_gradients(split, x, rows)
    return grad.flatten(2).sum(2)


@dataclass
class Explanation:
    """Why the model predicted a class on one image, in domain-knowledge words.

    Attributes:
        image: row of the image in the inputs it was explained with.
        predicted_class: the predicted class's name.
        dimensions: the top-k dimension names, highest score first.
        dimension_ids: their column indices.
        scores: the inverse map's predicted domain-knowledge value of each.
        text: ``"predicted <class> because: <dim>, <dim>, <dim>"``.
    """

    image: int
    predicted_class: str
    dimensions: list[str]
    dimension_ids: list[int]
    scores: list[float]
    text: str


def textual_explanations(
    importance_for_predicted: np.ndarray | torch.Tensor,
    inverse_map: InverseMap,
    dk_names: Sequence[str],
    class_names_pred: Sequence[str],
    top_k: int = 3,
) -> list[Explanation]:
    """Explain predictions by the domain knowledge their importance maps back to.

    Args:
        importance_for_predicted: ``(N, K)`` importance of each image's predicted class
            (from :func:`row_importance_on_images` with the predicted rows).
        inverse_map: importance -> domain knowledge, ``(K,) -> (A,)``.
        dk_names: the A dimension names.
        class_names_pred: the N predicted class names.
        top_k: dimensions per explanation.

    Returns:
        N :class:`Explanation` objects in input order; an empty list (with a warning) when
        there are no images, e.g. a class without test images.

    Raises:
        ValueError: on shapes that do not match (naming them) or a bad ``top_k``.
    """
    imp = _matrix(importance_for_predicted, "importance_for_predicted")
    n_in, n_dims = inverse_map.weight.shape
    if imp.shape[1] != n_in:
        raise ValueError(
            f"importance_for_predicted {imp.shape} does not fit the inverse map "
            f"({n_in} channels -> {n_dims} dimensions)"
        )
    if len(class_names_pred) != imp.shape[0]:
        raise ValueError(
            f"class_names_pred has {len(class_names_pred)} names for importance_for_predicted "
            f"{imp.shape}"
        )
    names = _check_names(dk_names, n_dims, f"the inverse map ({n_in} -> {n_dims})")
    top_k = _check_top_k(top_k, n_dims)
    if imp.shape[0] == 0:
        logger.warning("textual_explanations: no images to explain; returning no explanations")
        return []
    predicted = inverse_map.predict(imp).numpy()
    top = _top_k(predicted, top_k)
    explanations = []
    for i, (ids, cls) in enumerate(zip(top, class_names_pred, strict=True)):
        dims = [names[a] for a in ids]
        explanations.append(
            Explanation(
                image=i,
                predicted_class=str(cls),
                dimensions=dims,
                dimension_ids=[int(a) for a in ids],
                scores=[float(predicted[i, a]) for a in ids],
                text=f"predicted {cls} because: {', '.join(dims)}",
            )
        )
    return explanations


def explanations_frame(explanations: Sequence[Explanation]) -> pd.DataFrame:
    """One row per (image, rank): ``image, predicted_class, rank, dimension, score, text``."""
    rows = [
        {
            "image": e.image,
            "predicted_class": e.predicted_class,
            "rank": rank,
            "dimension": dim,
            "score": score,
            "text": e.text,
        }
        for e in explanations
        for rank, (dim, score) in enumerate(zip(e.dimensions, e.scores, strict=True), start=1)
    ]
    columns = ["image", "predicted_class", "rank", "dimension", "score", "text"]
    return pd.DataFrame(rows, columns=columns)


def class_test_images(
    images: pd.DataFrame,
    class_id: int,
    splits: Sequence[str] = ("test_seen", "test_unseen"),
) -> pd.DataFrame:
    """The test images of one class from a canonical images table (``class_id``, ``split``).

    Returns:
        The matching rows (index reset); an empty table, with a warning naming the class,
        when it has no test images, so explaining it yields nothing instead of failing.
    """
    for column in ("class_id", "split"):
        if column not in images.columns:
            raise ValueError(f"images: missing column {column!r}; got {list(images.columns)}")
    rows = images[(images["class_id"] == class_id) & images["split"].isin(list(splits))]
    if rows.empty:
        logger.warning(
            "class %s has no images in splits %s: nothing to explain", class_id, list(splits)
        )
    return rows.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Scoring explanations against true attributes
# ---------------------------------------------------------------------------------------
def _dimension_ids(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
) -> list[list[int]]:
    return [
        list(e.dimension_ids) if isinstance(e, Explanation) else [int(a) for a in e]
        for e in explanations
    ]


def _binary(true_attributes: np.ndarray | pd.DataFrame) -> np.ndarray:
    truth = _matrix(np.asarray(true_attributes), "true_attributes")
    if not np.isin(truth, (0.0, 1.0)).all():
        raise ValueError("true_attributes: expected 0/1 values")
    return truth


def precision_at_k(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
    true_attributes: np.ndarray | pd.DataFrame,
    k: int,
) -> float:
    """Mean over images of the share of the first ``k`` explained dimensions that are true.

    Args:
        explanations: per image, its ranked dimension indices (or :class:`Explanation`).
        true_attributes: ``(N, A)`` 0/1, the attributes each image really shows.
        k: how many of each explanation's dimensions count.

    Returns:
        Precision@k in [0, 1]; NaN (with a warning) when there are no images.

    Raises:
        ValueError: on a count or shape mismatch, explanations shorter than ``k``, or
            dimension indices outside ``[0, A)``.
    """
    truth = _binary(true_attributes)
    ids = _dimension_ids(explanations)
    if len(ids) != truth.shape[0]:
        raise ValueError(f"{len(ids)} explanations for true_attributes of shape {truth.shape}")
    k = _check_top_k(k, truth.shape[1])
    if not ids:
        logger.warning("precision_at_k: no images; precision is NaN")
        return math.nan
    if min(len(e) for e in ids) < k:
        raise ValueError(f"an explanation has fewer than k = {k} dimensions")
    top = np.array([e[:k] for e in ids], dtype=np.int64)
    if top.min() < 0 or top.max() >= truth.shape[1]:
        raise ValueError(
            f"dimension indices must be in [0, {truth.shape[1]}), got {top.min()}..{top.max()}"
        )
    return float(np.take_along_axis(truth, top, axis=1).mean())


def random_precision_at_k(true_attributes: np.ndarray | pd.DataFrame, k: int) -> float:
    """Expected precision@k of explanations naming k uniformly random distinct dimensions.

    Each of the k draws is true with probability ``(number of true attributes) / A`` for
    its image, so the expectation is the mean share of positives, for every ``k <= A``.
    NaN (with a warning) when there are no images.
    """
    truth = _binary(true_attributes)
    _check_top_k(k, truth.shape[1])
    if truth.shape[0] == 0:
        logger.warning("random_precision_at_k: no images; precision is NaN")
        return math.nan
    return float(truth.mean())


@dataclass
class ExplanationScores:
    """Precision@k of textual explanations, split by whether the prediction was right.

    Attributes:
        k: dimensions per explanation that count.
        precision: over all images.
        precision_correct / precision_incorrect: over correctly / incorrectly classified
            images (NaN where there are none).
        random_precision: the chance level over all images (:func:`random_precision_at_k`).
        n_correct / n_incorrect: image counts.
    """

    k: int
    precision: float
    precision_correct: float
    precision_incorrect: float
    random_precision: float
    n_correct: int
    n_incorrect: int

    def as_dict(self) -> dict[str, float | int]:
        """Scalars, for metric logging."""
        return asdict(self)


def score_explanations(
    explanations: Sequence[Explanation] | Sequence[Sequence[int]],
    true_attributes: np.ndarray | pd.DataFrame,
    predicted: Sequence[object] | np.ndarray,
    labels: Sequence[object] | np.ndarray,
    k: int = 3,
) -> ExplanationScores:
    """Precision@k overall, for correct and for wrong predictions, and the chance level.

    Args:
        explanations: N ranked dimension-index lists (or :class:`Explanation` objects).
        true_attributes: ``(N, A)`` 0/1 true attributes of each image.
        predicted, labels: N predicted and true classes (ids or names; compared with ``==``).
        k: dimensions per explanation that count.
    """
    truth = _binary(true_attributes)
    pred = np.asarray(predicted)
    true = np.asarray(labels)
    if pred.shape != (truth.shape[0],) or true.shape != (truth.shape[0],):
        raise ValueError(
            f"predicted {pred.shape} and labels {true.shape} must both be "
            f"({truth.shape[0]},) for true_attributes {truth.shape}"
        )
    ids = _dimension_ids(explanations)
    if len(ids) != truth.shape[0]:
        raise ValueError(f"{len(ids)} explanations for true_attributes of shape {truth.shape}")
    correct = pred == true

    def subset(mask: np.ndarray) -> float:
        if not mask.any():
            return math.nan
        return precision_at_k([ids[i] for i in np.flatnonzero(mask)], truth[mask], k)

    return ExplanationScores(
        k=int(k),
        precision=precision_at_k(ids, truth, k),
        precision_correct=subset(correct),
        precision_incorrect=subset(~correct),
        random_precision=random_precision_at_k(truth, k),
        n_correct=int(correct.sum()),
        n_incorrect=int((~correct).sum()),
    )


# ---------------------------------------------------------------------------------------
# Visual explanations
# ---------------------------------------------------------------------------------------
def visual_explanations(
    split: SplitModel,
    paths: Sequence[str],
    rows: torch.Tensor | np.ndarray,
    spec: BackboneSpec,
    *,
    alpha: float = 0.5,
) -> list[Image.Image]:
    """Grad-CAM of a row per image file, overlaid on the image as the model saw it.

    Args:
        split: the cut model; its state is left as it was.
        paths: N image files, preprocessed as ``spec`` says (resize, centre crop, normalise).
        rows: ``(N, D)`` a classifier row per image (e.g. its predicted row), or ``(D,)``.
        spec: the backbone's input size and normalisation.
        alpha: the heat map's weight in the blend.

    Returns:
        N RGB images of ``spec.image_size`` px; an empty list (with a warning) for no paths.

    Raises:
        InputError: naming the file when an image is missing or unreadable.
    """
    if len(paths) == 0:
        logger.warning("visual_explanations: no images to explain; returning no overlays")
        return []
    dataset = ImageTableDataset(
        list(paths),
        [0] * len(paths),
        spec.image_size,
        spec.mean,
        spec.std,
        crop_fraction=spec.crop_fraction,
    )
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    cams = gradcam(split, x, torch.as_tensor(rows), upsample_to="input").cpu()
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    seen = ((x * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return [
        overlay(Image.fromarray(img.permute(1, 2, 0).numpy()), cam, alpha)
        for img, cam in zip(seen, cams, strict=True)
    ]
