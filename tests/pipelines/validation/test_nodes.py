"""Validation nodes: pseudo-unseen roles, a backbone that never saw them, and the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from niwt_pipeline.core.compatibility import LOSSES
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.methods import METHODS as ALL_METHODS
from niwt_pipeline.pipelines.validation.nodes import (
    select_hyperparameters,
    split_for_validation,
)

METHODS = set(ALL_METHODS)


def test_roles_give_pseudo_unseen_classes_all_their_trainval_images(chain):
    split, backbone_split = chain.validation_roles, chain.backbone_roles
    pseudo = chain.validation_choice["pseudo_unseen_class_ids"]

    assert len(pseudo) == 2 and set(pseudo) <= set(chain.seen_ids)
    assert split["image_id"].tolist() == backbone_split["image_id"].tolist()
    assert set(split.loc[split["role"] == "pseudo_unseen", "class_id"]) == set(pseudo)
    kept = split[~split["class_id"].isin(pseudo)]
    roles = backbone_split.set_index("image_id").loc[kept["image_id"], "role"]
    assert kept["role"].tolist() == roles.tolist()  # the backbone's own train/holdout roles
    test_ids = chain.images.loc[chain.images["split"] != "trainval", "image_id"]
    assert not set(split["image_id"]) & set(test_ids)


def test_validation_backbone_has_no_output_for_the_pseudo_unseen_classes(chain):
    spec, report = chain.validation_backbone.spec, chain.validation_backbone_report
    pseudo = chain.validation_choice["pseudo_unseen_class_ids"]

    assert report["pseudo_unseen_class_ids"] == pseudo
    assert spec.seen_class_ids == sorted(set(chain.seen_ids) - set(pseudo))
    assert chain.validation_backbone.state["fc.weight"].shape[0] == len(spec.seen_class_ids)
    train = chain.validation_roles["role"] == "train"
    assert report["n_train_images"] == int(train.sum())
    assert np.isnan(report["seen_accuracy_test"])  # no test image is read


def test_validation_outputs_cover_exactly_the_validation_images(chain):
    outputs, split = chain.validation_image_outputs, chain.validation_roles
    assert sorted(outputs["image_id"].tolist()) == sorted(split["image_id"].tolist())
    pseudo = split.set_index("image_id").loc[outputs["image_id"].numpy(), "role"].to_numpy()
    importance = outputs["importance_gt"].numpy()
    assert np.isnan(importance[pseudo == "pseudo_unseen"]).all()  # no output for them
    assert np.isfinite(importance[pseudo != "pseudo_unseen"]).all()
    assert chain.validation_reference_cache.gram.shape[0] == 16  # reference_max_images


def test_choice_names_the_best_candidate_and_every_gamma(chain):
    choice, table = chain.validation_choice, chain.validation_results

    # 2 mappers x (configured + the paper's + 2 least-squares ridges) x 2 logit matchings
    # x 2 fusion weights
    assert len(table) == choice["n_candidates"] == 32
    assert table["candidate"].all()  # `none` is in the grid: the faithful row is one too
    # a logit-matched candidate shares its transfer (and so its loss) with the unmatched one
    matched = table[table["niwt"].str.contains("seen_negatives")]
    assert len(matched) == 16
    for _, row in matched.iterrows():
        plain = json.dumps(
            {k: v for k, v in json.loads(row["niwt"]).items() if k != "logit_matching"},
            sort_keys=True,
        )
        twin = table[(table["mapper"] == row["mapper"]) & (table["niwt"] == plain)]
        assert (twin["transfer_loss"] == row["transfer_loss"]).all() and len(twin) == 2
    assert table["chosen"].sum() == 1 and table["chosen_ensemble"].sum() == 1
    best = table[table["chosen"]].iloc[0]
    # niwt_tuned: the best of NIWT's rows alone (fusion 0)
    assert best["fusion"] == 0
    assert best["criterion"] == table.loc[table["fusion"] == 0, "criterion"].max()
    assert best["criterion"] == pytest.approx(0.5 * (best["H_calibrated"] + best["ausuc"]))
    assert choice["mapper"] == json.loads(best["mapper"])
    assert choice["niwt_tuned"] == json.loads(best["niwt"])
    assert set(choice["methods"]) == METHODS
    assert choice["methods"]["niwt_tuned"]["gamma"] == pytest.approx(best["gamma"])
    # the ensemble: the best fusion weight of those same rows
    ensemble = table[table["chosen_ensemble"]].iloc[0]
    same = table[(table["mapper"] == best["mapper"]) & (table["niwt"] == best["niwt"])]
    assert ensemble["criterion"] == same["criterion"].max() >= best["criterion"]
    assert choice["ensemble_niwt_tuned_eszsl"] == {"fusion": ensemble["fusion"]}
    assert choice["methods"]["ensemble_niwt_tuned_eszsl"]["gamma"] == pytest.approx(
        ensemble["gamma"]
    )
    # the configured settings, unmatched and matched, per mapper; the faithful row per mapper
    assert table["configured"].sum() == 4 and table["paper"].sum() == 2
    paper = table[table["paper"] & (table["mapper"] == best["mapper"])].iloc[0]
    assert paper["fusion"] == 0
    assert choice["methods"]["niwt_paper"]["H_calibrated"] == pytest.approx(paper["H_calibrated"])
    assert choice["niwt"]["max_steps"] == 20  # the configured settings, transfer.niwt
    # the paper's AWA2 settings (the default transfer.paper), never the configured ones
    assert choice["niwt_paper"] == {**choice["niwt_paper"], "lr": 1e-3, "lam": 1e-3}
    assert choice["niwt_paper"]["batch_size"] == 32 and choice["niwt_paper"]["patience"] == 40
    assert json.loads(paper["niwt"])["reg_reduction"] == "half_sum"
    for values in choice["methods"].values():
        assert 0 <= values["H"] <= values["H_calibrated"] <= 1  # gamma maximises H there
        assert np.isfinite(values["gamma"])
    assert set(chain.validation_metrics) == {
        f"{m}.{k}" for m in METHODS for k in ("H_calibrated", "ausuc")
    }


KEYS = ("lr", "epochs")


def test_the_baselines_are_tuned_on_the_same_problem_by_the_same_criterion(chain, params_for):
    choice = chain.validation_choice
    candidates = choice["baseline_candidates"]
    grid = params_for("validation").search().baseline_grid
    assert [c["ridge_alpha"] for c in candidates["weight_regression"]] == grid["ridge_alpha"]
    pairs = [(g, lam) for g in grid["eszsl_gamma"] for lam in grid["eszsl_lambda"]]
    assert [(c["eszsl_gamma"], c["eszsl_lambda"]) for c in candidates["eszsl"]] == pairs
    assert [c["sae_lambda"] for c in candidates["sae"]] == grid["sae_lambda"]
    for method, table in candidates.items():
        best = max(table, key=lambda c: c["criterion"])  # first of the ties, as best_index
        for c in table:
            assert c["criterion"] == pytest.approx(0.5 * (c["H_calibrated"] + c["ausuc"]))
        # the method's validation metrics are its chosen candidate's
        assert choice["methods"][method]["H_calibrated"] == pytest.approx(best["H_calibrated"])
        assert choice["methods"][method]["gamma"] == pytest.approx(best["gamma"])

    def pick(method, key):
        return max(candidates[method], key=lambda c: c["criterion"])[key]

    assert choice["baselines"] == {
        "ridge_alpha": pick("weight_regression", "ridge_alpha"),
        "eszsl_gamma": pick("eszsl", "eszsl_gamma"),
        "eszsl_lambda": pick("eszsl", "eszsl_lambda"),
        "sae_lambda": pick("sae", "sae_lambda"),
        **{f"{loss}_{key}": pick(loss, f"{loss}_{key}") for loss in LOSSES for key in KEYS},
        "fclswgan_n_synthetic": pick("fclswgan", "fclswgan_n_synthetic"),
    }
    # the trained baselines: every learning rate, a model after each epoch count of the grid
    for loss in LOSSES:
        tried = [(c[f"{loss}_lr"], c[f"{loss}_epochs"]) for c in candidates[loss]]
        assert tried == [(lr, e) for lr in grid[f"{loss}_lr"] for e in grid[f"{loss}_epochs"]]
    assert [c["fclswgan_n_synthetic"] for c in candidates["fclswgan"]] == [10, 30]
    assert set(candidates) == {"weight_regression", "eszsl", *LOSSES, "sae", "fclswgan"}
    # the grid does have a spread, so the choice is not a formality
    assert len({round(c["criterion"], 6) for c in candidates["eszsl"]}) > 5


def test_a_configured_baseline_setting_is_the_only_one_tried(chain, params_for):
    transfer = params_for("transfer", {"baselines": {"ridge_alpha": 3.0, "eszsl_lambda": 0.1}})
    choice, *_ = select_hyperparameters(
        chain.validation_image_outputs,
        chain.validation_reference_cache,
        chain.validation_backbone,
        chain.validation_roles,
        chain.domain_knowledge,
        params_for("validation", {"mapper_grid": {"weight_decay": [0.0]}}),
        params_for("mapping"),
        transfer,
    )
    candidates = choice["baseline_candidates"]
    assert [c["ridge_alpha"] for c in candidates["weight_regression"]] == [3.0]
    assert {c["eszsl_lambda"] for c in candidates["eszsl"]} == {0.1}
    assert choice["baselines"]["ridge_alpha"] == 3.0
    assert choice["baselines"]["eszsl_lambda"] == 0.1


def _select(chain, params_for, overrides):
    return select_hyperparameters(
        chain.validation_image_outputs,
        chain.validation_reference_cache,
        chain.validation_backbone,
        chain.validation_roles,
        chain.domain_knowledge,
        params_for("validation", overrides),
        params_for("mapping"),
        params_for("transfer"),
    )


def test_duplicate_candidates_are_scored_once(chain, params_for):
    grid = {
        "mapper_grid": {"weight_decay": [0.0]},
        "niwt_grid": {
            "solver": ["least_squares"],
            "init": ["seen_centred", "ridge"],
            "lr": [0.1, 0.2],
            "ls_alpha": [0.01],
            "anchor": ["mean_seen"],
            "logit_matching": ["none"],
        },
        "fusion_grid": [0.0],
    }
    choice, table, _, _ = _select(chain, params_for, grid)

    # init and lr do not change least-squares rows: configured + the paper's + one
    # least-squares candidate
    assert len(table) == 3
    assert table["configured"].tolist() == [True, False, False]
    assert table["paper"].tolist() == [False, True, False]


def test_matching_applies_to_every_candidate_and_not_to_the_faithful_row(chain, params_for):
    grid = {
        "mapper_grid": {"weight_decay": [0.0]},
        "niwt_grid": {
            "solver": ["least_squares"],
            "init": ["seen_centred"],
            "ls_alpha": [0.01],
            "anchor": ["mean_seen"],
            "logit_matching": ["seen_negatives"],
        },
        "fusion_grid": [0.0, 1.0],
    }
    choice, table, _, _ = _select(chain, params_for, grid)

    # configured, the paper's and one least-squares setting, each matched, x 2 fusion
    # weights; then the faithful paper row, unmatched, alone and no candidate
    assert len(table) == 7 and choice["n_candidates"] == 6
    settings = [json.loads(n) for n in table["niwt"]]
    assert [s.get("logit_matching") for s in settings] == 6 * ["seen_negatives"] + [None]
    assert table["candidate"].tolist() == 6 * [True] + [False]
    assert table["configured"].tolist() == [True, False, False, False, False, False, False]
    faithful = table.iloc[-1]
    assert faithful["paper"] and faithful["fusion"] == 0 and not faithful["chosen"]
    assert not table["paper"].iloc[:-1].any()  # the matched paper settings are not faithful
    assert choice["niwt_tuned"]["logit_matching"] == "seen_negatives"
    assert choice["methods"]["niwt_paper"]["H_calibrated"] == pytest.approx(
        faithful["H_calibrated"]
    )
    # the matched paper settings share the faithful row's transfer
    assert table.iloc[2]["transfer_loss"] == faithful["transfer_loss"]


def test_selection_is_deterministic(chain, params_for):
    choice, table, _, rows = _select(chain, params_for, {})
    assert choice == chain.validation_choice
    # the chosen niwt_tuned rows of the pseudo-unseen classes, for the explanations' choice
    tuned = rows["niwt_tuned"]
    assert tuned.class_ids.tolist() == choice["pseudo_unseen_class_ids"]
    np.testing.assert_array_equal(tuned.weight, chain.validation_niwt_rows["niwt_tuned"].weight)
    columns = [c for c in table.columns if c != "transfer_seconds"]
    assert table[columns].equals(chain.validation_results[columns])


def test_too_many_pseudo_unseen_classes_are_refused(chain, params_for):
    with pytest.raises(InputError, match=r"at least two must stay seen"):
        split_for_validation(
            chain.images,
            chain.classes,
            chain.backbone_roles,
            params_for("validation", {"pseudo_unseen_classes": len(chain.seen_ids) - 1}),
        )


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"criterion": "accuracy"}, r"criterion"),
        ({"mapper_grid": {"learning_rate": [0.1]}}, r"learning_rate"),
        ({"niwt_grid": {"solver": ["newton"]}}, r"solver"),
        ({"niwt_grid": {"fusion": [1.0]}}, r"fusion_grid"),
        ({"fusion_grid": [-1.0]}, r"fusion_grid"),
        ({"pseudo_unseen_classes": 0}, r"pseudo_unseen_classes"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key(params_for, bad, key):
    with pytest.raises((ValidationError, InputError), match=key):
        split_for_validation(None, None, None, params_for("validation", bad))
