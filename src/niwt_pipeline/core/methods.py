"""The methods of the GZSL table and their scores over all classes.

* ``niwt``: the seen rows plus NIWT's rows with the configured settings (``transfer.niwt``);
* ``niwt_tuned``: the seen rows plus the rows of the NIWT variant the validation chose,
  with ESZSL's scores fused in at the chosen weight (per-image standardised scores; a
  weight of 0 is the rows alone);
* ``weight_regression``: the seen rows plus ridge-regressed rows;
* ``eszsl``: ESZSL's bilinear scores (Romera-Paredes & Torr, ICML 2015).

All share the same trained backbone, so they score the same penultimate features.
"""

from __future__ import annotations

import numpy as np

from niwt_pipeline.core.baselines import ESZSLModel
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.selection import fuse_scores

#: The methods, in the order of the GZSL table.
METHODS = ("niwt", "niwt_tuned", "weight_regression", "eszsl")


def method_scores(
    features: np.ndarray,
    class_ids: np.ndarray,
    seen: ClassRows,
    niwt_rows: RowSet,
    baseline_rows: RowSet,
    eszsl: ESZSLModel,
    signatures: np.ndarray,
    fusion: float,
) -> dict[str, np.ndarray]:
    """The (N, C) float64 scores of every method of :data:`METHODS`.

    Args:
        features: (N, D) penultimate features of the images to score.
        class_ids: (C,) every class, in column order.
        seen: the backbone's seen rows.
        niwt_rows: ``niwt`` and ``niwt_tuned`` rows of the other classes.
        baseline_rows: ``weight_regression`` rows of the other classes.
        eszsl: the fitted ESZSL.
        signatures: (C, A) domain knowledge of ``class_ids``, in column order.
        fusion: the weight of ESZSL's scores fused into ``niwt_tuned``'s.

    Returns:
        method -> scores.

    Raises:
        InputError: when a class has no row in a method's rows.
    """
    eszsl_scores = eszsl.scores(features, signatures)
    return {
        "niwt": (seen + niwt_rows["niwt"]).scores(features, class_ids),
        "niwt_tuned": fuse_scores(
            (seen + niwt_rows["niwt_tuned"]).scores(features, class_ids), eszsl_scores, fusion
        ),
        "weight_regression": (seen + baseline_rows["weight_regression"]).scores(
            features, class_ids
        ),
        "eszsl": eszsl_scores,
    }
