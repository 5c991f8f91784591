"""Mapping nodes: the domain-knowledge -> importance mapper (with the validated settings) and
its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.importance import channel_columns
from niwt_pipeline.core.mapper import InverseMap, LinearMapper
from niwt_pipeline.pipelines.mapping.nodes import fit_importance_mapper, fit_inverse_mapper

K = 128


def _dk(chain) -> np.ndarray:
    return chain.domain_knowledge.drop(columns=["class_id", "name"]).to_numpy(np.float32)


def test_predicted_importance_has_one_row_per_class(chain):
    predicted = chain.predicted_importance

    assert list(predicted.columns) == ["class_id", "name", "seen", *channel_columns(K)]
    assert predicted["class_id"].dtype == np.int64
    assert predicted["seen"].dtype == bool
    assert predicted["class_id"].tolist() == chain.classes["class_id"].tolist()
    assert predicted["name"].tolist() == chain.classes["name"].tolist()
    assert predicted["seen"].tolist() == chain.classes["seen"].tolist()
    assert np.isfinite(predicted[channel_columns(K)].to_numpy()).all()


def test_predictions_are_the_saved_mapper_applied_to_the_domain_knowledge(chain):
    predicted = chain.predicted_importance[channel_columns(K)].to_numpy()
    dk = _dk(chain)
    mapper = LinearMapper.from_state(chain.mapper_weights)

    assert (mapper.n_in, mapper.n_out) == (dk.shape[1], K)
    np.testing.assert_allclose(predicted, mapper.predict(dk).numpy(), rtol=1e-5, atol=1e-6)


def test_report_and_metrics_keys(chain):
    report, metrics = chain.mapper_report, chain.mapper_metrics

    assert set(report) == {"config", "validated_overrides", "final"}
    assert report["config"]["max_epochs"] == 10
    assert report["config"]["n_heldout_classes"] == 1
    assert report["validated_overrides"] == chain.validation_choice["mapper"]
    assert len(report["final"]["heldout_class_ids"]) == 1
    assert {"heldout_cosine", "heldout_class_cosine", "best_epoch"} <= set(report["final"])
    assert set(metrics) == {"heldout_cosine", "heldout_class_cosine"}
    assert metrics["heldout_cosine"] == {"value": report["final"]["heldout_cosine"], "step": 0}


def test_the_validated_mapper_settings_override_the_parameters(chain, params_for):
    mapping = params_for("mapping", {"mapper": {"weight_decay": 0.5}})
    _, plain, report, _ = fit_importance_mapper(
        chain.image_importance, chain.domain_knowledge, chain.classes, {"mapper": {}}, mapping
    )
    _, chosen, chosen_report, _ = fit_importance_mapper(
        chain.image_importance,
        chain.domain_knowledge,
        chain.classes,
        {"mapper": {"weight_decay": 0.0}},
        mapping,
    )

    assert report["config"]["weight_decay"] == 0.5
    assert chosen_report["config"]["weight_decay"] == 0.0
    assert chosen_report["validated_overrides"] == {"weight_decay": 0.0}
    assert not plain.equals(chosen)


def test_mapper_is_deterministic(chain, params_for):
    weights, predicted, _, _ = fit_importance_mapper(
        chain.image_importance,
        chain.domain_knowledge,
        chain.classes,
        chain.validation_choice,
        params_for("mapping"),
    )

    assert predicted.equals(chain.predicted_importance)
    for name, value in chain.mapper_weights.items():
        assert torch.equal(weights[name], value), name


def test_domain_knowledge_with_a_gap_in_class_ids_is_refused(chain, params_for):
    dk = chain.domain_knowledge[chain.domain_knowledge["class_id"] != 2]

    with pytest.raises(ValueError, match=r"class ids must be 0\.\.C-1"):
        fit_importance_mapper(
            chain.image_importance, dk, chain.classes, {"mapper": {}}, params_for("mapping")
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"mapper": {"max_epochs": 0}}, r"max_epochs"),
        ({"mapper": {"learning_rate": 0.1}}, r"learning_rate"),
        ({"calibration_classes": 2}, r"calibration_classes"),
        pytest.param(
            {"inverse_ridge_alpha": -1.0},
            r"inverse_ridge_alpha",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_the_key_before_any_work(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        fit_importance_mapper(None, None, None, {}, params_for("mapping", bad))


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
