"""Scoring textual explanations against true attributes: precision@k and its chance
level, for correctly and incorrectly classified images and for images that depart from their
class's prototype; how contrastive explanations are (:func:`contrastive_share`) and how
varied (:func:`naming_diversity`), each beside the class prior and random naming."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain.common import _check_top_k, _matrix, _top_k
from niwt_pipeline.core.explain.textual import Explanation

logger = logging.getLogger(__name__)


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

    Returns:
        The precisions (fractions in [0, 1], NaN for an empty subset), chance level and counts.

    Raises:
        ValueError: if ``true_attributes`` is not a finite 2-D 0/1 array, ``predicted`` or
            ``labels`` is not (N,), the number of explanations is not N, ``k`` is not an
            integer in ``[1, A]``, an explanation is shorter than ``k``, or a dimension index
            is outside ``[0, A)``.
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


def truth_for_explanations(
    explained: pd.DataFrame, image_attributes: pd.DataFrame, dk: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """What each explained image truly shows, as 0/1 per dimension.

    Args:
        explained: explained images (``image_id``, ``true_class_id``).
        image_attributes: per-image 0/1 attributes (``image_id`` + one column per
            dimension), possibly empty.
        dk: (C, A) domain knowledge indexed by class id, named columns.

    Returns:
        The explained images that can be scored, their truth (N, A) float64, and where the
        truth comes from: the images' own attributes where they match the dimensions
        (``image_attributes``, e.g. the generated world), else the TRUE class's value above
        the dimension's mean over classes (``class_attributes_thresholded``).
    """
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
    above = present_in_class(dk).to_numpy()
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


def class_prior_ranking(dk: pd.DataFrame, predicted_class_ids: np.ndarray, k: int) -> np.ndarray:
    """The *class prior* explanation: each predicted class's ``k`` largest domain-knowledge
    dimensions, no image involved (ties keep the lower index first).

    Args:
        dk: ``(C, A)`` domain knowledge indexed by class id.
        predicted_class_ids: ``(N,)`` each image's predicted class id.
        k: dimensions per explanation.

    Returns:
        ``(N, k)`` int64 dimension indices, highest value first.

    Raises:
        InputError: when a predicted class has no domain knowledge.
        ValueError: on a bad ``k``.
    """
    k = _check_top_k(k, dk.shape[1])
    values = _rows_of(dk, predicted_class_ids, "predicted")
    return _top_k(values, k) if len(values) else np.zeros((0, k), dtype=np.int64)


def _rows_of(dk: pd.DataFrame, class_ids: np.ndarray, what: str) -> np.ndarray:
    position = {int(c): j for j, c in enumerate(dk.index)}
    wanted = [int(c) for c in np.asarray(class_ids).reshape(-1)]
    missing = sorted({c for c in wanted if c not in position})
    if missing:
        raise InputError(
            f"{what} class id(s) {missing[:10]} have no domain knowledge (its classes: "
            f"{sorted(position)[:10]}{' ...' if len(position) > 10 else ''})"
        )
    return dk.to_numpy(dtype=np.float64)[[position[c] for c in wanted]].reshape(
        len(wanted), dk.shape[1]
    )


def class_prototypes(attributes: np.ndarray | pd.DataFrame, class_ids: np.ndarray) -> pd.DataFrame:
    """Each class's *prototype*: the attributes more than half of its images show.

    On the generated attribute world this is exactly the prototype the generator drew for
    the class (``world.json``, ``prototypes``): every class puts 80-95% of its images on its
    prototype value of each group.

    Args:
        attributes: ``(N, A)`` 0/1 attributes of images (every image with known attributes,
            of every split: the prototype describes the class, not a test set).
        class_ids: ``(N,)`` each image's class id.

    Returns:
        ``(C, A)`` bool, indexed by class id (sorted), columns as ``attributes``'.

    Raises:
        ValueError: on values other than 0/1 or counts that differ.
    """
    truth = _binary(attributes)
    ids = np.asarray(class_ids, dtype=np.int64)
    if ids.shape != (truth.shape[0],):
        raise ValueError(f"class_ids {ids.shape} do not fit attributes {truth.shape}")
    columns = (
        list(attributes.columns) if isinstance(attributes, pd.DataFrame) else range(truth.shape[1])
    )
    classes = np.unique(ids)
    share = np.stack([truth[ids == c].mean(axis=0) for c in classes]) if len(classes) else truth
    return pd.DataFrame(share > 0.5, index=pd.Index(classes, name="class_id"), columns=columns)


def departs_from_prototype(
    truth: np.ndarray, class_ids: np.ndarray, prototypes: pd.DataFrame
) -> np.ndarray:
    """Whether each image *departs* from its class's prototype: it shows an attribute the
    prototype lacks or lacks one the prototype has (:func:`class_prototypes`).

    Args:
        truth: ``(N, A)`` 0/1 attributes of the images.
        class_ids: ``(N,)`` their true class ids.
        prototypes: ``(C, A)`` bool, indexed by class id.

    Returns:
        ``(N,)`` bool.

    Raises:
        InputError: when an image's class has no prototype.
        ValueError: on shapes that do not fit.
    """
    values = _binary(truth)
    if prototypes.shape[1] != values.shape[1]:
        raise ValueError(f"prototypes {prototypes.shape} do not fit truth {values.shape}")
    if np.asarray(class_ids).shape != (values.shape[0],):
        raise ValueError(f"class_ids {np.asarray(class_ids).shape} do not fit truth {values.shape}")
    proto = _rows_of(prototypes.astype(np.float64), class_ids, "true")
    return (values != proto).any(axis=1)


def table_class_prototypes(
    images: pd.DataFrame, image_attributes: pd.DataFrame, dk: pd.DataFrame
) -> pd.DataFrame:
    """:func:`class_prototypes` from the project's tables: every image (any split) of
    ``images`` (``image_id``, ``class_id``) with attributes in ``image_attributes``
    (``image_id`` + one column per dimension of ``dk``).

    Returns:
        ``(C, A)`` bool indexed by class id, columns ``dk``'s.

    Raises:
        KeyError: when ``image_attributes`` lacks a dimension of ``dk``.
    """
    columns = [str(c) for c in dk.columns]
    known = image_attributes.set_index("image_id")[columns]
    table = images[images["image_id"].isin(known.index)]
    return class_prototypes(
        known.loc[table["image_id"].to_numpy()].to_numpy(dtype=np.float64),
        table["class_id"].to_numpy(),
    ).set_axis(columns, axis=1)


def present_in_class(dk: pd.DataFrame) -> pd.DataFrame:
    """Class-level domain knowledge as 0/1: a dimension is *present* in a class when the
    class's value is above that dimension's mean over the classes (the rule that also
    gives the thresholded truth of :func:`truth_for_explanations`).

    Args:
        dk: ``(C, A)`` domain knowledge indexed by class id.

    Returns:
        ``(C, A)`` bool, same index and columns.
    """
    values = dk.to_numpy(dtype=np.float64)
    return pd.DataFrame(
        values > values.mean(axis=0, keepdims=True), index=dk.index, columns=dk.columns
    )


def _named(ids: np.ndarray | Sequence[Sequence[int]], n_dims: int, k: int) -> np.ndarray:
    named = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1) if len(ids) else np.zeros((0, k))
    if named.shape[1] < k:
        raise ValueError(f"an explanation has fewer than k = {k} dimensions")
    named = named[:, :k].astype(np.int64)
    if named.size and (named.min() < 0 or named.max() >= n_dims):
        raise ValueError(
            f"dimension indices must be in [0, {n_dims}), got {named.min()}..{named.max()}"
        )
    return named


def contrastive_share(
    named: np.ndarray | Sequence[Sequence[int]],
    present_predicted: np.ndarray,
    present_runner_up: np.ndarray,
    k: int,
) -> float:
    """How contrastive explanations are: the mean over images of the share of the ``k``
    named dimensions whose class-level presence differs between the predicted class and the
    runner-up class, i.e. the named dimensions that separate "why ``p``" from "why not
    ``r``":

    ``mean_i (1/k) * #{a in named_i[:k] : present[p_i, a] != present[r_i, a]}``

    with ``present`` from :func:`present_in_class` and ``r_i`` the class with the
    second-highest (calibrated) score on image ``i``.  1 means every named dimension tells
    the two classes apart, 0 that none does (the explanation would fit the runner-up just
    as well).  Explanations should be class-discriminative (Hendricks et al., "Generating
    visual explanations", ECCV 2016) and contrastive (Miller, Artificial Intelligence 267,
    2019; counterfactual explanations, Hendricks et al., "Grounding visual explanations",
    ECCV 2018).

    Args:
        named: ``(N, >= k)`` each image's named dimension indices, ranked.
        present_predicted: ``(N, A)`` 0/1 presence in each image's predicted class.
        present_runner_up: ``(N, A)`` 0/1 presence in each image's runner-up class.
        k: named dimensions that count.

    Returns:
        A share in [0, 1]; NaN (with a warning) when there are no images.

    Raises:
        ValueError: on shapes that do not agree, explanations shorter than ``k`` or indices
            outside ``[0, A)``.
    """
    pred = _binary(np.asarray(present_predicted, dtype=np.float64))
    other = _binary(np.asarray(present_runner_up, dtype=np.float64))
    if pred.shape != other.shape:
        raise ValueError(
            f"present_predicted {pred.shape} and present_runner_up {other.shape} must agree"
        )
    k = _check_top_k(k, pred.shape[1])
    ids = _named(named, pred.shape[1], k)
    if ids.shape[0] != pred.shape[0]:
        raise ValueError(f"{ids.shape[0]} explanations for presence of shape {pred.shape}")
    if not len(ids):
        logger.warning("contrastive_share: no images; the share is NaN")
        return math.nan
    differs = pred != other
    return float(np.take_along_axis(differs, ids, axis=1).mean())


def random_contrastive_share(present_predicted: np.ndarray, present_runner_up: np.ndarray) -> float:
    """Expected :func:`contrastive_share` of ``k`` uniformly random distinct dimensions: the
    mean over images of the share of all A dimensions whose presence differs (any ``k``).
    NaN (with a warning) when there are no images."""
    pred = _binary(np.asarray(present_predicted, dtype=np.float64))
    other = _binary(np.asarray(present_runner_up, dtype=np.float64))
    if pred.shape != other.shape:
        raise ValueError(
            f"present_predicted {pred.shape} and present_runner_up {other.shape} must agree"
        )
    if not len(pred):
        logger.warning("random_contrastive_share: no images; the share is NaN")
        return math.nan
    return float((pred != other).mean())


@dataclass
class NamingDiversity:
    """How varied a set of explanations is (the same dimension in every explanation says
    little about any one image).

    Attributes:
        n_explanations: explanations counted.
        n_distinct: distinct dimensions named among their first ``k``.
        top_attribute: the dimension named most often (``None`` for random naming).
        top_attribute_share: share of the explanations that name it, in [0, 1].
    """

    n_explanations: int
    n_distinct: float
    top_attribute: str | None
    top_attribute_share: float

    def as_dict(self) -> dict[str, object]:
        """The fields, for JSON."""
        return asdict(self)


def naming_diversity(
    named: np.ndarray | Sequence[Sequence[int]], dk_names: Sequence[str], k: int
) -> NamingDiversity:
    """Distinct dimensions named by the explanations' first ``k``, and the share of
    explanations naming the most frequent one (ties: the lower index).

    Raises:
        ValueError: on a bad ``k``, explanations shorter than ``k`` or bad indices.
    """
    k = _check_top_k(k, len(dk_names))
    ids = _named(named, len(dk_names), k)
    if not len(ids):
        return NamingDiversity(0, 0, None, math.nan)
    counts = np.zeros(len(dk_names), dtype=np.int64)
    for row in ids:
        counts[np.unique(row)] += 1
    top = int(np.argmax(counts))
    return NamingDiversity(
        n_explanations=len(ids),
        n_distinct=int((counts > 0).sum()),
        top_attribute=str(dk_names[top]),
        top_attribute_share=float(counts[top] / len(ids)),
    )


def random_naming_diversity(
    n_explanations: int, n_dims: int, k: int, *, seed: int = 0, draws: int = 200
) -> NamingDiversity:
    """:func:`naming_diversity` expected of ``n_explanations`` explanations that each name
    ``k`` uniformly random distinct dimensions of ``n_dims``.

    ``n_distinct`` is exact: ``A * (1 - (1 - k/A)^n)``; ``top_attribute_share`` (the share
    naming the most frequent dimension, which exceeds ``k/A`` by chance) is the mean over
    ``draws`` seeded draws.

    Raises:
        ValueError: on a bad ``k`` or a negative count.
    """
    k = _check_top_k(k, n_dims)
    if n_explanations < 0 or draws < 1:
        raise ValueError(f"need n_explanations >= 0 and draws >= 1, got {n_explanations}, {draws}")
    if n_explanations == 0:
        return NamingDiversity(0, 0, None, math.nan)
    distinct = n_dims * (1.0 - (1.0 - k / n_dims) ** n_explanations)
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(draws):
        picks = np.argsort(rng.random((n_explanations, n_dims)), axis=1)[:, :k]
        shares.append(np.bincount(picks.ravel(), minlength=n_dims).max() / n_explanations)
    return NamingDiversity(n_explanations, float(distinct), None, float(np.mean(shares)))


def group_masks(scored: pd.DataFrame, departing: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The image groups explanations are scored on: ``all``, ``seen``, ``unseen`` (by the
    true class) and, given ``departing``, ``seen_departing`` and ``unseen_departing`` (the
    images that depart from their class's prototype, :func:`departs_from_prototype`).

    Raises:
        ValueError: when ``departing`` is not ``(N,)``.
    """
    seen = scored["true_seen"].to_numpy(dtype=bool)
    masks = {"all": np.ones(len(scored), dtype=bool), "seen": seen, "unseen": ~seen}
    if departing is not None:
        departing = np.asarray(departing, dtype=bool)
        if departing.shape != (len(scored),):
            raise ValueError(f"departing {departing.shape} does not fit {len(scored)} images")
        masks["seen_departing"] = seen & departing
        masks["unseen_departing"] = ~seen & departing
    return masks


