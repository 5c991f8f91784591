"""Transfer nodes: reference cache, NIWT rows, baselines, the GZSL evaluation and the report."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pydantic import ValidationError
from tests.helpers import METRIC_KEYS

from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.baselines import ridge_rows
from niwt_pipeline.core.data.tables import domain_knowledge_by_class
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.gzsl import GZSLEvaluation
from niwt_pipeline.core.methods import METHODS
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.core.selection import fuse_scores
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.transfer import ReferenceCache, seen_negative_logits
from niwt_pipeline.pipelines.transfer.nodes import (
    cache_reference,
    evaluate_gzsl,
    fit_baseline_models,
    report_gzsl,
    transfer_niwt_rows,
)

K, D = 128, 128  # small_cnn: block3 channels, penultimate width
N_REFERENCE = 32  # reference.max_images of the tiny parameters (48 seen trainval images)
METHOD_KEYS = set(METRIC_KEYS)


def _permuted(chain, order) -> TrainedBackbone:
    """The same network with its classifier rows (and seen_class_ids) in another order."""
    state = dict(chain.backbone.state)
    state["fc.weight"] = state["fc.weight"][order]
    state["fc.bias"] = state["fc.bias"][order]
    spec = chain.backbone.spec.to_dict()
    spec["seen_class_ids"] = [spec["seen_class_ids"][i] for i in order]
    return TrainedBackbone(BackboneSpec.from_dict(spec), state)


def _test_positions(chain) -> list[int]:
    """Rows of ``image_outputs`` of the evaluated test images, in the evaluation's order."""
    position = {int(i): r for r, i in enumerate(chain.image_outputs["image_id"].tolist())}
    return [position[int(i)] for i in chain.gzsl_evaluation.image_ids]


# ------------------------------------------------------------------ cache_reference


def test_reference_cache_is_the_gram_tensor_within_the_budget(chain):
    cache = chain.reference_cache

    assert isinstance(cache, ReferenceCache) and cache.activations is None
    assert cache.gram.shape == (N_REFERENCE, K, D)
    assert torch.isfinite(cache.gram).all()


def test_reference_cache_falls_back_to_activations_over_the_budget(chain, params_for):
    params = params_for("transfer", {"reference": {"gram_memory_budget_mb": 0}})

    cache = cache_reference(chain.backbone, chain.images, params)

    assert cache.gram is None
    assert cache.activations.shape == (N_REFERENCE, K, 4, 4)  # 32 px after three 2x2 pools


def test_reference_folder_that_does_not_exist_is_named(chain, params_for, tmp_path):
    missing = tmp_path / "no_such_folder"
    params = params_for("transfer", {"reference": {"images": str(missing)}})

    with pytest.raises(InputError, match=r"no_such_folder: reference image folder not found"):
        cache_reference(chain.backbone, chain.images, params)


# ------------------------------------------------------------------ transfer_niwt_rows


def _transfer(chain, params, cache=None, choice=None, predicted=None):
    return transfer_niwt_rows(
        chain.reference_cache if cache is None else cache,
        chain.predicted_importance if predicted is None else predicted,
        chain.mapper_weights,
        chain.classes,
        chain.domain_knowledge,
        chain.backbone,
        chain.baseline_rows,
        chain.validation_choice if choice is None else choice,
        chain.image_outputs,
        chain.images,
        chain.backbone_roles,
        params,
    )


def test_niwt_rows_cover_the_unseen_classes_for_both_variants(chain):
    rows = chain.niwt_rows
    n_unseen = len(chain.unseen_ids)

    assert isinstance(rows, RowSet) and list(rows) == ["niwt_paper", "niwt_tuned"]
    for method, value in rows.items():
        assert value.method == method
        assert value.class_ids.tolist() == chain.unseen_ids
        assert value.weight.shape == (n_unseen, D) and value.weight.dtype == np.float32
        assert value.bias.shape == (n_unseen,)
        assert np.isfinite(value.weight).all() and np.isfinite(value.bias).all()


