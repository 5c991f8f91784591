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


def _transfer(chain, params, cache=None, choice=None, predicted=None):
    return transfer_niwt_rows(
        chain.reference_cache if cache is None else cache,
        chain.predicted_importance if predicted is None else predicted,
        chain.backbone_weights,
        chain.backbone_spec,
        chain.baseline_models,
        chain.validation_choice if choice is None else choice,
        params,
    )


def test_niwt_rows_cover_the_unseen_classes_for_both_variants(chain):
    rows = chain.niwt_rows
    n_unseen = len(chain.unseen_ids)

    assert set(rows) == {
        "unseen_class_id",
        *(f"{v}_{k}" for v in ("unseen", "tuned") for k in ("weight", "bias")),
    }
    assert rows["unseen_class_id"].tolist() == chain.unseen_ids
    for variant in ("unseen", "tuned"):
        assert rows[f"{variant}_weight"].shape == (n_unseen, D)
        assert rows[f"{variant}_bias"].shape == (n_unseen,)
    assert all(torch.isfinite(v).all() for v in rows.values())


def test_transfer_report_describes_both_variants(chain):
    report = chain.transfer_report

    assert {"config", "tuned_variant", "reference", "unseen", "tuned"} <= set(report)
    assert report["tuned_variant"] == chain.validation_choice["niwt_tuned"]
    assert report["config"]["max_steps"] == 20
    assert 1 <= report["unseen"]["steps"] <= 20
    for part in ("unseen", "tuned"):
        assert report[part]["method"] == "gram"
        assert math.isfinite(report[part]["best_loss"])
        assert report[part]["row_norm_ratio"] > 0


def test_tuned_rows_follow_the_validated_variant(chain, params_for):
    ls = {"niwt_tuned": {"solver": "least_squares", "ls_alpha": 0.01, "fusion": 0.0}}
    ridge = {"niwt_tuned": {"init": "ridge", "max_steps": 1, "fusion": 0.0}}
    params = params_for("transfer")

    ls_rows, ls_report = _transfer(chain, params, choice=ls)
    ridge_rows, _ = _transfer(chain, params, choice=ridge)

    assert ls_report["tuned"]["stopped_reason"] == "closed_form"
    assert torch.equal(ls_rows["unseen_weight"], chain.niwt_rows["unseen_weight"])
    # one step from the ridge rows, then rescaled to the seen rows' mean norm
    start = chain.baseline_models["ridge_weight"].float()
    seen_norm = chain.backbone_weights["fc.weight"].norm(dim=1).mean()
    torch.testing.assert_close(
        ridge_rows["tuned_weight"], start * seen_norm / start.norm(dim=1, keepdim=True)
    )


def test_transfer_is_deterministic(chain, params_for):
    rows, _ = _transfer(chain, params_for("transfer"))

    assert rows.keys() == chain.niwt_rows.keys()
    for name, value in chain.niwt_rows.items():
        assert torch.equal(rows[name], value), name


