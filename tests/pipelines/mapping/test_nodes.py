"""Mapping nodes: the domain-knowledge -> importance mapper, its calibration twin, its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.pipelines.importance.nodes import channel_columns
from niwt_pipeline.pipelines.mapping.nodes import fit_importance_mapper, fit_inverse_mapper

K = 128


def _dk(chain) -> np.ndarray:
    return chain.domain_knowledge.drop(columns=["class_id", "name"]).to_numpy(np.float32)


def test_predicted_importance_has_a_final_row_per_class(chain):
    predicted = chain.predicted_importance
    final = predicted[predicted["role"] == "final"]

    assert list(predicted.columns) == ["class_id", "name", "seen", "role", *channel_columns(K)]
    assert predicted["class_id"].dtype == np.int64
    assert predicted["seen"].dtype == bool
    assert final["class_id"].tolist() == chain.classes["class_id"].tolist()
    assert final["name"].tolist() == chain.classes["name"].tolist()
    assert final["seen"].tolist() == chain.classes["seen"].tolist()
    assert np.isfinite(predicted[channel_columns(K)].to_numpy()).all()


def test_calibration_rows_are_exactly_the_reported_calibration_classes(chain):
    predicted, report = chain.predicted_importance, chain.mapper_report
    calibration = predicted[predicted["role"] == "calibration"]

    assert set(predicted["role"]) == {"final", "calibration"}
    assert calibration["class_id"].tolist() == report["calibration_class_ids"]
    assert len(report["calibration_class_ids"]) == 1
    assert set(report["calibration_class_ids"]) <= set(chain.seen_ids)
    assert calibration["seen"].all()


def test_final_rows_are_the_saved_mapper_applied_to_the_domain_knowledge(chain):
    predicted = chain.predicted_importance
    final = predicted[predicted["role"] == "final"][channel_columns(K)].to_numpy()
    dk = _dk(chain)
    mapper = LinearMapper(dk.shape[1], K)
    mapper.load_state_dict(chain.mapper_weights)

    np.testing.assert_allclose(final, mapper.predict(dk).numpy(), rtol=1e-5, atol=1e-6)


def test_calibration_rows_come_from_a_mapper_that_did_not_see_those_classes(chain):
    predicted = chain.predicted_importance
    by_role = predicted.set_index(["role", "class_id"])[channel_columns(K)]
    for class_id in chain.mapper_report["calibration_class_ids"]:
        final = by_role.loc[("final", class_id)].to_numpy()
        calibration = by_role.loc[("calibration", class_id)].to_numpy()
        assert not np.allclose(final, calibration)


def test_report_and_metrics_keys(chain):
    report, metrics = chain.mapper_report, chain.mapper_metrics

    assert set(report) == {"config", "final", "calibration_class_ids", "calibration"}
    assert report["config"]["max_epochs"] == 10
    assert report["config"]["n_heldout_classes"] == 1
    assert len(report["final"]["heldout_class_ids"]) == 1
    assert {"heldout_cosine", "heldout_class_cosine", "best_epoch"} <= set(report["final"])
    assert {"heldout_cosine", "best_epoch"} <= set(report["calibration"])
    assert set(metrics) == {"heldout_cosine", "heldout_class_cosine"}
    assert metrics["heldout_cosine"] == {"value": report["final"]["heldout_cosine"], "step": 0}


def test_calibration_class_count_follows_the_parameter(chain, params_for):
    _, predicted, report, _ = fit_importance_mapper(
        chain.image_importance,
        chain.domain_knowledge,
        chain.classes,
        params_for("mapping", {"calibration_classes": 2}),
    )

    calibration = predicted[predicted["role"] == "calibration"]
    assert len(report["calibration_class_ids"]) == 2
    assert calibration["class_id"].tolist() == report["calibration_class_ids"]
    assert len(predicted) == len(chain.classes) + 2


def test_mapper_is_deterministic(chain, params_for):
    weights, predicted, _, _ = fit_importance_mapper(
        chain.image_importance, chain.domain_knowledge, chain.classes, params_for("mapping")
    )

    assert predicted.equals(chain.predicted_importance)
    for name, value in chain.mapper_weights.items():
        assert torch.equal(weights[name], value), name


def test_too_many_calibration_classes_are_refused(chain, params_for):
    with pytest.raises(InputError, match=r"at least two must stay seen"):
        fit_importance_mapper(
            chain.image_importance,
            chain.domain_knowledge,
            chain.classes,
            params_for("mapping", {"calibration_classes": len(chain.seen_ids) - 1}),
        )


def test_domain_knowledge_with_a_gap_in_class_ids_is_refused(chain, params_for):
    dk = chain.domain_knowledge[chain.domain_knowledge["class_id"] != 2]

    with pytest.raises(ValueError, match=r"class ids must be 0\.\.C-1"):
        fit_importance_mapper(chain.image_importance, dk, chain.classes, params_for("mapping"))


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"mapper": {"max_epochs": 0}}, r"max_epochs"),
        ({"mapper": {"learning_rate": 0.1}}, r"learning_rate"),
        ({"calibration_classes": "two"}, r"calibration_classes"),
        pytest.param(
            {"calibration_classes": 0},
            r"calibration_classes",
        ),
        pytest.param(
            {"inverse_ridge_alpha": -1.0},
            r"inverse_ridge_alpha",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        fit_importance_mapper(None, None, None, params_for("mapping", bad))


# ------------------------------------------------------------------ fit_inverse_mapper


def test_inverse_map_predicts_domain_knowledge_from_importance(chain):
    inverse = InverseMap.from_state(chain.inverse_map_weights)
    importance = chain.image_importance[channel_columns(K)].to_numpy()
    dk = _dk(chain)

    predicted = inverse.predict(importance).numpy()

    assert set(chain.inverse_map_weights) == {"x_mean", "x_scale", "weight", "bias", "l2_normalise"}
    assert chain.inverse_map_weights["weight"].shape == (K, dk.shape[1])
    assert predicted.shape == (len(importance), dk.shape[1])
    # fitted on these images: better than predicting the mean domain-knowledge vector
    target = dk[chain.image_importance["class_id"].to_numpy()]
    assert ((predicted - target) ** 2).mean() < ((target.mean(0) - target) ** 2).mean()


def test_inverse_map_refuses_a_negative_ridge_alpha(chain, params_for):
    with pytest.raises(ValueError, match=r"ridge_alpha"):
        fit_inverse_mapper(
            chain.image_importance,
            chain.domain_knowledge,
            params_for("mapping", {"inverse_ridge_alpha": -1.0}),
        )
