"""The methods of the GZSL table and their scores over all classes.

* ``niwt``: the seen rows plus NIWT's rows with the configured settings (``transfer.niwt``);
* ``niwt_tuned``: the seen rows plus the rows of the NIWT variant the validation chose
  (NIWT's rows alone, no other method's scores);
* ``ensemble_niwt_tuned_eszsl``: an ensemble, not NIWT alone: ``niwt_tuned``'s scores with
  ESZSL's fused in at the weight the validation chose (per-image standardised scores; a
  weight of 0 is ``niwt_tuned`` itself);
* ``weight_regression``: the seen rows plus ridge-regressed rows;
* ``eszsl``: ESZSL's bilinear scores (Romera-Paredes & Torr, ICML 2015);
* ``sae``: the semantic autoencoder's scores, cosine similarity with each class's decoded
  prototype (Kodirov, Xiang & Gong, CVPR 2017).

All share the same trained backbone, so they score the same penultimate features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from niwt_pipeline.core.baselines import BaselineConfig, ESZSLModel, SAEModel
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.selection import fuse_scores

#: The fusion of the validated NIWT rows' scores with ESZSL's: named for what it fuses.
ENSEMBLE = "ensemble_niwt_tuned_eszsl"
#: The methods, in the order of the GZSL table.
METHODS = ("niwt", "niwt_tuned", ENSEMBLE, "weight_regression", "eszsl", "sae")


def method_scores(
    features: np.ndarray,
    class_ids: np.ndarray,
    seen: ClassRows,
    niwt_rows: RowSet,
    baseline_rows: RowSet,
    eszsl: ESZSLModel,
    sae: SAEModel,
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
        sae: the fitted SAE.
        signatures: (C, A) domain knowledge of ``class_ids``, in column order.
        fusion: the weight of ESZSL's scores fused into ``niwt_tuned``'s for the ensemble.

    Returns:
        method -> scores.

    Raises:
        InputError: when a class has no row in a method's rows.
    """
    eszsl_scores = eszsl.scores(features, signatures)
    tuned = (seen + niwt_rows["niwt_tuned"]).scores(features, class_ids)
    return {
        "niwt": (seen + niwt_rows["niwt"]).scores(features, class_ids),
        "niwt_tuned": tuned,
        ENSEMBLE: fuse_scores(tuned, eszsl_scores, fusion),
        "weight_regression": (seen + baseline_rows["weight_regression"]).scores(
            features, class_ids
        ),
        "eszsl": eszsl_scores,
        "sae": sae.scores(features, signatures),
    }


def ensemble_weight(validation_choice: dict[str, Any]) -> float:
    """The ESZSL weight of the ensemble the validation chose.

    Raises:
        InputError: a ``validation_choice.json`` written before the ensemble had its own
            name (its ``niwt_tuned`` held the fusion); run the validation pipeline again.
    """
    if ENSEMBLE not in validation_choice or ENSEMBLE not in validation_choice["methods"]:
        raise InputError(
            f"validation_choice.json has no {ENSEMBLE!r} (it was written by an earlier version, "
            "when niwt_tuned held the ESZSL fusion); run the validation pipeline again: "
            "kedro run --pipelines=validation,transfer"
        )
    return float(validation_choice[ENSEMBLE]["fusion"])


def validated_baselines(validation_choice: dict[str, Any]) -> BaselineConfig:
    """The baselines' settings the validation chose (``validation_choice["baselines"]``).

    Raises:
        InputError: a ``validation_choice.json`` written before the baselines were tuned on
            the validation problem; run the validation pipeline again.
    """
    chosen = validation_choice.get("baselines")
    config = BaselineConfig(**chosen) if isinstance(chosen, dict) else None
    if config is None or config.missing():
        raise InputError(
            "validation_choice.json has no baseline settings (it was written by an earlier "
            "version, before the baselines were tuned on the validation problem); run the "
            "validation pipeline again: kedro run --pipelines=validation,transfer"
        )
    return config
