"""Explanation nodes on the outputs of the real upstream pipelines (tiny world)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.gzsl import GZSLEvaluation, evaluate_methods
from niwt_pipeline.core.metrics import calibrated_predictions
from niwt_pipeline.core.rows import ClassRows, RowSet
from niwt_pipeline.params import ExplanationParams
from niwt_pipeline.pipelines.explanation.nodes import (
    build_run_report,
    choose_explanation_evidence,
    explain_predictions,
    name_neurons,
    score_explanations,
    visualise_explanations,
)

TEXT = re.compile(r"^predicted (\S+) because: (\S+), (\S+), (\S+)$")


def _with(params: ExplanationParams, **updates) -> ExplanationParams:
    """``params`` with some keys replaced, validated again (nested dicts merged)."""
    values = params.model_dump()
    for key, value in updates.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return ExplanationParams.model_validate(values)


#: The paper's explanation: the inverse map on the predicted row's importance alone.
PAPER = {"evidence": "importance", "evidence_weight": 1.0, "chosen_on": "configuration"}


def _explain(upstream, params, choice=None, **overrides):
    inputs = {
        name: upstream[name]
        for name in (
            "images",
            "classes",
            "domain_knowledge",
            "classifier_domain_knowledge",
            "image_attributes",
            "image_outputs",
            "backbone",
            "niwt_rows",
            "inverse_map_weights",
            "gzsl_evaluation",
        )
    }
    inputs.update(overrides)
    return explain_predictions(**inputs, explanation_choice=choice or PAPER, options=params)


def _choose(upstream, typed_parameters, params, **overrides):
    inputs = {
        name: upstream[name]
        for name in (
            "validation_image_outputs",
            "validation_roles",
            "validation_niwt_rows",
            "validation_backbone",
            "images",
            "domain_knowledge",
            "image_attributes",
            "validation_choice",
        )
    }
    inputs.update(overrides)
    return choose_explanation_evidence(
        **inputs,
        mapping=typed_parameters["mapping"],
        options=params,
    )


def _evaluation(evaluation: GZSLEvaluation, keep=None, niwt_gamma=None) -> GZSLEvaluation:
    """The evaluation again, on the images of ``keep`` (a bool mask) and/or with another
    gamma for ``niwt_tuned``."""
    keep = np.ones(len(evaluation.image_ids), dtype=bool) if keep is None else keep
    gammas = {m: r.gamma for m, r in evaluation.results.items()}
    if niwt_gamma is not None:
        gammas["niwt_tuned"] = niwt_gamma
    return evaluate_methods(
        {m: r.scores[keep] for m, r in evaluation.results.items()},
        evaluation.image_ids[keep],
        evaluation.labels[keep],
        evaluation.class_ids,
        evaluation.seen,
        gammas,
    )


@pytest.fixture(scope="module")
def explained(upstream, explanation_params) -> pd.DataFrame:
    return _explain(upstream, explanation_params)


@pytest.fixture(scope="module")
def named(upstream, explanation_params) -> tuple[pd.DataFrame, str]:
    return name_neurons(
        upstream["mapper_weights"],
        upstream["image_importance"],
        upstream["domain_knowledge"],
        explanation_params,
    )


def _unnamed(domain_knowledge: pd.DataFrame) -> pd.DataFrame:
    dims = [c for c in domain_knowledge.columns if c not in ("class_id", "name")]
    return domain_knowledge.rename(columns={c: str(i) for i, c in enumerate(dims)})


# ---------------------------------------------------------------------------- parameters
def test_params_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="top_kk"):
        ExplanationParams(top_kk=3)
    with pytest.raises(ValueError, match="top_k"):
        ExplanationParams(top_k=0)
    with pytest.raises(ValueError, match="alpha"):
        ExplanationParams(visual={"alpha": 1.5})


def test_base_parameters_are_the_defaults(explanation_params):
    assert explanation_params == ExplanationParams()


# ---------------------------------------------------------------------------- neuron names
def test_name_neurons_names_every_neuron_twice(upstream, named, explanation_params):
    table, markdown = named
    k = explanation_params.top_k
    n_neurons = upstream["mapper_weights"]["linear.weight"].shape[0]
    assert list(table.columns) == ["source", "neuron", "rank", "dimension", "score"]
    assert table.groupby("source").size().to_dict() == {
        "covariation": n_neurons * k,
        "mapper": n_neurons * k,
    }
    dims = set(upstream["domain_knowledge"].columns) - {"class_id", "name"}
    assert set(table["dimension"]) <= dims
    assert markdown.startswith("# Neuron names")
    assert re.search(r"agreement between .*: \*\*\d\.\d{3}\*\* \(random naming: 0\.158", markdown)
    assert markdown.count("\n| ") == n_neurons + 1  # header + one line per neuron


def test_name_neurons_falls_back_to_indices_without_names(upstream, explanation_params, caplog):
    caplog.set_level(logging.INFO)
    table, markdown = name_neurons(
        upstream["mapper_weights"],
        upstream["image_importance"],
        _unnamed(upstream["domain_knowledge"]),
        explanation_params,
    )
    assert table["dimension"].str.fullmatch(r"dim_\d{3}").all()
    assert "no usable dimension names" in markdown
    assert "no usable dimension names" in caplog.text


def test_name_neurons_rejects_top_k_above_the_dimensions(upstream, explanation_params):
    with pytest.raises(InputError, match=r"explanation.top_k.*19 domain-knowledge dimensions"):
        name_neurons(
            upstream["mapper_weights"],
            upstream["image_importance"],
            upstream["domain_knowledge"],
            _with(explanation_params, top_k=20),
        )


# ---------------------------------------------------------------------------- textual
def test_explain_predictions_explains_every_test_image(upstream, explained):
    evaluation = upstream["gzsl_evaluation"]
    assert explained["image_id"].tolist() == evaluation.image_ids.tolist()
    classes = upstream["classes"].sort_values("class_id")
    niwt = evaluation.results["niwt_tuned"]
    assert niwt.gamma == upstream["validation_choice"]["methods"]["niwt_tuned"]["gamma"]
    expected = classes["class_id"].to_numpy()[
        calibrated_predictions(niwt.scores, classes["seen"].to_numpy(), niwt.gamma)
    ]
    assert explained["predicted_class_id"].tolist() == expected.tolist()
    assert (explained["correct"] == (explained["true_class_id"] == expected)).all()
    for row in explained.itertuples():
        match = TEXT.match(row.text)
        assert match, row.text
        assert match.groups() == (
            row.predicted_class,
            row.dimension_1,
            row.dimension_2,
            row.dimension_3,
        )
        assert row.score_1 >= row.score_2 >= row.score_3


def _mixed_evaluation(upstream) -> GZSLEvaluation:
    """NIWT's gamma at the median switch point: about half the test images predicted seen."""
    evaluation = upstream["gzsl_evaluation"]
    scores = evaluation.results["niwt_tuned"].scores.astype(np.float64)
    seen = evaluation.seen
    gap = scores[:, seen].max(1) - scores[:, ~seen].max(1)
    return _evaluation(evaluation, niwt_gamma=float(np.median(gap)))