def precision_by_group(
    scored: pd.DataFrame,
    truth: np.ndarray,
    dk: pd.DataFrame,
    k: int,
    *,
    rankings: Mapping[str, np.ndarray] | None = None,
    departing: np.ndarray | None = None,
) -> dict[str, dict[str, float | int]]:
    """Precision@k of the explanations over the images of each group (:func:`group_masks`),
    each split by correct and incorrect predictions, beside two baselines: ``random`` (k
    random dimensions, :func:`random_precision_at_k`) and ``class_prior`` (the predicted
    class's k largest domain-knowledge dimensions, no image involved,
    :func:`class_prior_ranking`), and any other ``rankings`` (e.g. ``inverse_map``, the
    paper's explanation).

    Args:
        scored: explained images (``dimension_id_<r>``, ``predicted_class_id``,
            ``true_class_id``, ``true_seen``, ``correct``).
        truth: (N, A) 0/1 truth of those images.
        dk: (C, A) domain knowledge indexed by class id.
        k: dimensions per explanation that count.
        rankings: name -> ``(N, >= k)`` other explanations of the same images to score
            side by side.
        departing: ``(N,)`` bool, the images departing from their class's prototype
            (adds the ``seen_departing`` and ``unseen_departing`` groups).

    Returns:
        group -> ``n_images``, ``n_correct``, ``n_incorrect``, ``all``, ``correct``,
        ``incorrect``, ``random``, ``class_prior``, then ``<name>``, ``<name>_correct``,
        ``<name>_incorrect`` for ``random``, ``class_prior`` and each ranking (NaN where a
        subset is empty); a group without images holds only ``n_images = 0``.

    Raises:
        ValueError: on shapes that do not agree.
    """
    ids = scored[[f"dimension_id_{r + 1}" for r in range(k)]].to_numpy(dtype=np.int64)
    prior = class_prior_ranking(dk, scored["predicted_class_id"].to_numpy(), k)
    others = {
        "class_prior": prior,
        **{n: _named(v, truth.shape[1], k) for n, v in (rankings or {}).items()},
    }
    correct = scored["correct"].to_numpy(dtype=bool)
    groups: dict[str, dict[str, float | int]] = {}
    for group, mask in group_masks(scored, departing).items():
        if not mask.any():
            groups[group] = {"n_images": 0}
            continue
        result = score_explanations(
            ids[mask].tolist(),
            truth[mask],
            scored["predicted_class_id"].to_numpy()[mask],
            scored["true_class_id"].to_numpy()[mask],
            k,
        )
        values: dict[str, float | int] = {
            "n_images": int(mask.sum()),
            "n_correct": result.n_correct,
            "n_incorrect": result.n_incorrect,
            "all": result.precision,
            "correct": result.precision_correct,
            "incorrect": result.precision_incorrect,
            "random": result.random_precision,
        }
        for name, ranking in others.items():
            values[name] = precision_at_k(ranking[mask].tolist(), truth[mask], k)
        for label, subset in (("correct", mask & correct), ("incorrect", mask & ~correct)):
            values[f"random_{label}"] = (
                random_precision_at_k(truth[subset], k) if subset.any() else math.nan
            )
            for name, ranking in others.items():
                values[f"{name}_{label}"] = (
                    precision_at_k(ranking[subset].tolist(), truth[subset], k)
                    if subset.any()
                    else math.nan
                )
        groups[group] = values
    return groups


