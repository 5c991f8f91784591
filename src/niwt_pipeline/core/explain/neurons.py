"""Neuron names: each channel of the importance layer named by the domain-knowledge
dimensions that map onto it (Selvaraju et al., ECCV 2018, sec. 3.4).

:func:`neuron_names_from_mapper` reads them off the learned mapper's weight;
:func:`neuron_names_from_covariation`, independently of the mapper, from how each dimension
co-varies with the channel's importance over seen images; :func:`neuron_name_agreement`
compares two namings against the analytic chance level.  Every ranking is by signed score,
highest first; ties keep the lower dimension index first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.explain.common import _check_names, _check_top_k, _matrix, _top_k
from niwt_pipeline.core.mapper import LinearMapper

NAME_COLUMNS = ("neuron", "rank", "dimension", "score")
"""Columns of a neuron-name table: channel index, 1-based rank, dimension name, score."""


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


@dataclass
class NeuronNames:
    """Both namings of every neuron and their agreement.

    Attributes:
        table: ``source`` (``mapper``/``covariation``), then :data:`NAME_COLUMNS`.
        agreement: their top-k agreement and its chance level.
    """

    table: pd.DataFrame
    agreement: NameAgreement


def name_neurons(
    mapper: LinearMapper,
    importance: np.ndarray,
    dk_per_image: np.ndarray,
    dk_names: Sequence[str],
    top_k: int,
    *,
    l2_normalise: bool = True,
) -> NeuronNames:
    """Name every neuron twice, from the mapper's weights and from covariation.

    Args:
        mapper: the fitted mapper (K outputs, A inputs).
        importance: (N, K) per-image importance of the seen training images.
        dk_per_image: (N, A) each image's class-level domain knowledge.
        dk_names: the A dimension names.
        top_k: dimensions per neuron.
        l2_normalise: drop each image's importance scale before correlating.

    Returns:
        :class:`NeuronNames`.

    Raises:
        ValueError: on shapes that do not agree or a bad ``top_k``.
    """
    by_mapper = neuron_names_from_mapper(mapper, dk_names, top_k)
    by_covariation = neuron_names_from_covariation(
        importance, dk_per_image, dk_names, top_k, l2_normalise=l2_normalise
    )
    agreement = neuron_name_agreement(by_mapper, by_covariation, top_k, n_dimensions=len(dk_names))
    table = pd.concat(
        [by_mapper.assign(source="mapper"), by_covariation.assign(source="covariation")],
        ignore_index=True,
    )[["source", *NAME_COLUMNS]]
    table["source"] = table["source"].astype("str")
    return NeuronNames(table, agreement)