def test_transfer_from_activations_matches_transfer_from_the_gram_tensor(chain, params_for):
    params = params_for(
        "transfer", {"reference": {"gram_memory_budget_mb": 0}, "niwt": {"method": "head"}}
    )
    cache = cache_reference(chain.backbone_weights, chain.backbone_spec, chain.images, params)

    rows, report = _transfer(chain, params, cache=cache)

    assert report["unseen"]["method"] == report["tuned"]["method"] == "head"
    for name, value in chain.niwt_rows.items():
        torch.testing.assert_close(rows[name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_predicted_importance_of_another_width_is_refused(chain, params_for):
    narrow = chain.predicted_importance.drop(columns=["k_0125", "k_0126", "k_0127"])

    with pytest.raises(ValueError, match=r"125"):
        _transfer(chain, params_for("transfer"), predicted=narrow)


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
        transfer_niwt_rows(None, None, None, None, None, None, params_for("transfer", bad))


# ------------------------------------------------------------------ fit_baselines


def test_baselines_have_ridge_rows_and_eszsl(chain):
    models, report = chain.baseline_models, chain.baseline_report
    n_attr = chain.domain_knowledge.shape[1] - 2

    assert set(models) == {"ridge_class_id", "ridge_weight", "ridge_bias", "eszsl_V"}
    assert models["ridge_class_id"].tolist() == chain.unseen_ids
    assert models["ridge_weight"].shape == (len(chain.unseen_ids), D)
    assert models["eszsl_V"].shape == (D, n_attr)
    assert set(report) == {"eszsl", "ridge_alpha"}
    assert set(report["eszsl"]) == {"gamma", "lambda"}
    assert report["eszsl"]["gamma"] > 0 and report["eszsl"]["lambda"] > 0


def test_fixed_eszsl_hyperparameters_are_used_as_given(chain, params_for):
    params = params_for("transfer", {"baselines": {"eszsl_gamma": 0.5, "eszsl_lambda": 2.0}})

    _, report = fit_baselines(
        chain.image_outputs,
        chain.images,
        chain.backbone_split,
        chain.domain_knowledge,
        chain.backbone_weights,
        chain.backbone_spec,
        params,
    )

    assert report["eszsl"] == {"gamma": 0.5, "lambda": 2.0}


def test_baselines_do_not_depend_on_the_order_of_the_classifier_rows(chain, params_for):
    weights, spec = _permuted(chain, [3, 0, 5, 1, 4, 2])

    models, _ = fit_baselines(
        chain.image_outputs,
        chain.images,
        chain.backbone_split,
        chain.domain_knowledge,
        weights,
        spec,
        params_for("transfer"),
    )

    for name, value in chain.baseline_models.items():
        torch.testing.assert_close(models[name], value, rtol=1e-6, atol=1e-8, msg=name)


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


def test_tuned_scores_fuse_the_tuned_rows_with_eszsl(chain):
    from niwt_pipeline.core.selection import fuse_scores

    scores, out, rows = chain.test_scores, chain.image_outputs, chain.niwt_rows
    position = {int(i): r for r, i in enumerate(out["image_id"].tolist())}
    test = [position[int(i)] for i in scores["image_id"]]
    linear = scores["niwt"].double().clone()
    unseen = rows["unseen_class_id"].tolist()
    linear[:, unseen] = (
        out["features"][test].double() @ rows["tuned_weight"].double().T
        + rows["tuned_bias"].double()
    )
    fusion = chain.validation_choice["niwt_tuned"]["fusion"]
    expected = fuse_scores(linear.numpy(), scores["eszsl"].double().numpy(), fusion)

    torch.testing.assert_close(
        scores["niwt_tuned"].double(), torch.as_tensor(expected), rtol=1e-5, atol=1e-4
    )


def test_calibration_gammas_are_the_validated_ones(chain):
    calibration, choice = chain.calibration, chain.validation_choice

    assert calibration["pseudo_unseen_class_ids"] == choice["pseudo_unseen_class_ids"]
    assert calibration["niwt_tuned"] == choice["niwt_tuned"]
    assert set(calibration["methods"]) == set(METHODS)
    for method, values in calibration["methods"].items():
        assert values["gamma"] == choice["methods"][method]["gamma"], method
        assert math.isfinite(values["gamma"]), method


def test_scoring_without_niwt_rows_for_an_unseen_class_is_refused(chain):
    rows = dict(chain.niwt_rows)
    for key in ("unseen_class_id", "unseen_weight", "unseen_bias"):
        rows[key] = rows[key][:-1]

    with pytest.raises(KeyError):
        score_methods(
            chain.image_outputs,
            chain.images,
            chain.classes,
            chain.domain_knowledge,
            chain.backbone_weights,
            chain.backbone_spec,
            rows,
            chain.baseline_models,
            chain.validation_choice,
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
