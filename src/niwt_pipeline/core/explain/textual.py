"""Textual explanations: the domain knowledge the importance of a prediction maps back to
(Selvaraju et al., ECCV 2018, sec. 3.4).

The importance of the predicted class's row on an image, ``alpha = G(x) w_pred``
(:func:`row_importance_on_images`, which works for new unseen rows too), goes through the
inverse map (importance -> domain knowledge, :func:`~niwt_pipeline.core.mapper.
fit_inverse_map`); its top dimensions become ``"predicted <class> because: <dim>, ..."``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from niwt_pipeline.core.backbones.cut import CutModel
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain.common import _check_names, _check_top_k, _matrix, _top_k
from niwt_pipeline.core.gradcam import row_gradients
from niwt_pipeline.core.mapper import InverseMap
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.training import resolve_device
from niwt_pipeline.core.trunk import TrunkActivations

logger = logging.getLogger(__name__)


def row_importance_on_images(
    cut: CutModel, x: torch.Tensor, rows: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """NIWT importance of arbitrary classifier rows on images: ``alpha_i = G(x_i) rows_i``.

    The gradient of ``z_i . rows_i`` w.r.t. the activations, summed over positions (the
    definition of :mod:`niwt_pipeline.core.importance`; for a seen row it equals that
    class's importance), by one ``autograd.grad`` per batch
    (:func:`niwt_pipeline.core.gradcam.row_gradients`).  Works for new unseen rows.

    Args:
        cut: the cut model; its state is left as it was.
        x: ``(B, 3, H, W)`` images.
        rows: ``(B, D)`` one row per image (e.g. each image's predicted row), or ``(D,)``.

    Returns:
        ``(B, K)`` detached importances on the model's device.
    """
    _, grad = row_gradients(cut, x, rows)
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


def ranked_explanations(
    scores: np.ndarray,
    dk_names: Sequence[str],
    class_names_pred: Sequence[str],
    top_k: int = 3,
) -> list[Explanation]:
    """Explanations naming each image's ``top_k`` highest-scoring dimensions.

    Args:
        scores: ``(N, A)`` a score per image and dimension (e.g. the inverse map's, or
            :func:`~niwt_pipeline.core.explain.grounded.blend_scores`).
        dk_names: the A dimension names.
        class_names_pred: the N predicted class names.
        top_k: dimensions per explanation (ties keep the lower index first).

    Returns:
        N :class:`Explanation` objects in input order
        (``scores`` holds each named dimension's score).

    Raises:
        ValueError: on counts that do not match or a bad ``top_k``.
    """
    values = _matrix(scores, "scores")
    names = _check_names(dk_names, values.shape[1], f"scores {values.shape}")
    top_k = _check_top_k(top_k, values.shape[1])
    if len(class_names_pred) != values.shape[0]:
        raise ValueError(
            f"class_names_pred has {len(class_names_pred)} names for scores {values.shape}"
        )
    top = _top_k(values, top_k)
    out = []
    for i, (ids, cls) in enumerate(zip(top, class_names_pred, strict=True)):
        dims = [names[a] for a in ids]
        out.append(
            Explanation(
                image=i,
                predicted_class=str(cls),
                dimensions=dims,
                dimension_ids=[int(a) for a in ids],
                scores=[float(values[i, a]) for a in ids],
                text=f"predicted {cls} because: {', '.join(dims)}",
            )
        )
    return out


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
    return ranked_explanations(inverse_map.predict(imp).numpy(), names, class_names_pred, top_k)


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

    Raises:
        ValueError: if ``images`` lacks the ``class_id`` or ``split`` column.
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


def require_image_files(paths: Sequence[str]) -> None:
    """Fail naming the first missing file (an images table that outlived its files).

    Raises:
        InputError: naming the first missing file and how many more are missing.
    """
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{missing[0]}: image file not found{more}; the images table points at files that "
            "no longer exist (moved dataset?): re-run `kedro run --pipelines=ingestion` and the "
            "pipelines after it"
        )


def predicted_row_importance(
    backbone: TrainedBackbone,
    rows: ClassRows,
    table: pd.DataFrame,
    *,
    batch_size: int,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
) -> torch.Tensor:
    """The importance of each image's predicted row: (N, K) float32, streamed in batches.

    Args:
        backbone: the trained backbone.
        rows: rows covering every predicted class (e.g. seen rows + NIWT's new rows).
        table: image rows (``path``, ``predicted_class_id``).
        batch_size: images per batch.
        device: where to run the network.
        trunk: stored activations of the backbone's frozen trunk (read instead of running
            the stem when they cover the images).

    Raises:
        InputError: when a predicted class has no row, an image cannot be read, or there
            are no images.
    """
    device = resolve_device(device)
    backbone.on(device)
    weight, _ = rows.rows_for(table["predicted_class_id"].to_numpy())
    weight = torch.as_tensor(weight, dtype=torch.float32)
    model, loader = backbone.inputs(
        table, trunk, batch_size=batch_size, labels=np.zeros(len(table), dtype=np.int64)
    )
    importance: torch.Tensor | None = None
    for x, _, index in loader:
        batch = row_importance_on_images(model, x, weight[index]).float().cpu()
        if importance is None:
            importance = torch.zeros((len(table), batch.shape[1]))
        importance[index] = batch
    if importance is None:
        raise InputError("predicted_row_importance: no images")
    return importance


def explain_predictions(
    backbone: TrainedBackbone,
    rows: ClassRows,
    inverse: InverseMap,
    table: pd.DataFrame,
    dk_names: Sequence[str],
    class_names: Mapping[int, str],
    class_seen: Mapping[int, bool],
    *,
    top_k: int,
    batch_size: int,
    device: str | torch.device = "auto",
    trunk: TrunkActivations | None = None,
) -> pd.DataFrame:
    """Explain each image's prediction in domain-knowledge words.

    Args:
        backbone: the trained backbone.
        rows: rows covering every predicted class (seen rows + the new rows explained).
        inverse: importance -> domain knowledge.
        table: image rows: ``image_id``, ``path``, ``split``, ``class_id`` (true class),
            ``predicted_class_id``.
        dk_names: the A dimension names.
        class_names, class_seen: class id -> name, and whether it is a seen class.
        top_k: dimensions per explanation.
        batch_size: images per batch.
        device: where to run the network.
        trunk: stored activations of the backbone's frozen trunk, or ``None``.

    Returns:
        One row per image: ``image_id``, ``path``, ``split``, ``true_class_id``,
        ``true_class``, ``true_seen``, ``predicted_class_id``, ``predicted_class``,
        ``predicted_seen``, ``correct``, then ``dimension_<r>``, ``dimension_id_<r>``,
        ``score_<r>`` for ranks ``r = 1..top_k``, and ``text``.

    Raises:
        InputError: a missing image file, or a predicted class without a row.
        ValueError: a bad ``top_k`` or names that do not fit the inverse map.
    """
    require_image_files(table["path"].tolist())
    if len(table):
        importance = predicted_row_importance(
            backbone, rows, table, batch_size=batch_size, device=device, trunk=trunk
        )
    else:
        importance = torch.zeros((0, inverse.weight.shape[0]))
    predicted_ids = table["predicted_class_id"].to_numpy(dtype=np.int64)
    explained = textual_explanations(
        importance, inverse, dk_names, [class_names[int(c)] for c in predicted_ids], top_k
    )
    return explanations_table(table, explained, class_names, class_seen, top_k)


def explanations_table(
    table: pd.DataFrame,
    explained: Sequence[Explanation],
    class_names: Mapping[int, str],
    class_seen: Mapping[int, bool],
    top_k: int,
) -> pd.DataFrame:
    """One row per explained image (the layout :func:`explain_predictions` returns).

    Args:
        table: image rows: ``image_id``, ``path``, ``split``, ``class_id`` (true class),
            ``predicted_class_id``.
        explained: their explanations, in the same order.
        class_names, class_seen: class id -> name, and whether it is a seen class.
        top_k: dimensions per explanation.

    Returns:
        ``image_id``, ``path``, ``split``, ``true_class_id``, ``true_class``, ``true_seen``,
        ``predicted_class_id``, ``predicted_class``, ``predicted_seen``, ``correct``, then
        ``dimension_<r>``, ``dimension_id_<r>``, ``score_<r>`` for ``r = 1..top_k``, and
        ``text``.
    """
    predicted_ids = table["predicted_class_id"].to_numpy(dtype=np.int64)
    true_ids = table["class_id"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame(
        {
            "image_id": table["image_id"].to_numpy(dtype=np.int64),
            "path": table["path"].astype("str").to_numpy(),
            "split": table["split"].astype("str").to_numpy(),
            "true_class_id": true_ids,
            "true_class": [class_names[int(c)] for c in true_ids],
            "true_seen": [class_seen[int(c)] for c in true_ids],
            "predicted_class_id": predicted_ids,
            "predicted_class": [class_names[int(c)] for c in predicted_ids],
            "predicted_seen": [class_seen[int(c)] for c in predicted_ids],
        }
    )
    frame["correct"] = frame["true_class_id"] == frame["predicted_class_id"]
    for r in range(top_k):
        frame[f"dimension_{r + 1}"] = pd.array([e.dimensions[r] for e in explained], dtype="str")
        frame[f"dimension_id_{r + 1}"] = np.array(
            [e.dimension_ids[r] for e in explained], dtype=np.int64
        )
        frame[f"score_{r + 1}"] = np.array([e.scores[r] for e in explained], dtype=np.float64)
    frame["text"] = pd.array([e.text for e in explained], dtype="str")
    for column in ("true_class", "predicted_class"):
        frame[column] = frame[column].astype("str")
    return frame