def test_transfer_report_describes_both_variants(chain):
    report = chain.transfer_report

    assert {"config", "niwt_tuned_variant", "reference_images", "niwt_paper", "niwt_tuned"} <= set(
        report
    )
    assert report["niwt_tuned_variant"] == chain.validation_choice["niwt_tuned"]
    assert report["config"]["max_steps"] == 20
    # the paper's settings whatever transfer.niwt says: AWA2's by default
    paper = report["niwt_paper_config"]
    assert (paper["lr"], paper["lam"], paper["batch_size"]) == (1e-3, 1e-3, 32)
    assert report["niwt_paper"]["stopped_reason"] in ("plateau", "max_steps")
    assert 1 <= report["niwt_paper"]["steps"] <= 2000
    for method in ("niwt_paper", "niwt_tuned"):
        assert report[method]["method"] == "gram"
        assert math.isfinite(report[method]["best_loss"])
        assert report[method]["row_norm_ratio"] > 0


def test_tuned_rows_follow_the_validated_variant(chain, params_for):
    ls = {"niwt_tuned": {"solver": "least_squares", "ls_alpha": 0.01, "fusion": 0.0}}
    ridge = {"niwt_tuned": {"init": "ridge", "max_steps": 1, "fusion": 0.0}}
    params = params_for("transfer")

    ls_rows, ls_report = _transfer(chain, params, choice=ls)
    ridge_rows, _ = _transfer(chain, params, choice=ridge)

    assert ls_report["niwt_tuned"]["stopped_reason"] == "closed_form"
    assert np.array_equal(ls_rows["niwt_paper"].weight, chain.niwt_rows["niwt_paper"].weight)
    # one step from the ridge rows, then rescaled to the seen rows' mean norm
    start = torch.as_tensor(chain.baseline_rows["weight_regression"].weight).float()
    seen_norm = chain.backbone.state["fc.weight"].norm(dim=1).mean()
    torch.testing.assert_close(
        torch.as_tensor(ridge_rows["niwt_tuned"].weight),
        start * seen_norm / start.norm(dim=1, keepdim=True),
    )


def test_tuned_rows_with_logit_matching_are_matched_on_the_training_images(chain, params_for):
    ls = {"solver": "least_squares", "ls_alpha": 0.01, "fusion": 0.0}
    params = params_for("transfer")
    plain, _ = _transfer(chain, params, choice={"niwt_tuned": ls})
    matched, _ = _transfer(
        chain, params, choice={"niwt_tuned": {**ls, "logit_matching": "seen_negatives"}}
    )

    seen = chain.backbone.seen_rows()
    train = set(chain.backbone_roles.loc[chain.backbone_roles["role"] == "train", "image_id"])
    ids = chain.image_outputs["image_id"].numpy()
    labels = chain.images.set_index("image_id").loc[ids, "class_id"].to_numpy()
    keep = np.isin(ids, list(train)) & np.isin(labels, seen.class_ids)
    features = chain.image_outputs["features"].numpy()[keep].astype(np.float64)
    mean, std = seen_negative_logits(seen, features, labels[keep])
    logits = features @ matched["niwt_tuned"].weight.astype(np.float64).T
    logits += matched["niwt_tuned"].bias
    np.testing.assert_allclose(logits.mean(0), mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.std(0), std, rtol=1e-4)

    # the same directions as the unmatched rows; the paper's rows are never matched
    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    np.testing.assert_allclose(
        unit(matched["niwt_tuned"].weight), unit(plain["niwt_tuned"].weight), atol=1e-5
    )
    assert np.array_equal(matched["niwt_paper"].weight, plain["niwt_paper"].weight)


def test_transfer_is_deterministic(chain, params_for):
    rows, _ = _transfer(chain, params_for("transfer"))

    assert list(rows) == list(chain.niwt_rows)
    for method, value in chain.niwt_rows.items():
        assert np.array_equal(rows[method].weight, value.weight), method
        assert np.array_equal(rows[method].bias, value.bias), method


def test_transfer_from_activations_matches_transfer_from_the_gram_tensor(chain, params_for):
    params = params_for(
        "transfer", {"reference": {"gram_memory_budget_mb": 0}, "niwt": {"method": "head"}}
    )
    cache = cache_reference(chain.backbone, chain.images, params)

    rows, report = _transfer(chain, params, cache=cache)

    assert report["niwt_paper"]["method"] == report["niwt_tuned"]["method"] == "head"
    for method, value in chain.niwt_rows.items():
        np.testing.assert_allclose(rows[method].weight, value.weight, rtol=1e-3, atol=1e-4)


def test_predicted_importance_of_another_width_is_refused(chain, params_for):
    narrow = chain.predicted_importance.drop(columns=["k_0125", "k_0126", "k_0127"])

    with pytest.raises(ValueError, match=r"125"):
        _transfer(chain, params_for("transfer"), predicted=narrow)


