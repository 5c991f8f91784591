"""The scores of every GZSL method, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from niwt_pipeline.core.baselines import BaselineConfig, ESZSLModel, SAEModel
from niwt_pipeline.core.compatibility import CompatibilityModel
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.methods import (
    ENSEMBLE,
    METHODS,
    ensemble_weight,
    method_scores,
    validated_baselines,
)
from niwt_pipeline.core.rows import ClassRows, RowSet

# Two images in R^2; classes 0, 1 seen, 2, 3 new.
FEATURES = np.array([[1.0, 2.0], [0.0, -1.0]])
CLASS_IDS = np.array([0, 1, 2, 3])
# seen rows (class 1 first): class 1 -> z . (1, 0); class 0 -> z . (0, 1) + 1
#   image 0: class 0 = 3, class 1 = 1;  image 1: class 0 = 0, class 1 = 0
SEEN = ClassRows("seen", [1, 0], np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.0, 1.0]))
# niwt: class 3 -> z . (1, 1); class 2 -> z . (2, 0) - 1
#   image 0: class 2 = 1, class 3 = 3;  image 1: class 2 = -1, class 3 = -1
NIWT = ClassRows("niwt", [3, 2], np.array([[1.0, 1.0], [2.0, 0.0]]), np.array([0.0, -1.0]))
# niwt_tuned: class 3 -> z . (1, 0) + 2; class 2 -> z . (-1, 0) + 2
#   image 0: class 2 = 1, class 3 = 3;  image 1: class 2 = 2, class 3 = 2
#   with the seen scores: [3, 1, 1, 3] (mean 2, std 1) and [0, 0, 2, 2] (mean 1, std 1),
#   standardised: [1, -1, -1, 1] and [-1, -1, 1, 1]
TUNED = ClassRows("niwt_tuned", [3, 2], np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([2.0, 2.0]))
# weight_regression: class 2 -> z . (0, 2) + 1; class 3 -> z . (1, -1)
#   image 0: class 2 = 5, class 3 = -1;  image 1: class 2 = -1, class 3 = 1
RIDGE = ClassRows("weight_regression", [2, 3], np.array([[0.0, 2.0], [1.0, -1.0]]), [1.0, 0.0])
# ESZSL: x^T V s_c with V = (1, 1)^T and one-dimensional signatures s = (1, -1, 1, -1):
#   image 0: x^T V = 3 -> [3, -3, 3, -3], standardised [1, -1, 1, -1]
#   image 1: x^T V = -1 -> [-1, 1, -1, 1], standardised [-1, 1, -1, 1]
ESZSL = ESZSLModel(np.array([[1.0], [1.0]]), gamma=0.5, lam=2.0)
SIGNATURES = np.array([[1.0], [-1.0], [1.0], [-1.0]])
# SAE: prototypes s_c W with W = (1, 0): (1, 0), (-1, 0), (1, 0), (-1, 0); cosine with
#   image 0, (1, 2) / sqrt(5): +-1/sqrt(5); image 1, (0, -1): 0 for every class
SAE = SAEModel(np.array([[1.0, 0.0]]), lam=3.0)
# ALE, SJE, DeViSE: x^T W s_c (DeViSE's model with unit-norm features):
#   ALE, W = (1, 0)^T: image 0: 1 -> [1, -1, 1, -1]; image 1: 0 -> [0, 0, 0, 0]
#   SJE, W = (0, 1)^T: image 0: 2 -> [2, -2, 2, -2]; image 1: -1 -> [-1, 1, -1, 1]
#   DeViSE, W = (1, 1)^T on x / |x|: image 0: 3 / sqrt(5); image 1: -1
COMPATIBILITY = {
    "ale": CompatibilityModel(np.array([[1.0], [0.0]]), "ale", {}, normalise_features=False),
    "sje": CompatibilityModel(np.array([[0.0], [1.0]]), "sje", {}, normalise_features=False),
    "devise": CompatibilityModel(np.array([[1.0], [1.0]]), "devise", {}, normalise_features=True),
}
# f-CLSWGAN: rows over every class: (1, 0), (0, 1), (1, 1), (0, 0) + 1
#   image 0: [1, 2, 3, 1]; image 1: [0, -1, -1, 1]
GENERATED = ClassRows(
    "fclswgan",
    [0, 1, 2, 3],
    np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]),
    [0, 0, 0, 1.0],
)


def _scores(fusion: float, class_ids=CLASS_IDS, signatures=SIGNATURES, baseline=RIDGE):
    return method_scores(
        FEATURES,
        class_ids,
        SEEN,
        RowSet({"niwt_paper": NIWT, "niwt_tuned": TUNED}),
        RowSet({"weight_regression": baseline, "fclswgan": GENERATED}),
        {"eszsl": ESZSL, **COMPATIBILITY, "sae": SAE},
        signatures,
        fusion,
    )


def test_every_method_by_hand_without_fusion():
    scores = _scores(0.0)
    assert list(scores) == list(METHODS)
    assert list(METHODS) == [
        "niwt_paper",
        "niwt_tuned",
        "ensemble_niwt_tuned_eszsl",
        "weight_regression",
        "eszsl",
        "ale",
        "sje",
        "devise",
        "sae",
        "fclswgan",
    ]
    np.testing.assert_array_equal(scores["niwt_paper"], [[3, 1, 1, 3], [0, 0, -1, -1]])
    np.testing.assert_array_equal(scores["niwt_tuned"], [[3, 1, 1, 3], [0, 0, 2, 2]])  # raw
    np.testing.assert_array_equal(scores[ENSEMBLE], scores["niwt_tuned"])  # weight 0: itself
    np.testing.assert_array_equal(scores["weight_regression"], [[3, 1, 5, -1], [0, 0, -1, 1]])
    np.testing.assert_array_equal(scores["eszsl"], [[3, -3, 3, -3], [-1, 1, -1, 1]])
    a = 1 / np.sqrt(5)
    np.testing.assert_allclose(scores["sae"], [[a, -a, a, -a], [0, 0, 0, 0]], atol=1e-15)
    np.testing.assert_array_equal(scores["ale"], [[1, -1, 1, -1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(scores["sje"], [[2, -2, 2, -2], [-1, 1, -1, 1]])
    b = 3 / np.sqrt(5)
    np.testing.assert_allclose(scores["devise"], [[b, -b, b, -b], [-1, 1, -1, 1]], atol=1e-15)
    np.testing.assert_array_equal(scores["fclswgan"], [[1, 2, 3, 1], [0, -1, -1, 1]])
    assert all(s.dtype == np.float64 and s.shape == (2, 4) for s in scores.values())


def test_fusion_makes_the_named_ensemble_and_leaves_niwt_tuned_alone():
    scores = _scores(0.5)
    # [1, -1, -1, 1] + 0.5 [1, -1, 1, -1] and [-1, -1, 1, 1] + 0.5 [-1, 1, -1, 1]
    np.testing.assert_allclose(
        scores[ENSEMBLE], [[1.5, -1.5, -0.5, 0.5], [-1.5, -0.5, 0.5, 1.5]], atol=1e-15
    )
    unfused = _scores(0.0)
    for method in (m for m in METHODS if m != ENSEMBLE):
        np.testing.assert_array_equal(scores[method], unfused[method])


def test_the_ensemble_weight_comes_from_the_validation_choice():
    choice = {ENSEMBLE: {"fusion": 0.25}, "methods": {m: {"gamma": 0.1} for m in METHODS}}
    assert ensemble_weight(choice) == 0.25
    earlier = {"niwt_tuned": {"fusion": 0.5}, "methods": {"niwt_tuned": {"gamma": 0.1}}}
    with pytest.raises(InputError, match="run the validation pipeline again"):
        ensemble_weight(earlier)
    # written before the faithful row had its name (its configured row was "niwt")
    renamed = {**choice, "methods": {("niwt" if m == "niwt_paper" else m): {} for m in METHODS}}
    with pytest.raises(InputError, match=r"no \['niwt_paper'\].*validation pipeline again"):
        ensemble_weight(renamed)


def test_the_baselines_settings_come_from_the_validation_choice():
    settings = {
        "ridge_alpha": 1.0,
        "eszsl_gamma": 0.1,
        "eszsl_lambda": 10.0,
        "sae_lambda": 2.0,
        **{f"{loss}_lr": 0.1 for loss in ("ale", "sje", "devise")},
        **{f"{loss}_epochs": 5 for loss in ("ale", "sje", "devise")},
        "fclswgan_n_synthetic": 50,
    }
    assert validated_baselines({"baselines": settings}) == BaselineConfig(**settings)
    for earlier in ({}, {"baselines": {**settings, "sae_lambda": None}}):
        with pytest.raises(InputError, match="run the validation pipeline again"):
            validated_baselines(earlier)
    # the settings that are missing are named
    short = {k: v for k, v in settings.items() if k not in ("ale_lr", "fclswgan_n_synthetic")}
    with pytest.raises(InputError, match=r"for \['ale_lr', 'fclswgan_n_synthetic'\]"):
        validated_baselines({"baselines": short})


def test_columns_follow_class_ids():
    order = np.array([2, 0, 3, 1])
    scores = _scores(0.0, class_ids=order, signatures=SIGNATURES[order])
    np.testing.assert_array_equal(scores["niwt_paper"], [[1, 3, 3, 1], [-1, 0, -1, 0]])
    np.testing.assert_array_equal(scores["eszsl"], [[3, 3, -3, -3], [-1, -1, 1, 1]])
    np.testing.assert_array_equal(scores["fclswgan"], [[3, 1, 1, 2], [-1, 0, 1, -1]])


def test_a_class_without_a_row_raises():
    partial = ClassRows("weight_regression", [2], np.array([[0.0, 2.0]]), np.array([1.0]))
    with pytest.raises(InputError, match=r"weight_regression: no classifier row.*\[3\]"):
        _scores(0.0, baseline=partial)
