"""Every baseline of the GZSL table fitted on one trained network with its settings.

* ``weight_regression`` rows and ESZSL and SAE in closed form
  (:mod:`~niwt_pipeline.core.baselines`);
* ALE, SJE and DeViSE: one bilinear compatibility ``x^T W s_c`` per ranking loss, trained by
  SGD (:mod:`~niwt_pipeline.core.compatibility`);
* f-CLSWGAN: a conditional WGAN that generates features of the new classes from their
  domain knowledge, then a softmax classifier over every class
  (:mod:`~niwt_pipeline.core.generative`).

The settings left open by the configuration are chosen by the validation
(:func:`~niwt_pipeline.core.validation.tune_baselines`); this module only fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from niwt_pipeline.core.baselines import (
    BaselineConfig,
    ESZSLModel,
    SAEModel,
    fit_baselines,
    seen_positions,
)
from niwt_pipeline.core.compatibility import (
    LOSSES,
    CompatibilityConfig,
    CompatibilityModel,
    fit_compatibility,
)
from niwt_pipeline.core.generative import (
    FeatureGenerator,
    GeneratorConfig,
    fclswgan_rows,
    fit_generator,
)
from niwt_pipeline.core.rows import ClassRows, RowSet


class SignatureScorer(Protocol):
    """A model scoring images against class signatures (ESZSL, SAE, ALE, SJE, DeViSE)."""

    def scores(self, features: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """(N, D) features and (C, A) class signatures -> (N, C) float64 scores."""
        ...


@dataclass
class FittedBaselines:
    """The baselines fitted on one network.

    Attributes:
        rows: ``weight_regression`` rows of the new classes and ``fclswgan`` rows of every
            class (seen and new: f-CLSWGAN retrains the seen rows too).
        eszsl, sae: the closed-form signature models.
        compatibility: ``ale``, ``sje`` and ``devise`` models.
        generator: f-CLSWGAN's trained feature generator.
    """

    rows: RowSet
    eszsl: ESZSLModel
    sae: SAEModel
    compatibility: dict[str, CompatibilityModel]
    generator: FeatureGenerator

    def signature_models(self) -> dict[str, SignatureScorer]:
        """``eszsl``, ``ale``, ``sje``, ``devise``, ``sae`` -> model."""
        return {"eszsl": self.eszsl, **self.compatibility, "sae": self.sae}


def compatibility_config(
    base: CompatibilityConfig, loss: str, lr: float, epochs: int
) -> CompatibilityConfig:
    """``base`` for one loss at one learning rate and epoch budget.

    Raises:
        ValueError: on a bad loss, rate or epoch count.
    """
    return replace(base, loss=loss, lr=float(lr), epochs=int(epochs))


def fit_every_baseline(
    features: np.ndarray,
    labels: np.ndarray,
    seen: ClassRows,
    dk: np.ndarray,
    new_ids: np.ndarray,
    config: BaselineConfig,
    compatibility: CompatibilityConfig,
    generator: GeneratorConfig,
) -> FittedBaselines:
    """Fit every baseline for the classes ``new_ids`` on one trained network.

    Args:
        features: (N, D) penultimate features of the network's training images.
        labels: (N,) their class ids (each among ``seen.class_ids``).
        seen: the network's seen rows (S, D) and biases.
        dk: (C, A) domain knowledge of every class, row = class id.
        new_ids: (U,) the classes the network was not trained on.
        config: the baselines' chosen settings, every one set.
        compatibility: the fixed settings of ALE, SJE and DeViSE (its ``loss``, ``lr`` and
            ``epochs`` are replaced by each loss and its chosen values).
        generator: f-CLSWGAN's fixed settings (``n_synthetic`` replaced by the chosen one).

    Returns:
        The fitted baselines.

    Raises:
        ValueError: on shapes that do not agree, a bad setting, or a setting left ``None``
            (choose it with the validation first).
        KeyError: when a label is not a seen class.
    """
    ridge, eszsl, sae = fit_baselines(features, labels, seen, dk, new_ids, config)
    seen_ids = seen.class_ids
    positions = seen_positions(seen_ids, labels)
    models = {}
    for loss in LOSSES:
        chosen = compatibility_config(
            compatibility,
            loss,
            getattr(config, f"{loss}_lr"),
            getattr(config, f"{loss}_epochs"),
        )
        (models[loss],) = fit_compatibility(features, positions, dk[seen_ids], chosen)
    settings = replace(generator, n_synthetic=int(config.fclswgan_n_synthetic))
    fitted = fit_generator(features, positions, dk[seen_ids], settings)
    all_ids = np.concatenate([seen_ids, np.asarray(new_ids, dtype=np.int64)])
    fclswgan = fclswgan_rows(fitted, features, labels, all_ids, dk, new_ids, settings)
    return FittedBaselines(
        rows=RowSet({"weight_regression": ridge, "fclswgan": fclswgan}),
        eszsl=eszsl,
        sae=sae,
        compatibility=models,
        generator=fitted,
    )