def test_explain_predictions_explains_seen_and_unseen_predictions(upstream, explanation_params):
    explained = _explain(upstream, explanation_params, gzsl_evaluation=_mixed_evaluation(upstream))
    assert (~explained["predicted_seen"]).any() and explained["predicted_seen"].any()
    assert set(explained["split"]) == {"test_seen", "test_unseen"}
    assert (explained["true_seen"] == (explained["split"] == "test_seen")).all()
    unseen_names = set(upstream["classes"].loc[~upstream["classes"]["seen"], "name"])
    assert set(explained.loc[~explained["predicted_seen"], "predicted_class"]) <= unseen_names


def test_explain_predictions_max_images_takes_a_seeded_sample(upstream, explanation_params):
    params = _with(explanation_params, max_images=5)
    first = _explain(upstream, params)
    assert len(first) == 5
    assert first["image_id"].tolist() == _explain(upstream, params)["image_id"].tolist()


def test_explain_predictions_names_a_missing_image_file(upstream, explanation_params, tmp_path):
    images = upstream["images"].copy()
    test_id = int(upstream["gzsl_evaluation"].image_ids[3])
    gone = str(tmp_path / "moved" / "gone.png")
    images.loc[images["image_id"] == test_id, "path"] = gone
    with pytest.raises(InputError, match=re.escape(gone) + ": image file not found"):
        _explain(upstream, explanation_params, images=images)


