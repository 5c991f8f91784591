"""Transfer nodes: reference cache, NIWT rows, baselines, GZSL scoring and the report."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from pydantic import ValidationError

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.pipelines.transfer.nodes import (
    METHODS,
    cache_reference,
    fit_baselines,
    report_gzsl,
    score_methods,
    transfer_niwt_rows,
)

K, D = 128, 128  # small_cnn: block3 channels, penultimate width
N_REFERENCE = 32  # reference.max_images of the tiny parameters (48 seen trainval images)
METHOD_KEYS = {"S", "U", "H", "zsl_top1", "ausuc", "H_calibrated", "gamma"}


def _permuted(chain, order):
    """The same network with its classifier rows (and seen_class_ids) in another order."""
    weights = dict(chain.backbone_weights)
    weights["fc.weight"] = weights["fc.weight"][order]
    weights["fc.bias"] = weights["fc.bias"][order]
    spec = dict(chain.backbone_spec)
    spec["seen_class_ids"] = [spec["seen_class_ids"][i] for i in order]
    return weights, spec


# ------------------------------------------------------------------ cache_reference


def test_reference_cache_is_the_gram_tensor_within_the_budget(chain):
    cache = chain.reference_cache

    assert set(cache) == {"gram"}
    assert cache["gram"].shape == (N_REFERENCE, K, D)
    assert torch.isfinite(cache["gram"]).all()


def test_reference_cache_falls_back_to_activations_over_the_budget(chain, params_for):
    params = params_for("transfer", {"reference": {"gram_memory_budget_mb": 0}})

    cache = cache_reference(chain.backbone_weights, chain.backbone_spec, chain.images, params)

    assert set(cache) == {"activations"}
    assert cache["activations"].shape == (N_REFERENCE, K, 4, 4)  # 32 px after three 2x2 pools


def test_reference_folder_that_does_not_exist_is_named(chain, params_for, tmp_path):
    missing = tmp_path / "no_such_folder"
    params = params_for("transfer", {"reference": {"images": str(missing)}})

    with pytest.raises(InputError, match=r"no_such_folder: reference image folder not found"):
        cache_reference(chain.backbone_weights, chain.backbone_spec, chain.images, params)


# ------------------------------------------------------------------ transfer_niwt_rows


def test_niwt_rows_cover_the_unseen_and_the_calibration_classes(chain):
    rows = chain.niwt_rows
    n_unseen, n_calibration = (
        len(chain.unseen_ids),
        len(chain.mapper_report["calibration_class_ids"]),
    )

    assert rows["unseen_class_id"].tolist() == chain.unseen_ids
    assert rows["calibration_class_id"].tolist() == chain.mapper_report["calibration_class_ids"]
    assert rows["unseen_weight"].shape == (n_unseen, D)
    assert rows["unseen_bias"].shape == (n_unseen,)
    assert rows["calibration_weight"].shape == (n_calibration, D)
    assert rows["calibration_bias"].shape == (n_calibration,)
    assert all(torch.isfinite(v).all() for v in rows.values())


def test_transfer_report_describes_both_optimisations(chain):
    report = chain.transfer_report

    assert {"config", "reference", "unseen", "calibration"} <= set(report)
    assert report["config"]["max_steps"] == 20
    for part in ("unseen", "calibration"):
        assert 1 <= report[part]["steps"] <= 20
        assert report[part]["method"] == "gram"
        assert math.isfinite(report[part]["best_loss"])
        assert report[part]["row_norm_ratio"] > 0


def test_transfer_is_deterministic(chain, params_for):
    rows, _ = transfer_niwt_rows(
        chain.reference_cache,
        chain.predicted_importance,
        chain.backbone_weights,
        chain.backbone_spec,
        params_for("transfer"),
    )

    assert rows.keys() == chain.niwt_rows.keys()
    for name, value in chain.niwt_rows.items():
        assert torch.equal(rows[name], value), name


def test_transfer_from_activations_matches_transfer_from_the_gram_tensor(chain, params_for):
    params = params_for(
        "transfer", {"reference": {"gram_memory_budget_mb": 0}, "niwt": {"method": "head"}}
    )
    cache = cache_reference(chain.backbone_weights, chain.backbone_spec, chain.images, params)

    rows, report = transfer_niwt_rows(
        cache, chain.predicted_importance, chain.backbone_weights, chain.backbone_spec, params
    )

    assert report["unseen"]["method"] == "head"
    for name, value in chain.niwt_rows.items():
        torch.testing.assert_close(rows[name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_predicted_importance_of_another_width_is_refused(chain, params_for):
    narrow = chain.predicted_importance.drop(columns=["k_0125", "k_0126", "k_0127"])

    with pytest.raises(ValueError, match=r"125"):
        transfer_niwt_rows(
            chain.reference_cache,
            narrow,
            chain.backbone_weights,
            chain.backbone_spec,
            params_for("transfer"),
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"niwt": {"max_steps": 0}}, r"max_steps"),
        ({"niwt": {"learning_rate": 0.1}}, r"learning_rate"),
        ({"refrence": {}}, r"refrence"),
        ({"baselines": {"ridge_alpha": "big"}}, r"ridge_alpha"),
        pytest.param(
            {"reference": {"batch_size": 0}},
            r"batch_size",
        ),
        pytest.param(
            {"reference": {"max_images": 0}},
            r"max_images",
        ),
        pytest.param(
            {"baselines": {"ridge_alpha": -1.0}},
            r"ridge_alpha",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        transfer_niwt_rows(None, None, None, None, params_for("transfer", bad))


# ------------------------------------------------------------------ fit_baselines


def test_baselines_have_ridge_rows_and_eszsl_for_both_problems(chain):
    models, report = chain.baseline_models, chain.baseline_report
    n_attr = chain.domain_knowledge.shape[1] - 2
    calibration_ids = chain.mapper_report["calibration_class_ids"]

    assert set(models) == {
        f"{prefix}{key}"
        for prefix in ("", "calibration_")
        for key in ("ridge_class_id", "ridge_weight", "ridge_bias", "eszsl_V")
    }
    assert models["ridge_class_id"].tolist() == chain.unseen_ids
    assert models["ridge_weight"].shape == (len(chain.unseen_ids), D)
    assert models["calibration_ridge_class_id"].tolist() == calibration_ids
    assert models["calibration_ridge_weight"].shape == (len(calibration_ids), D)
    assert models["eszsl_V"].shape == models["calibration_eszsl_V"].shape == (D, n_attr)
    assert set(report) == {"eszsl", "calibration_eszsl"}
    for part in report.values():
        assert set(part) == {"gamma", "lambda"}
        assert part["gamma"] > 0 and part["lambda"] > 0


def test_fixed_eszsl_hyperparameters_are_used_as_given(chain, params_for):
    params = params_for("transfer", {"baselines": {"eszsl_gamma": 0.5, "eszsl_lambda": 2.0}})

    _, report = fit_baselines(
        chain.image_outputs,
        chain.images,
        chain.backbone_split,
        chain.domain_knowledge,
        chain.backbone_weights,
        chain.backbone_spec,
        chain.mapper_report,
        params,
    )

    assert report == {
        "eszsl": {"gamma": 0.5, "lambda": 2.0},
        "calibration_eszsl": {"gamma": 0.5, "lambda": 2.0},
    }


def test_baselines_do_not_depend_on_the_order_of_the_classifier_rows(chain, params_for):
    weights, spec = _permuted(chain, [3, 0, 5, 1, 4, 2])

    models, _ = fit_baselines(
        chain.image_outputs,
        chain.images,
        chain.backbone_split,
        chain.domain_knowledge,
        weights,
        spec,
        chain.mapper_report,
        params_for("transfer"),
    )

    for name, value in chain.baseline_models.items():
        torch.testing.assert_close(models[name], value, rtol=1e-6, atol=1e-8, msg=name)


def test_baselines_without_pseudo_unseen_classes_in_the_report_are_refused(chain, params_for):
    with pytest.raises(KeyError, match=r"calibration_class_ids"):
        fit_baselines(
            chain.image_outputs,
            chain.images,
            chain.backbone_split,
            chain.domain_knowledge,
            chain.backbone_weights,
            chain.backbone_spec,
            {"final": {}},
            params_for("transfer"),
        )


# ------------------------------------------------------------------ score_methods


def test_test_scores_cover_every_class_for_every_test_image(chain):
    scores, images = chain.test_scores, chain.images
    test = images[images["split"].isin(["test_seen", "test_unseen"])]

    assert set(scores) == {*METHODS, "image_id"}
    assert scores["image_id"].tolist() == test["image_id"].tolist()
    for method in METHODS:
        assert scores[method].shape == (len(test), len(chain.classes)), method
        assert torch.isfinite(scores[method]).all(), method


def test_niwt_scores_are_the_classifier_logits_plus_the_new_rows(chain):
    scores, out, rows = chain.test_scores, chain.image_outputs, chain.niwt_rows
    position = {int(i): r for r, i in enumerate(out["image_id"].tolist())}
    test = [position[int(i)] for i in scores["image_id"]]
    niwt = scores["niwt"].double()

    seen_columns = chain.backbone_spec["seen_class_ids"]
    torch.testing.assert_close(
        niwt[:, seen_columns], out["logits"][test].double(), rtol=1e-4, atol=1e-4
    )
    expected_unseen = (
        out["features"][test].double() @ rows["unseen_weight"].double().T
        + rows["unseen_bias"].double()
    )
    torch.testing.assert_close(niwt[:, rows["unseen_class_id"].tolist()], expected_unseen)


def test_calibration_has_a_finite_gamma_per_method(chain):
    calibration = chain.calibration

    assert calibration["calibration_class_ids"] == chain.mapper_report["calibration_class_ids"]
    assert set(calibration["methods"]) == set(METHODS)
    for method, values in calibration["methods"].items():
        assert math.isfinite(values["gamma"]), method
        assert {"S", "U", "H", "H_calibrated"} <= set(values)
        assert 0.0 <= values["H_calibrated"] <= 1.0
        assert values["H_calibrated"] >= values["H"] - 1e-12  # gamma maximises H on validation


def test_scoring_without_niwt_rows_for_an_unseen_class_is_refused(chain):
    rows = dict(chain.niwt_rows)
    for key in ("unseen_class_id", "unseen_weight", "unseen_bias"):
        rows[key] = rows[key][:-1]

    with pytest.raises(KeyError):
        score_methods(
            chain.image_outputs,
            chain.images,
            chain.classes,
            chain.backbone_split,
            chain.domain_knowledge,
            chain.backbone_weights,
            chain.backbone_spec,
            rows,
            chain.baseline_models,
        )


# ------------------------------------------------------------------ report_gzsl


def test_metrics_contract(chain):
    metrics = chain.gzsl_metrics

    assert metrics["dataset"] == "attribute_world"
    assert metrics["domain_knowledge"] == chain.ingestion_summary["domain_knowledge"]
    assert metrics["backbone"] == {"arch": "small_cnn", "layer": "block3"}
    assert metrics["n_test_images"] == len(chain.test_scores["image_id"])
    assert set(metrics["methods"]) == set(METHODS)
    for method, values in metrics["methods"].items():
        assert METHOD_KEYS <= set(values), method
        for key in METHOD_KEYS - {"gamma"}:
            assert 0.0 <= values[key] <= 100.0, f"{method}.{key} is not in percent"
        assert values["gamma"] == chain.calibration["methods"][method]["gamma"]


def test_h_is_the_harmonic_mean_of_s_and_u(chain):
    """H is the harmonic mean of S and U, all in percent."""
    for method, values in chain.gzsl_metrics["methods"].items():
        s, u = values["S"], values["U"]
        expected = 0.0 if s + u == 0 else 2 * s * u / (s + u)
        assert values["H"] == pytest.approx(expected), method


def test_mlflow_metrics_mirror_the_metrics(chain):
    mlflow_metrics, methods = chain.gzsl_mlflow_metrics, chain.gzsl_metrics["methods"]

    assert set(mlflow_metrics) == {f"{m}.{k}" for m, values in methods.items() for k in values}
    for name, entry in mlflow_metrics.items():
        method, key = name.split(".", 1)
        assert entry == {"value": float(methods[method][key]), "step": 0}


def test_figures_are_matplotlib_figures(chain, params_for):
    metrics, _, curve, confusion = report_gzsl(
        chain.test_scores,
        chain.calibration,
        chain.images,
        chain.classes,
        chain.ingestion_summary,
        chain.backbone_spec,
    )
    try:
        assert metrics == chain.gzsl_metrics
        assert isinstance(curve, Figure)
        assert isinstance(confusion, Figure)
        assert curve is not confusion
    finally:
        plt.close(curve)
        plt.close(confusion)


def test_report_without_a_method_is_refused(chain):
    scores = {k: v for k, v in chain.test_scores.items() if k != "eszsl"}

    with pytest.raises(KeyError, match=r"eszsl"):
        report_gzsl(
            scores,
            chain.calibration,
            chain.images,
            chain.classes,
            chain.ingestion_summary,
            chain.backbone_spec,
        )
