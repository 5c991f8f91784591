"""The methods of the GZSL table and their scores over all classes.

* ``niwt_paper``: the seen rows plus NIWT's rows with the paper's transfer settings for the
  dataset (``transfer.paper``; :func:`~niwt_pipeline.core.transfer.config.paper_config`),
  the faithful variant;
* ``niwt_tuned``: the seen rows plus the rows of the NIWT variant the validation chose
  (NIWT's rows alone, no other method's scores);
* ``ensemble_niwt_tuned_eszsl``: an ensemble, not NIWT alone: ``niwt_tuned``'s scores with
  ESZSL's fused in at the weight the validation chose (per-image standardised scores; a
  weight of 0 is ``niwt_tuned`` itself);
* ``weight_regression``: the seen rows plus ridge-regressed rows;
* ``eszsl``: ESZSL's bilinear scores (Romera-Paredes & Torr, ICML 2015);
* ``ale``, ``sje``, ``devise``: bilinear compatibility ``x^T W s_c`` trained with the
  ranking loss of ALE (Akata et al., CVPR 2013), SJE (Akata et al., CVPR 2015) and DeViSE
  (Frome et al., NeurIPS 2013);
* ``sae``: the semantic autoencoder's scores, cosine similarity with each class's decoded
  prototype (Kodirov, Xiang & Gong, CVPR 2017);
* ``fclswgan``: the logits of a softmax classifier over every class trained on real seen
  features and features of the other classes generated from their domain knowledge
  (f-CLSWGAN, Xian et al., CVPR 2018).

All share the same trained backbone, so they score the same penultimate features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from niwt_pipeline.core.baseline_models import SignatureScorer
from niwt_pipeline.core.baselines import BaselineConfig
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.selection import fuse_scores

#: The fusion of the validated NIWT rows' scores with ESZSL's: named for what it fuses.
ENSEMBLE = "ensemble_niwt_tuned_eszsl"
#: The methods, in the order of the GZSL table.
METHODS = (
    "niwt_paper",
    "niwt_tuned",
    ENSEMBLE,
    "weight_regression",
    "eszsl",
    "ale",
    "sje",
    "devise",
    "sae",
    "fclswgan",
)
#: The methods scored from class signatures by a model (``models`` of :func:`method_scores`).
SIGNATURE_METHODS = ("eszsl", "ale", "sje", "devise", "sae")


def method_scores(
    features: np.ndarray,
    class_ids: np.ndarray,
    seen: ClassRows,
    niwt_rows: RowSet,
    baseline_rows: RowSet,
    models: Mapping[str, SignatureScorer],
    signatures: np.ndarray,
    fusion: float,
) -> dict[str, np.ndarray]:
    """The (N, C) float64 scores of every method of :data:`METHODS`.

    Args:
        features: (N, D) penultimate features of the images to score.
        class_ids: (C,) every class, in column order.
        seen: the backbone's seen rows.
        niwt_rows: ``niwt_paper`` and ``niwt_tuned`` rows of the other classes.
        baseline_rows: ``weight_regression`` rows of the other classes and ``fclswgan``
            rows of every class.
        models: the fitted models of :data:`SIGNATURE_METHODS`.
        signatures: (C, A) domain knowledge of ``class_ids``, in column order.
        fusion: the weight of ESZSL's scores fused into ``niwt_tuned``'s for the ensemble.

    Returns:
        method -> scores.

    Raises:
        InputError: when a class has no row in a method's rows.
        KeyError: when a model of :data:`SIGNATURE_METHODS` is missing.
    """
    scored = {m: models[m].scores(features, signatures) for m in SIGNATURE_METHODS}
    tuned = (seen + niwt_rows["niwt_tuned"]).scores(features, class_ids)
    scores = {
        "niwt_paper": (seen + niwt_rows["niwt_paper"]).scores(features, class_ids),
        "niwt_tuned": tuned,
        ENSEMBLE: fuse_scores(tuned, scored["eszsl"], fusion),
        "weight_regression": (seen + baseline_rows["weight_regression"]).scores(
            features, class_ids
        ),
        "fclswgan": baseline_rows["fclswgan"].scores(features, class_ids),
        **scored,
    }
    return {m: scores[m] for m in METHODS}


def ensemble_weight(validation_choice: dict[str, Any]) -> float:
    """The ESZSL weight of the ensemble the validation chose.

    Raises:
        InputError: a ``validation_choice.json`` written by an earlier version, without a
            method of :data:`METHODS`; run the validation pipeline again.
    """
    missing = {m for m in METHODS if m not in validation_choice.get("methods", {})}
    if ENSEMBLE not in validation_choice:
        missing.add(ENSEMBLE)
    if missing:
        raise InputError(
            f"validation_choice.json has no {sorted(missing)} (it was written by an "
            "earlier version, with other methods); run the validation pipeline again: "
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
    known = set(BaselineConfig.__dataclass_fields__)
    settings = {k: v for k, v in chosen.items() if k in known} if isinstance(chosen, dict) else {}
    missing = BaselineConfig(**settings).missing()
    if missing:
        raise InputError(
            f"validation_choice.json has no baseline settings for {missing} (it was written "
            "by an earlier version, with other baselines); run the validation pipeline "
            "again: kedro run --pipelines=validation,transfer"
        )
    return BaselineConfig(**settings)