def test_explain_predictions_needs_a_row_for_every_class(upstream, explanation_params):
    niwt = upstream["niwt_rows"]["niwt_tuned"]
    rows = RowSet(upstream["niwt_rows"])
    rows["niwt_tuned"] = ClassRows("niwt_tuned", niwt.class_ids[:0], niwt.weight[:0], niwt.bias[:0])
    with pytest.raises(InputError, match="no classifier row for class id"):
        _explain(
            upstream,
            explanation_params,
            niwt_rows=rows,
            gzsl_evaluation=_mixed_evaluation(upstream),
        )


def _dk(upstream, name="classifier_domain_knowledge") -> pd.DataFrame:
    dk = upstream[name]
    return dk.set_index("class_id").drop(columns="name").astype(float)


def _top3(values: np.ndarray) -> np.ndarray:
    return np.argsort(-values, axis=1, kind="stable")[:, :3]


def test_explain_predictions_the_paper_explanation_and_the_runner_up(upstream, explained):
    ids = explained[[f"dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    paper = explained[[f"inverse_map_dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    assert (ids == paper).all()  # weight 1 on the importance evidence is the paper's
    evaluation = upstream["gzsl_evaluation"]
    niwt = evaluation.results["niwt_tuned"]
    calibrated = niwt.scores.astype(np.float64) - niwt.gamma * evaluation.seen
    calibrated[np.arange(len(calibrated)), evaluation.columns_of(niwt.predicted)] = -np.inf
    runner_up = evaluation.class_ids[np.argmax(calibrated, axis=1)]
    assert explained["runner_up_class_id"].tolist() == runner_up.tolist()
    assert (explained["runner_up_class_id"] != explained["predicted_class_id"]).all()


def test_explain_predictions_at_weight_0_names_the_class_prior(upstream, explanation_params):
    choice = {"evidence": "features", "evidence_weight": 0.0}
    explained = _explain(upstream, explanation_params, choice)
    prior = _dk(upstream).loc[explained["predicted_class_id"]].to_numpy()
    ids = explained[[f"dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    assert (ids == _top3(prior)).all()


def test_explain_predictions_contrastive_uses_the_runner_up(upstream, explanation_params):
    from niwt_pipeline.core.explain import blend_scores, contrastive_scores

    choice = {"evidence": "features", "evidence_weight": 0.0}
    explained = _explain(upstream, _with(explanation_params, contrast_weight=2.0), choice)
    dk = _dk(upstream)
    flat = np.zeros((len(explained), dk.shape[1]))
    expected = contrastive_scores(
        blend_scores(dk.loc[explained["predicted_class_id"]].to_numpy(), flat, 0.0),
        blend_scores(dk.loc[explained["runner_up_class_id"]].to_numpy(), flat, 0.0),
        2.0,
    )
    ids = explained[[f"dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    assert (ids == _top3(expected)).all()
    assert explained["score_1"].to_numpy() == pytest.approx(expected.max(axis=1))


def test_explain_predictions_contrastive_importance_reads_the_runner_up_row(
    upstream, explanation_params
):
    from niwt_pipeline.core.explain import blend_scores, contrastive_scores, predicted_evidence
    from niwt_pipeline.core.mapper import InverseMap

    params = _with(explanation_params, contrast_weight=1.0, max_images=12)
    explained = _explain(upstream, params)
    table = upstream["images"].set_index("image_id").loc[explained["image_id"]].reset_index()
    table["predicted_class_id"] = explained["predicted_class_id"].to_numpy()
    table["runner_up_class_id"] = explained["runner_up_class_id"].to_numpy()
    backbone = upstream["backbone"]
    run = {
        "backbone": backbone,
        "rows": backbone.seen_rows() + upstream["niwt_rows"]["niwt_tuned"],
        "inverse": InverseMap.from_state(upstream["inverse_map_weights"]),
        "table": table,
        "batch_size": 8,
    }
    mine = predicted_evidence(["importance"], **run)["importance"]
    other = predicted_evidence(["importance"], class_column="runner_up_class_id", **run)
    expected = contrastive_scores(
        blend_scores(mine, mine, 1.0), blend_scores(other["importance"], mine, 0.0), 1.0
    )
    ids = explained[[f"dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    assert (ids == _top3(expected)).all()
    assert not (ids == _top3(mine)).all()  # the runner-up changed some explanations


def test_explain_predictions_with_the_attribute_predictor(upstream, explanation_params):
    choice = {"evidence": "features", "evidence_weight": 1.0}
    explained = _explain(upstream, explanation_params, choice)
    truth = upstream["image_attributes"].set_index("image_id").loc[explained["image_id"]]
    ids = explained[[f"dimension_id_{r}" for r in (1, 2, 3)]].to_numpy()
    hits = np.take_along_axis(truth.to_numpy(), ids, axis=1).mean()
    assert hits > 4 / 19  # far from random naming, even on the tiny world
    with pytest.raises(InputError, match="no features for image id"):
        outputs = dict(upstream["image_outputs"])
        outputs = {k: v[:3] for k, v in outputs.items()}
        _explain(upstream, explanation_params, choice, image_outputs=outputs)


# ---------------------------------------------------------------------------- evidence choice
def test_choose_explanation_evidence_keeps_a_configured_choice(
    upstream, typed_parameters, explanation_params
):
    params = _with(explanation_params, evidence="importance", evidence_weight=0.3)
    assert _choose(upstream, typed_parameters, params) == {
        "evidence": "importance",
        "evidence_weight": 0.3,
        "chosen_on": "configuration (explanation.evidence, explanation.evidence_weight)",
    }


def test_choose_explanation_evidence_on_the_pseudo_unseen_images(
    upstream, typed_parameters, explanation_params
):
    import json

    choice = _choose(upstream, typed_parameters, explanation_params)
    json.dumps(choice, allow_nan=False)
    roles = upstream["validation_roles"]
    assert choice["n_images"] == int((roles["role"] == "pseudo_unseen").sum())
    candidates = pd.DataFrame(choice["candidates"])
    weights = explanation_params.evidence_weights
    assert len(candidates) == 2 * len(weights)
    assert set(candidates["evidence"]) == {"importance", "features"}
    best = candidates["precision_at_k"].max()
    chosen = candidates[candidates["chosen"]].iloc[0]
    assert chosen["precision_at_k"] == best == choice["validation_precision_at_k"]["chosen"]
    assert (choice["evidence"], choice["evidence_weight"]) == (chosen["evidence"], chosen["weight"])
    paper = candidates[(candidates["evidence"] == "importance") & (candidates["weight"] == 1.0)]
    assert choice["validation_precision_at_k"]["inverse_map"] == paper["precision_at_k"].iloc[0]
    assert {"precision_at_k_correct", "precision_at_k_departing"} <= set(candidates.columns)
    assert "pseudo-unseen classes" in choice["chosen_on"]


def test_choose_explanation_evidence_needs_pseudo_unseen_images(
    upstream, typed_parameters, explanation_params
):
    roles = upstream["validation_roles"].copy()
    roles.loc[roles["role"] == "pseudo_unseen", "role"] = "holdout"
    with pytest.raises(InputError, match="set explanation.evidence and explanation.evidence_"):
        _choose(upstream, typed_parameters, explanation_params, validation_roles=roles)


# ---------------------------------------------------------------------------- visual
def _visualise(upstream, explained, params):
    return visualise_explanations(
        explained,
        upstream["classes"],
        upstream["backbone"],
        upstream["niwt_rows"],
        params,
    )


def test_visualise_explanations_maps_a_few_images_per_class(
    upstream, explained, explanation_params
):
    params = _with(explanation_params, visual={"images_per_class": 2, "max_classes": 3})
    examples, figure = _visualise(upstream, explained, params)
    side = upstream["backbone"].spec.image_size
    n = len(examples["image_id"])
    assert n == 6
    for key in ("original", "cam_predicted", "cam_true"):
        assert examples[key].shape == (n, side, side, 3) and examples[key].dtype == torch.uint8
    chosen = explained.set_index("image_id").loc[examples["image_id"].numpy()]
    assert chosen["true_seen"].tolist() == [False] * 4 + [True] * 2  # 2 unseen classes first
    assert not torch.equal(examples["original"], examples["cam_true"])
    assert len(figure.axes) == 4 * n


def test_visualise_explanations_skips_a_class_without_test_images(
    upstream, explained, explanation_params, caplog
):
    caplog.set_level(logging.INFO)
    unseen = upstream["classes"].loc[~upstream["classes"]["seen"]]
    dropped = int(unseen["class_id"].iloc[0])
    params = _with(explanation_params, visual={"images_per_class": 1, "max_classes": 2})
    examples, _ = _visualise(upstream, explained[explained["true_class_id"] != dropped], params)
    name = unseen["name"].iloc[0]
    assert f"class {name} has no test images to explain: skipped" in caplog.text
    chosen = explained.set_index("image_id").loc[examples["image_id"].numpy(), "true_class_id"]
    assert dropped not in chosen.tolist() and len(chosen) == 2


def test_visualise_explanations_with_nothing_to_explain(upstream, explained, explanation_params):
    examples, figure = _visualise(upstream, explained.iloc[:0], explanation_params)
    assert examples["image_id"].shape == (0,)
    assert examples["cam_true"].shape[0] == 0
    assert figure is not None


# ---------------------------------------------------------------------------- scores
def _score(upstream, named, explained, params, **overrides):
    inputs = {
        "neuron_names": named[0],
        "textual_explanations": explained,
        "images": upstream["images"],
        "image_attributes": upstream["image_attributes"],
        "domain_knowledge": upstream["domain_knowledge"],
        "classifier_domain_knowledge": upstream["classifier_domain_knowledge"],
        "validation_choice": upstream["validation_choice"],
        "explanation_choice": PAPER,
    }
    inputs.update(overrides)
    return score_explanations(**inputs, options=params)


def test_the_class_prior_of_a_class_defined_by_its_description(
    upstream, named, explained, explanation_params
):
    """A test image predicted as a class that exists only as a description (not among the
    dataset's classes) is scored too: its class prior reads the classifier's classes."""
    dk = upstream["domain_knowledge"]
    dims = [c for c in dk.columns if c not in ("class_id", "name")]
    extra_id = int(dk["class_id"].max()) + 1
    row = {"class_id": extra_id, "name": "described only", **dict.fromkeys(dims, 0.0)}
    row.update({dims[0]: 1.0, dims[1]: 0.9, dims[2]: 0.8})  # its 3 strongest: 0, 1, 2
    classifier_dk = pd.concat([dk, pd.DataFrame([row])], ignore_index=True)
    predicted_extra = explained.assign(predicted_class_id=extra_id, correct=False)

    metrics, _ = _score(
        upstream,
        named,
        predicted_extra,
        explanation_params,
        classifier_domain_knowledge=classifier_dk,
    )

    truth = upstream["image_attributes"].set_index("image_id").loc[explained["image_id"], dims]
    expected = truth.to_numpy()[:, :3].mean()
    prior = metrics["textual"]["precision_at_k"]["all"]["class_prior"]
    assert prior == pytest.approx(expected)


def test_score_explanations_against_the_true_image_attributes(
    upstream, named, explained, explanation_params
):
    metrics, mlflow_metrics = _score(upstream, named, explained, explanation_params)
    textual = metrics["textual"]
    assert textual["source_of_truth"] == "image_attributes"
    assert textual["n_images_scored"] == len(explained)
    groups = textual["precision_at_k"]
    assert groups["all"]["n_images"] == groups["seen"]["n_images"] + groups["unseen"]["n_images"]
    # each image of the world shows exactly one value of each of its 4 attribute groups
    assert groups["unseen"]["random"] == pytest.approx(4 / 19)
    for group in groups.values():
        for key in ("all", "correct", "incorrect", "class_prior"):
            assert group[key] is None or 0.0 <= group[key] <= 1.0
    agreement = metrics["neuron_names"]
    assert agreement["random_baseline"] == pytest.approx(3 / 19)
    assert mlflow_metrics["precision_at_3.unseen.random"]["value"] == pytest.approx(4 / 19)
    assert "neuron_names.agreement" in mlflow_metrics
    assert all(set(v) == {"value", "step"} for v in mlflow_metrics.values())


def test_score_explanations_departing_contrastive_and_diversity(
    upstream, named, explained, explanation_params
):
    metrics, mlflow_metrics = _score(upstream, named, explained, explanation_params)
    textual = metrics["textual"]
    groups = textual["precision_at_k"]
    # departing: the image shows another attribute than most images of its class
    images, attributes = upstream["images"], upstream["image_attributes"]
    dims = [c for c in upstream["domain_knowledge"].columns if c not in ("class_id", "name")]
    shown = attributes.set_index("image_id").loc[images["image_id"], dims]
    prototype = (shown.groupby(images["class_id"].to_numpy()).mean() > 0.5).astype(float)
    truth = attributes.set_index("image_id").loc[explained["image_id"], dims].to_numpy()
    departs = (truth != prototype.loc[explained["true_class_id"]].to_numpy()).any(axis=1)
    unseen = ~explained["true_seen"].to_numpy()
    assert groups["unseen_departing"]["n_images"] == int((departs & unseen).sum()) > 0
    assert groups["seen_departing"]["n_images"] == int((departs & ~unseen).sum())
    for key in ("all", "class_prior", "inverse_map", "random"):
        assert key in groups["unseen_departing"]
    assert groups["unseen"]["all"] == groups["unseen"]["inverse_map"]  # PAPER: the same
    contrast = textual["contrastive_share"]["unseen"]
    assert set(contrast) == {"explanation", "class_prior", "inverse_map", "random"}
    assert all(0.0 <= v <= 1.0 for v in contrast.values())
    diversity = textual["naming_diversity"]["all"]["explanation"]
    assert diversity["n_explanations"] == len(explained)
    assert 3 <= diversity["n_distinct"] <= len(dims)
    assert diversity["top_attribute"] in dims
    assert "contrastive_share.unseen.explanation" in mlflow_metrics
    assert "naming_diversity.all.class_prior.n_distinct" in mlflow_metrics
    assert textual["explanation"]["evidence"] == "importance"


def test_score_explanations_runner_up_equal_to_the_prediction_separates_nothing(
    upstream, named, explained, explanation_params
):
    same = explained.assign(runner_up_class_id=explained["predicted_class_id"])
    metrics, _ = _score(upstream, named, same, explanation_params)
    for shares in metrics["textual"]["contrastive_share"].values():
        assert all(v == 0.0 for v in shares.values())


def test_score_explanations_exact_on_hand_made_explanations(
    upstream, named, explained, explanation_params
):
    attributes = upstream["image_attributes"].set_index("image_id")
    dims = [c for c in upstream["domain_knowledge"].columns if c not in ("class_id", "name")]
    perfect = explained.copy()
    truth = attributes.loc[perfect["image_id"], dims].to_numpy()
    true_ids = np.argsort(-truth, axis=1, kind="stable")[:, :3]  # 3 of the 4 true attributes
    for r in range(3):
        perfect[f"dimension_id_{r + 1}"] = true_ids[:, r]
    metrics, _ = _score(upstream, named, perfect, explanation_params)
    for group in metrics["textual"]["precision_at_k"].values():
        assert group["all"] == 1.0


def test_score_explanations_without_image_attributes_uses_the_true_class(
    upstream, named, explained, explanation_params
):
    empty = pd.DataFrame({"image_id": pd.Series([], dtype="int64")})
    metrics, _ = _score(upstream, named, explained, explanation_params, image_attributes=empty)
    textual = metrics["textual"]
    assert textual["source_of_truth"] == "class_attributes_thresholded"
    assert "TRUE class" in textual["truth_description"]
    assert "above that dimension's mean" in textual["truth_description"]
    dk = upstream["domain_knowledge"].set_index("class_id").drop(columns="name")
    above = (dk > dk.mean()).astype(float)
    expected = above.loc[explained["true_class_id"]].to_numpy().mean()
    assert textual["precision_at_k"]["all"]["random"] == pytest.approx(expected)


def test_score_explanations_with_attributes_of_other_dimensions_uses_the_true_class(
    upstream, named, explained, explanation_params
):
    attributes = upstream["image_attributes"]
    other = attributes.rename(columns={c: f"x_{c}" for c in attributes.columns[1:]})
    metrics, _ = _score(upstream, named, explained, explanation_params, image_attributes=other)
    textual = metrics["textual"]
    assert textual["source_of_truth"] == "class_attributes_thresholded"
    assert textual["truth_description"].startswith(
        "the per-image attributes do not match the domain-knowledge dimensions"
    )


def test_explain_predictions_notes_classes_without_test_images(
    upstream, explanation_params, caplog
):
    caplog.set_level(logging.INFO)
    evaluation = upstream["gzsl_evaluation"]
    fewer = _evaluation(evaluation, keep=evaluation.labels != 0)
    explained = _explain(upstream, explanation_params, gzsl_evaluation=fewer)
    assert 0 not in explained["true_class_id"].tolist()
    name = upstream["classes"].set_index("class_id").loc[0, "name"]
    assert f"1 class(es) without test images to explain, skipped: {name}" in caplog.text


def test_score_explanations_writes_valid_json_when_a_group_is_empty(
    upstream, named, explained, explanation_params
):
    import json

    only_seen = explained[explained["true_seen"] & ~explained["correct"]]
    metrics, mlflow_metrics = _score(upstream, named, only_seen, explanation_params)
    text = json.dumps(metrics, allow_nan=False)
    assert '"unseen": {"n_images": 0}' in text
    assert metrics["textual"]["precision_at_k"]["seen"]["correct"] is None
    unseen_keys = [k for k in mlflow_metrics if k.startswith("precision_at_3.unseen")]
    assert unseen_keys == [
        "precision_at_3.unseen.n_images",
        "precision_at_3.unseen_departing.n_images",
    ]
    assert metrics["textual"]["contrastive_share"]["unseen"] == {}
    assert not [k for k in mlflow_metrics if k.startswith("contrastive_share.unseen")]


# ---------------------------------------------------------------------------- report
def test_build_run_report_is_one_self_contained_page(
    upstream, named, explained, explanation_params
):
    examples, _ = _visualise(upstream, explained, explanation_params)
    metrics, _ = _score(upstream, named, explained, explanation_params)
    page = build_run_report(
        upstream["ingestion_summary"],
        upstream["gzsl_metrics"],
        upstream["gzsl_evaluation"],
        upstream["classes"],
        explained,
        examples,
        named[0],
        metrics,
        upstream["backbone_report"],
        upstream["transfer_report"],
        explanation_params,
    )
    assert page.startswith("<!DOCTYPE html>")
    for heading in (
        "Dataset and split",
        "Generalised zero-shot accuracy",
        "Seen-unseen trade-off",
        "Example explanations",
        "Scored textual explanations",
        "Neuron names",
        "Stage timings",
    ):
        assert heading in page
    assert page.count("data:image/png;base64,") == 3 + 3 * len(examples["image_id"])
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "backbone_report.train_seconds" in page
    assert "the true 0/1 attributes of each test image" in page