def contrast_and_diversity_by_group(
    scored: pd.DataFrame,
    rankings: Mapping[str, np.ndarray],
    dk: pd.DataFrame,
    dk_names: Sequence[str],
    k: int,
    *,
    departing: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, object]]]]:
    """:func:`contrastive_share` and :func:`naming_diversity` of several explanations of
    the same images, per group (:func:`group_masks`), beside random naming.

    Args:
        scored: explained images (``predicted_class_id``, ``runner_up_class_id``,
            ``true_seen``).
        rankings: name -> ``(N, >= k)`` ranked dimension indices (e.g. ``explanation``,
            ``class_prior``, ``inverse_map``).
        dk: (C, A) domain knowledge indexed by class id, covering every predicted and
            runner-up class; presence is :func:`present_in_class` of it.
        dk_names: the A dimension names.
        k: named dimensions that count.
        departing: as in :func:`group_masks`.
        seed: seeds the random naming's draws.

    Returns:
        ``contrastive``: group -> name (and ``random``) -> share (NaN for an empty group);
        ``diversity``: group -> name (and ``random``) -> :meth:`NamingDiversity.as_dict`.

    Raises:
        ValueError: when ``scored`` lacks ``runner_up_class_id`` or shapes do not agree.
        InputError: when a class has no domain knowledge.
    """
    if "runner_up_class_id" not in scored.columns:
        raise ValueError("scored: missing column 'runner_up_class_id' (the runner-up class)")
    present = present_in_class(dk).astype(np.float64)
    pred = _rows_of(present, scored["predicted_class_id"].to_numpy(), "predicted")
    other = _rows_of(present, scored["runner_up_class_id"].to_numpy(), "runner-up")
    named = {name: _named(ids, dk.shape[1], k) for name, ids in rankings.items()}
    contrast: dict[str, dict[str, float]] = {}
    diversity: dict[str, dict[str, dict[str, object]]] = {}
    for group, mask in group_masks(scored, departing).items():
        if not mask.any():
            contrast[group], diversity[group] = {}, {}
            continue
        contrast[group] = {
            **{
                n: contrastive_share(ids[mask], pred[mask], other[mask], k)
                for n, ids in named.items()
            },
            "random": random_contrastive_share(pred[mask], other[mask]),
        }
        diversity[group] = {
            **{n: naming_diversity(ids[mask], dk_names, k).as_dict() for n, ids in named.items()},
            "random": random_naming_diversity(
                int(mask.sum()), len(dk_names), k, seed=seed
            ).as_dict(),
        }
    return contrast, diversity


def json_ready(value: object) -> object:
    """NaN -> None (valid JSON), recursively through dicts; numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    return value