def test_rows_need_a_ridge_row_for_every_new_class(chain, params_for):
    ridge = chain.baseline_rows["weight_regression"]
    short = RowSet(
        {
            "weight_regression": ClassRows(
                "weight_regression", ridge.class_ids[:-1], ridge.weight[:-1], ridge.bias[:-1]
            )
        }
    )
    choice = {"niwt_tuned": {"init": "ridge", "max_steps": 1, "fusion": 0.0}}

    with pytest.raises(
        InputError, match=rf"no classifier row for class id\(s\) \[{ridge.class_ids[-1]}\]"
    ):
        transfer_niwt_rows(
            chain.reference_cache,
            chain.predicted_importance,
            chain.mapper_weights,
            chain.classes,
            chain.domain_knowledge,
            chain.backbone,
            short,
            choice,
            chain.image_outputs,
            chain.images,
            chain.backbone_roles,
            params_for("transfer"),
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"niwt": {"max_steps": 0}}, r"max_steps"),
        ({"niwt": {"learning_rate": 0.1}}, r"learning_rate"),
        ({"refrence": {}}, r"refrence"),
        ({"baselines": {"ridge_alpha": "big"}}, r"ridge_alpha"),
        ({"reference": {"batch_size": 0}}, r"batch_size"),
        ({"reference": {"max_images": 0}}, r"max_images"),
        ({"reference": {"gram_memory_budget_mb": -1}}, r"gram_memory_budget_mb"),
        ({"baselines": {"ridge_alpha": -1.0}}, r"ridge_alpha"),
        ({"baselines": {"eszsl_gamma": 0.0}}, r"eszsl_gamma"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises(ValidationError, match=key):
        params_for("transfer", bad)


# ------------------------------------------------------------------ fit_baseline_models


def test_baselines_have_every_model_with_the_validated_settings(chain):
    rows, eszsl, report = chain.baseline_rows, chain.eszsl_model, chain.baseline_report
    sae = chain.sae_model
    n_attr = chain.domain_knowledge.shape[1] - 2
    chosen = chain.validation_choice["baselines"]

    assert list(rows) == ["weight_regression", "fclswgan"]
    ridge = rows["weight_regression"]
    assert ridge.method == "weight_regression"
    assert ridge.class_ids.tolist() == chain.unseen_ids
    assert ridge.weight.shape == (len(chain.unseen_ids), D)
    # f-CLSWGAN's softmax covers every class: the seen ones first, then the new ones
    generated = rows["fclswgan"]
    seen_ids = chain.backbone.seen_rows().class_ids.tolist()
    assert generated.class_ids.tolist() == seen_ids + chain.unseen_ids
    assert generated.weight.shape == (len(chain.classes), D)
    assert chain.fclswgan_generator.config.epochs == 2  # the test's epoch budget
    assert eszsl.projection.shape == (D, n_attr)
    assert set(report) == {"source", "settings", "compatibility", "fclswgan"}
    assert report["settings"] == chosen
    assert report["fclswgan"]["n_synthetic"] == chosen["fclswgan_n_synthetic"]
    assert sae.projection.shape == (n_attr, D) and sae.lam == chosen["sae_lambda"]
    assert (eszsl.gamma, eszsl.lam) == (chosen["eszsl_gamma"], chosen["eszsl_lambda"])
    for loss in ("ale", "sje", "devise"):
        model = getattr(chain, f"{loss}_model")
        assert model.loss == loss and model.projection.shape == (D, n_attr)
        assert model.settings["lr"] == chosen[f"{loss}_lr"]
        assert model.settings["epochs"] == chosen[f"{loss}_epochs"]


def _fit_baselines(chain, choice, params, backbone=None):
    return fit_baseline_models(
        chain.image_outputs,
        chain.images,
        chain.backbone_roles,
        chain.domain_knowledge,
        backbone or chain.backbone,
        choice,
        params,
    )


def test_the_baselines_use_the_settings_of_the_validation_choice(chain, params_for):
    settings = {
        **chain.validation_choice["baselines"],
        "ridge_alpha": 7.0,
        "eszsl_gamma": 0.5,
        "eszsl_lambda": 2.0,
        "sae_lambda": 3.0,
        "ale_epochs": 2,
        "fclswgan_n_synthetic": 5,
    }
    rows, eszsl, ale, _, _, sae, generator, report = _fit_baselines(
        chain, {**chain.validation_choice, "baselines": settings}, params_for("transfer")
    )

    assert report["settings"] == settings
    assert (eszsl.gamma, eszsl.lam) == (0.5, 2.0)
    assert sae.lam == 3.0 and ale.settings["epochs"] == 2
    assert generator.config.n_synthetic == 5
    seen = chain.backbone.seen_rows()
    dk = domain_knowledge_by_class(chain.domain_knowledge).to_numpy(np.float64)
    weight, _ = ridge_rows(
        dk[seen.class_ids],
        seen.weight.astype(np.float64),
        seen.bias.astype(np.float64),
        dk[chain.unseen_ids],
        7.0,
    )
    np.testing.assert_allclose(rows["weight_regression"].weight, weight, rtol=1e-10)


def test_a_validation_choice_without_baseline_settings_says_to_rerun_the_validation(
    chain, params_for
):
    old = {k: v for k, v in chain.validation_choice.items() if k != "baselines"}
    with pytest.raises(InputError, match=r"kedro run --pipelines=validation,transfer"):
        _fit_baselines(chain, old, params_for("transfer"))


def test_baselines_do_not_depend_on_the_order_of_the_classifier_rows(chain, params_for):
    rows, eszsl, *_, sae, _, _ = _fit_baselines(
        chain,
        chain.validation_choice,
        params_for("transfer"),
        _permuted(chain, [3, 0, 5, 1, 4, 2]),
    )

    expected = chain.baseline_rows["weight_regression"]
    np.testing.assert_allclose(
        rows["weight_regression"].weight, expected.weight, rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(rows["weight_regression"].bias, expected.bias, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(eszsl.projection, chain.eszsl_model.projection, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sae.projection, chain.sae_model.projection, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ evaluate_gzsl


def test_evaluation_covers_every_class_for_every_test_image(chain):
    evaluation, images = chain.gzsl_evaluation, chain.images
    test = images[images["split"].isin(["test_seen", "test_unseen"])]

    assert isinstance(evaluation, GZSLEvaluation)
    assert evaluation.methods == list(METHODS)
    assert evaluation.image_ids.tolist() == test["image_id"].tolist()
    assert evaluation.labels.tolist() == test["class_id"].tolist()
    assert evaluation.class_ids.tolist() == chain.classes["class_id"].tolist()
    assert evaluation.seen.tolist() == chain.classes["seen"].tolist()
    for method, result in evaluation.results.items():
        assert result.scores.shape == (len(test), len(chain.classes)), method
        assert result.scores.dtype == np.float32 and np.isfinite(result.scores).all(), method
        assert set(result.metrics) == METHOD_KEYS, method


def test_niwt_scores_are_the_classifier_logits_plus_the_new_rows(chain):
    out, rows = chain.image_outputs, chain.niwt_rows["niwt_paper"]
    test = _test_positions(chain)
    niwt = torch.as_tensor(chain.gzsl_evaluation.results["niwt_paper"].scores).double()

    seen_columns = chain.backbone.spec.seen_class_ids
    torch.testing.assert_close(
        niwt[:, seen_columns], out["logits"][test].double(), rtol=1e-4, atol=1e-4
    )
    expected_unseen = (
        out["features"][test].double() @ torch.as_tensor(rows.weight).double().T
        + torch.as_tensor(rows.bias).double()
    )
    torch.testing.assert_close(
        niwt[:, rows.class_ids.tolist()], expected_unseen, rtol=1e-6, atol=1e-5
    )


def test_the_ensemble_fuses_the_tuned_rows_with_eszsl_and_niwt_tuned_is_the_rows_alone(chain):
    evaluation, out, rows = chain.gzsl_evaluation, chain.image_outputs, chain.niwt_rows
    test = _test_positions(chain)
    linear = torch.as_tensor(evaluation.results["niwt_paper"].scores).double().clone()
    tuned = rows["niwt_tuned"]
    linear[:, tuned.class_ids.tolist()] = (
        out["features"][test].double() @ torch.as_tensor(tuned.weight).double().T
        + torch.as_tensor(tuned.bias).double()
    )
    fusion = chain.validation_choice["ensemble_niwt_tuned_eszsl"]["fusion"]
    eszsl = evaluation.results["eszsl"].scores.astype(np.float64)
    expected = fuse_scores(linear.numpy(), eszsl, fusion)

    np.testing.assert_allclose(
        evaluation.results["ensemble_niwt_tuned_eszsl"].scores, expected, rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        evaluation.results["niwt_tuned"].scores, linear.numpy(), rtol=1e-5, atol=1e-4
    )


def test_every_gamma_is_the_validated_one(chain):
    choice = chain.validation_choice

    for method, result in chain.gzsl_evaluation.results.items():
        assert result.gamma == choice["methods"][method]["gamma"], method
        assert result.metrics["gamma"] == result.gamma
        assert math.isfinite(result.gamma), method


def test_predictions_are_the_calibrated_argmax(chain):
    evaluation = chain.gzsl_evaluation
    for method, result in evaluation.results.items():
        shifted = result.scores.astype(np.float64) - result.gamma * evaluation.seen[None, :]
        expected = evaluation.class_ids[shifted.argmax(axis=1)]
        assert np.array_equal(result.predicted, expected), method


def test_evaluating_without_niwt_rows_for_an_unseen_class_is_refused(chain):
    niwt = chain.niwt_rows["niwt_paper"]
    rows = RowSet(chain.niwt_rows)
    rows["niwt_paper"] = ClassRows(
        "niwt_paper", niwt.class_ids[:-1], niwt.weight[:-1], niwt.bias[:-1]
    )

    with pytest.raises(InputError, match=r"niwt_paper: no classifier row"):
        evaluate_gzsl(
            chain.image_outputs,
            chain.images,
            chain.classes,
            chain.domain_knowledge,
            chain.backbone,
            rows,
            chain.baseline_rows,
            chain.eszsl_model,
            chain.ale_model,
            chain.sje_model,
            chain.devise_model,
            chain.sae_model,
            chain.validation_choice,
        )


# ------------------------------------------------------------------ report_gzsl


def test_metrics_contract(chain):
    metrics = chain.gzsl_metrics

    assert metrics["dataset"] == "attribute_world"
    assert metrics["domain_knowledge"] == chain.ingestion_summary["domain_knowledge"]
    assert metrics["backbone"] == {"arch": "small_cnn", "layer": "block3"}
    assert metrics["n_test_images"] == len(chain.gzsl_evaluation.image_ids)
    assert list(metrics["methods"]) == list(METHODS)
    for method, values in metrics["methods"].items():
        assert tuple(values) == METRIC_KEYS, method
        for key in METHOD_KEYS - {"gamma"}:
            assert 0.0 <= values[key] <= 100.0, f"{method}.{key} is not in percent"
        assert values["gamma"] == chain.validation_choice["methods"][method]["gamma"]
    assert metrics["validation"]["niwt_tuned"] == chain.validation_choice["niwt_tuned"]


def test_h_is_the_harmonic_mean_of_s_and_u_and_h_calibrated_of_theirs(chain):
    """H from the uncalibrated S and U, H_calibrated from the calibrated ones (percent)."""
    for method, values in chain.gzsl_metrics["methods"].items():
        for suffix in ("", "_calibrated"):
            s, u = values[f"S{suffix}"], values[f"U{suffix}"]
            expected = 0.0 if s + u == 0 else 2 * s * u / (s + u)
            assert values[f"H{suffix}"] == pytest.approx(expected), (method, suffix)


def test_mlflow_metrics_mirror_the_metrics(chain):
    mlflow_metrics, methods = chain.gzsl_mlflow_metrics, chain.gzsl_metrics["methods"]

    assert set(mlflow_metrics) == {f"{m}.{k}" for m, values in methods.items() for k in values}
    for name, entry in mlflow_metrics.items():
        method, key = name.split(".", 1)
        assert entry == {"value": float(methods[method][key]), "step": 0}


def test_figures_are_matplotlib_figures(chain):
    metrics, _, curve, confusion = report_gzsl(
        chain.gzsl_evaluation,
        chain.validation_choice,
        chain.classes,
        chain.ingestion_summary,
        chain.backbone,
    )
    try:
        assert metrics == chain.gzsl_metrics
        assert isinstance(curve, Figure)
        assert isinstance(confusion, Figure)
        assert curve is not confusion
    finally:
        plt.close(curve)
        plt.close(confusion)


def test_report_without_niwt_is_refused(chain):
    evaluation = chain.gzsl_evaluation
    partial = GZSLEvaluation(
        evaluation.image_ids,
        evaluation.labels,
        evaluation.class_ids,
        evaluation.seen,
        {m: r for m, r in evaluation.results.items() if m != "niwt_tuned"},
    )

    with pytest.raises(KeyError, match=r"niwt_tuned"):
        report_gzsl(
            partial,
            chain.validation_choice,
            chain.classes,
            chain.ingestion_summary,
            chain.backbone,
        )
