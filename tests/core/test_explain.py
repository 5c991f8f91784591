"""Neuron names, textual explanations and their scores, on hand-made and planted data."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import BackboneSpec, build_backbone, cut_at_layer
from niwt_pipeline.core.data.world import COLOURS, PATTERNS, SHAPES, SIZES, attribute_name
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain import (
    NAME_COLUMNS,
    Explanation,
    NamingDiversity,
    blend_scores,
    choose_evidence,
    class_prior_ranking,
    class_prototypes,
    class_test_images,
    contrast_and_diversity_by_group,
    contrastive_scores,
    contrastive_share,
    departs_from_prototype,
    dimension_names,
    explanations_frame,
    fit_attribute_predictor,
    naming_diversity,
    neuron_name_agreement,
    neuron_names_from_covariation,
    neuron_names_from_mapper,
    precision_at_k,
    precision_by_group,
    present_in_class,
    random_contrastive_share,
    random_naming_diversity,
    random_precision_at_k,
    ranked_explanations,
    row_importance_on_images,
    runner_up_columns,
    score_explanations,
    standardise_rows,
    textual_explanations,
    visual_explanations,
)
from niwt_pipeline.core.importance import extract
from niwt_pipeline.core.mapper import InverseMap, LinearMapper, fit_inverse_map
from niwt_pipeline.core.transfer import reference_gram

torch.set_num_threads(1)

NAMES = ["shape::circle", "colour::red", "size::large", "pattern::dots"]


def _table(rows: list[tuple[int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(NAME_COLUMNS))


# ---------------------------------------------------------------------------------------
# Dimension names
# ---------------------------------------------------------------------------------------
def test_dimension_names_keep_real_names():
    assert dimension_names(pd.Index(NAMES)) == NAMES


@pytest.mark.parametrize(
    "columns",
    [pd.RangeIndex(3), ["0", "1", "2"], ["a", "", "c"], ["a", "a", "b"], [0, "x", "y"], 3],
)
def test_dimension_names_fall_back_and_log(columns, caplog):
    with caplog.at_level(logging.INFO, logger="niwt_pipeline.core.explain"):
        assert dimension_names(columns) == ["dim_000", "dim_001", "dim_002"]
    assert "dim_000..dim_002" in caplog.text


def test_dimension_names_width_grows_with_count():
    names = dimension_names(1200)
    assert names[0] == "dim_0000" and names[-1] == "dim_1199"


# ---------------------------------------------------------------------------------------
# Neuron names
# ---------------------------------------------------------------------------------------
WEIGHT = np.array(
    [
        [0.1, 0.9, -2.0, 0.5],  # neuron 0: red (0.9), then dots (0.5)
        [3.0, 0.0, 1.0, 1.0],  # neuron 1: circle, then the tie large/dots by index
    ]
)


def test_neuron_names_from_hand_set_weight():
    table = neuron_names_from_mapper(WEIGHT, NAMES, top_k=2)
    expected = _table(
        [
            (0, 1, "colour::red", 0.9),
            (0, 2, "pattern::dots", 0.5),
            (1, 1, "shape::circle", 3.0),
            (1, 2, "size::large", 1.0),
        ]
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert table["neuron"].dtype == np.int64 and table["rank"].dtype == np.int64


def test_neuron_names_from_standardising_mapper_use_the_raw_scale():
    mapper = LinearMapper(4, 2)
    with torch.no_grad():
        mapper.linear.weight.copy_(torch.tensor(WEIGHT, dtype=torch.float32))
        mapper.in_mean.copy_(torch.tensor([5.0, 5.0, 5.0, 5.0]))  # shifts the bias only
        mapper.in_scale.copy_(torch.tensor([1.0, 0.1, 1.0, 0.25]))
    table = neuron_names_from_mapper(mapper, NAMES, top_k=2)
    # scores W / in_scale: neuron 0 -> [0.1, 9, -2, 2]; neuron 1 -> [3, 0, 1, 4]
    assert table["dimension"].tolist() == [
        "colour::red",
        "pattern::dots",
        "pattern::dots",
        "shape::circle",
    ]
    np.testing.assert_allclose(table["score"], [9.0, 2.0, 4.0, 3.0], rtol=1e-6)


def test_neuron_names_from_mapper_bad_inputs():
    with pytest.raises(ValueError, match=r"3 names for the 4 dimensions of mapper_weight \(2, 4\)"):
        neuron_names_from_mapper(WEIGHT, NAMES[:3])
    with pytest.raises(ValueError, match=r"top_k: expected an integer in \[1, 4\], got 5"):
        neuron_names_from_mapper(WEIGHT, NAMES, top_k=5)
    with pytest.raises(ValueError, match=r"expected a 2-d array, got shape \(4,\)"):
        neuron_names_from_mapper(WEIGHT[0], NAMES)


def test_covariation_exact_pearson_on_a_hand_case():
    importance = np.array([[1.0], [2.0], [3.0], [4.0]])
    dk = np.array(
        [[1.0, 4.0, 1.0, 1.0], [2.0, 3.0, 1.0, 2.0], [3.0, 2.0, 1.0, 4.0], [4.0, 1.0, 1.0, 3.0]]
    )
    table = neuron_names_from_covariation(importance, dk, list("abcd"), top_k=4)
    # corr with a = 1, b = -1, c (constant) = 0, d = 4 / 5
    expected = _table([(0, 1, "a", 1.0), (0, 2, "d", 0.8), (0, 3, "c", 0.0), (0, 4, "b", -1.0)])
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_covariation_picks_the_planted_dimension():
    rng = np.random.default_rng(0)
    dk = rng.random((200, 6))
    importance = rng.normal(size=(200, 3))
    importance[:, 1] += 3.0 * dk[:, 4]
    importance[:, 2] -= 3.0 * dk[:, 0]  # a negative association does not name the neuron
    table = neuron_names_from_covariation(importance, dk, [f"d{i}" for i in range(6)], top_k=1)
    assert table.loc[table["neuron"] == 1, "dimension"].item() == "d4"
    assert table.loc[table["neuron"] == 1, "score"].item() > 0.5
    assert table.loc[table["neuron"] == 2, "dimension"].item() != "d0"


def test_covariation_l2_normalise_divides_rows_first():
    rng = np.random.default_rng(1)
    importance = rng.normal(size=(30, 4))
    dk = rng.random((30, 5))
    names = list("abcde")
    unit = importance / np.linalg.norm(importance, axis=1, keepdims=True)
    pd.testing.assert_frame_equal(
        neuron_names_from_covariation(importance, dk, names, l2_normalise=True),
        neuron_names_from_covariation(unit, dk, names),
    )


def test_covariation_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"importance \(5, 2\) and dk_per_image \(4, 3\)"):
        neuron_names_from_covariation(np.ones((5, 2)), np.ones((4, 3)), list("abc"))
    with pytest.raises(ValueError, match="at least two images"):
        neuron_names_from_covariation(np.ones((1, 2)), np.ones((1, 3)), list("abc"))


def test_agreement_and_random_baseline():
    a = _table([(0, 1, "a", 1.0), (0, 2, "b", 0.5), (1, 1, "c", 1.0), (1, 2, "d", 0.5)])
    b = _table([(0, 1, "c", 1.0), (0, 2, "a", 0.5), (1, 1, "d", 1.0), (1, 2, "c", 0.5)])
    result = neuron_name_agreement(a, b, 2, n_dimensions=5)
    assert result.agreement == 0.75  # (1/2 + 2/2) / 2
    assert result.random_baseline == 0.4  # k / A
    assert result.as_dict() == {
        "agreement": 0.75,
        "random_baseline": 0.4,
        "top_k": 2,
        "n_dimensions": 5,
        "n_neurons": 2,
    }
    assert neuron_name_agreement(a, b, 1, n_dimensions=5).agreement == 0.0


def test_random_baseline_matches_sampled_overlap():
    rng = np.random.default_rng(0)
    k, n_dims = 3, 10
    overlaps = [
        len(set(rng.choice(n_dims, k, replace=False)) & set(rng.choice(n_dims, k, replace=False)))
        for _ in range(20000)
    ]
    table = _table([(0, r, f"x{r}", 0.0) for r in range(1, k + 1)])
    baseline = neuron_name_agreement(table, table, k, n_dimensions=n_dims).random_baseline
    assert np.mean(overlaps) / k == pytest.approx(baseline, abs=0.01)


def test_agreement_bad_tables():
    a = _table([(0, 1, "a", 1.0), (0, 2, "b", 0.5)])
    b = _table([(1, 1, "a", 1.0), (1, 2, "b", 0.5)])
    with pytest.raises(ValueError, match="different neurons"):
        neuron_name_agreement(a, b, 2, n_dimensions=4)
    with pytest.raises(ValueError, match="fewer than top_k = 3"):
        neuron_name_agreement(a, a, 3, n_dimensions=4)
    with pytest.raises(ValueError, match="missing columns"):
        neuron_name_agreement(a.drop(columns="rank"), a, 1, n_dimensions=4)


# ---------------------------------------------------------------------------------------
# Textual explanations and their scores
# ---------------------------------------------------------------------------------------
def _hand_inverse_map() -> InverseMap:
    """importance (K = 2) -> dk (A = 4) as ``importance @ weight`` (no scaling)."""
    return InverseMap(
        x_mean=torch.zeros(2, dtype=torch.float64),
        x_scale=torch.ones(2, dtype=torch.float64),
        weight=torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 4.0]], dtype=torch.float64),
        bias=torch.zeros(4, dtype=torch.float64),
        l2_normalise=False,
    )


def test_textual_explanation_text_and_scores():
    importance = np.array([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    explanations = textual_explanations(
        importance, _hand_inverse_map(), NAMES, ["red_circle", "dotted_thing", "mixed"], top_k=3
    )
    # predicted dk: [3, 2, 1, 0], [0, 0.5, 1, 2], [3, 3, 3, 4]
    first = explanations[0]
    assert first == Explanation(
        image=0,
        predicted_class="red_circle",
        dimensions=["shape::circle", "colour::red", "size::large"],
        dimension_ids=[0, 1, 2],
        scores=[3.0, 2.0, 1.0],
        text="predicted red_circle because: shape::circle, colour::red, size::large",
    )
    assert explanations[1].text == (
        "predicted dotted_thing because: pattern::dots, size::large, colour::red"
    )
    assert explanations[2].dimension_ids == [3, 0, 1]  # ties keep the lower index first
    frame = explanations_frame(explanations)
    assert frame.shape == (9, 6)
    assert frame.loc[3, ["image", "rank", "dimension", "score"]].tolist() == [
        1,
        1,
        "pattern::dots",
        2.0,
    ]


def test_textual_explanations_empty_and_bad_shapes(caplog):
    with caplog.at_level(logging.WARNING, logger="niwt_pipeline.core.explain"):
        assert textual_explanations(np.zeros((0, 2)), _hand_inverse_map(), NAMES, []) == []
    assert "no images to explain" in caplog.text
    assert explanations_frame([]).columns.tolist()[:2] == ["image", "predicted_class"]
    with pytest.raises(ValueError, match=r"importance_for_predicted \(1, 3\) does not fit"):
        textual_explanations(np.ones((1, 3)), _hand_inverse_map(), NAMES, ["c"])
    with pytest.raises(ValueError, match=r"class_names_pred has 2 names.*\(1, 2\)"):
        textual_explanations(np.ones((1, 2)), _hand_inverse_map(), NAMES, ["c", "d"])
    with pytest.raises(ValueError, match="dk_names: 3 names for the 4 dimensions"):
        textual_explanations(np.ones((1, 2)), _hand_inverse_map(), NAMES[:3], ["c"])


TRUTH = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 1, 0, 0]])
EXPLAINED = [[0, 2, 4], [4, 3, 1], [3, 4, 0]]


def test_precision_at_k_hand_case():
    # per image, hits among the first k: k=1 -> 1, 1, 0; k=2 -> 2, 1, 0; k=3 -> 2, 2, 1
    assert precision_at_k(EXPLAINED, TRUTH, 1) == pytest.approx(2 / 3)
    assert precision_at_k(EXPLAINED, TRUTH, 2) == pytest.approx(3 / 6)
    assert precision_at_k(EXPLAINED, TRUTH, 3) == pytest.approx(5 / 9)


def test_random_precision_is_the_share_of_positives():
    assert random_precision_at_k(TRUTH, 2) == pytest.approx(7 / 15)
    rng = np.random.default_rng(0)
    draws = [[list(rng.choice(5, 2, replace=False)) for _ in range(3)] for _ in range(4000)]
    sampled = np.mean([precision_at_k(d, TRUTH, 2) for d in draws])
    assert sampled == pytest.approx(7 / 15, abs=0.01)


def test_precision_bad_inputs_and_empty(caplog):
    with pytest.raises(ValueError, match=r"2 explanations for true_attributes of shape \(3, 5\)"):
        precision_at_k(EXPLAINED[:2], TRUTH, 1)
    with pytest.raises(ValueError, match="fewer than k = 3"):
        precision_at_k([[0, 1], [0, 1], [0, 1]], TRUTH, 3)
    with pytest.raises(ValueError, match=r"must be in \[0, 5\), got 0..7"):
        precision_at_k([[0], [7], [1]], TRUTH, 1)
    with pytest.raises(ValueError, match="0/1"):
        precision_at_k(EXPLAINED, TRUTH * 2, 1)
    with caplog.at_level(logging.WARNING, logger="niwt_pipeline.core.explain"):
        assert math.isnan(precision_at_k([], np.zeros((0, 5)), 2))
        assert math.isnan(random_precision_at_k(np.zeros((0, 5)), 2))
    assert "no images" in caplog.text


def test_score_explanations_splits_correct_and_incorrect():
    scores = score_explanations(EXPLAINED, TRUTH, ["a", "b", "c"], ["a", "x", "c"], k=2)
    assert scores.as_dict() == pytest.approx(
        {
            "k": 2,
            "precision": 0.5,
            "precision_correct": 0.5,  # images 0 and 2: (2 + 0) / 4
            "precision_incorrect": 0.5,  # image 1: 1 / 2
            "random_precision": 7 / 15,
            "n_correct": 2,
            "n_incorrect": 1,
        }
    )
    all_right = score_explanations(EXPLAINED, TRUTH, [1, 2, 3], [1, 2, 3], k=1)
    assert math.isnan(all_right.precision_incorrect) and all_right.n_incorrect == 0
    with pytest.raises(ValueError, match=r"predicted \(2,\) and labels \(3,\)"):
        score_explanations(EXPLAINED, TRUTH, [1, 2], [1, 2, 3])


def test_planted_linear_world_explanations_recover_true_attributes():
    """importance = s * M dk + noise on one-hot attribute groups; the inverse map is fitted."""
    rng = np.random.default_rng(0)
    groups = {"shape": SHAPES, "colour": COLOURS, "pattern": PATTERNS, "size": SIZES}
    names = [attribute_name(g, v) for g, values in groups.items() for v in values]
    n_images, n_dims, n_neurons = 800, len(names), 48
    truth = np.zeros((n_images, n_dims))
    start = 0
    for values in groups.values():
        truth[np.arange(n_images), start + rng.integers(len(values), size=n_images)] = 1.0
        start += len(values)
    m = rng.normal(size=(n_neurons, n_dims))
    scale = rng.uniform(0.5, 2.0, size=(n_images, 1))
    importance = scale * (truth @ m.T) + 0.5 * rng.normal(size=(n_images, n_neurons))
    train, test = slice(0, 600), slice(600, None)

    inverse = fit_inverse_map(importance[train], truth[train], ridge_alpha=1.0)
    classes = ["planted"] * 200
    explanations = textual_explanations(importance[test], inverse, names, classes, top_k=3)
    precision = precision_at_k(explanations, truth[test], 3)
    chance = random_precision_at_k(truth[test], 3)
    assert chance == pytest.approx(4 / 23)
    assert precision > 0.9 > 4 * chance

    # Neuron names: the covariation naming agrees with the planted map's far above chance.
    from_map = neuron_names_from_mapper(m, names, top_k=3)
    from_data = neuron_names_from_covariation(importance[train], truth[train], names, top_k=3)
    agreement = neuron_name_agreement(from_map, from_data, 3, n_dimensions=n_dims)
    assert agreement.agreement > 0.5 > 3 * agreement.random_baseline


# ---------------------------------------------------------------------------------------
# Importance of arbitrary rows on images, class selection, visual explanations
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cut():
    torch.manual_seed(0)
    return cut_at_layer(build_backbone("small_cnn", num_classes=4).eval(), "block3")


def test_row_importance_matches_extract_and_the_gram(small_cut):
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 1])
    loader = DataLoader(TensorDataset(x, labels), batch_size=5)
    expected = extract(small_cut, loader, targets="gt", progress=False).importance_gt
    seen_rows = small_cut.classifier.weight[labels].detach()
    alpha = row_importance_on_images(small_cut, x, seen_rows)
    torch.testing.assert_close(alpha, torch.from_numpy(expected), rtol=1e-5, atol=1e-6)

    new_rows = torch.randn(5, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        gram = reference_gram(small_cut.head, small_cut.stem(x), mode="vjp")
    torch.testing.assert_close(
        row_importance_on_images(small_cut, x, new_rows),
        torch.einsum("nkd,nd->nk", gram, new_rows),
        rtol=1e-4,
        atol=1e-6,
    )


def test_row_importance_shape_mismatch(small_cut):
    with pytest.raises(ValueError, match=r"rows: expected \(2, 128\) or \(128,\).*got \(2, 64\)"):
        row_importance_on_images(small_cut, torch.zeros(2, 3, 32, 32), torch.zeros(2, 64))


def test_class_without_test_images_gives_empty_result(caplog):
    images = pd.DataFrame(
        {
            "image_id": [0, 1, 2],
            "path": ["a.png", "b.png", "c.png"],
            "class_id": [0, 0, 1],
            "split": ["test_unseen", "trainval", "trainval"],
        }
    )
    assert class_test_images(images, 0)["path"].tolist() == ["a.png"]
    with caplog.at_level(logging.WARNING, logger="niwt_pipeline.core.explain"):
        empty = class_test_images(images, 1)
        assert visual_explanations(None, [], np.zeros(128), None) == []  # type: ignore[arg-type]
    assert empty.empty and list(empty.columns) == list(images.columns)
    assert "class 1 has no images" in caplog.text


def _spec() -> BackboneSpec:
    return BackboneSpec("small_cnn", "block3", 32, [0.5] * 3, [0.5] * 3, [0, 1, 2, 3])


def test_visual_explanations_overlay_each_file(small_cut, tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 32), colour).save(path)
        paths.append(str(path))
    rows = small_cut.classifier.weight[:2].detach()
    out = visual_explanations(small_cut, paths, rows, _spec(), alpha=0.0)
    assert [img.size for img in out] == [(32, 32), (32, 32)]
    assert tuple(np.asarray(out[0])[5, 5]) == (255, 0, 0)  # alpha 0: the image the model saw


def test_visual_explanations_missing_file_names_it(small_cut, tmp_path):
    missing = tmp_path / "gone.png"
    with pytest.raises(InputError, match="gone.png: image file not found"):
        visual_explanations(small_cut, [str(missing)], np.zeros(128), _spec())


# ---------------------------------------------------------------------------------------
# Explanations grounded in the image, contrastive explanations, and their measures
# ---------------------------------------------------------------------------------------
Z3 = math.sqrt(1.5)  # z-score of the ends of (a, a + d, a + 2d)


def test_standardise_rows_exact_and_flat_rows_are_zero():
    out = standardise_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert out == pytest.approx(np.array([[-Z3, 0.0, Z3], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="2-d"):
        standardise_rows(np.ones(3))


def test_blend_scores_exact():
    prior, evidence = np.array([[3.0, 1.0, 2.0]]), np.array([[0.0, 0.0, 9.0]])
    z_prior = np.array([Z3, -Z3, 0.0])
    z_evidence = np.array([-1.0, -1.0, 2.0]) / math.sqrt(2.0)
    assert blend_scores(prior, evidence, 0.0)[0] == pytest.approx(z_prior)
    assert blend_scores(prior, evidence, 1.0)[0] == pytest.approx(z_evidence)
    assert blend_scores(prior, evidence, 0.25)[0] == pytest.approx(
        0.75 * z_prior + 0.25 * z_evidence
    )
    with pytest.raises(ValueError, match=r"weight: expected a number in \[0, 1\], got 1.5"):
        blend_scores(prior, evidence, 1.5)
    with pytest.raises(ValueError, match=r"prior \(1, 3\) and evidence \(1, 2\)"):
        blend_scores(prior, evidence[:, :2], 0.5)


def test_contrastive_scores_exact():
    out = contrastive_scores(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0]]), 2.0)
    assert out.tolist() == [[1.0, 6.0]]  # p + 2 (p - r)
    assert contrastive_scores(np.ones((1, 2)), np.zeros((1, 2)), 0.0).tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="contrast_weight: expected a number >= 0"):
        contrastive_scores(np.ones((1, 2)), np.ones((1, 2)), -1.0)


def test_runner_up_columns():
    scores = np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    assert runner_up_columns(scores, np.array([1, 0, 2])).tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match="at least two classes"):
        runner_up_columns(np.ones((2, 1)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"predicted \(2,\) does not fit scores \(3, 3\)"):
        runner_up_columns(scores, np.array([0, 1]))


def test_fit_attribute_predictor_exact():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = 2.0 * x + 1.0
    exact = fit_attribute_predictor(x, y, ridge_alpha=0.0)
    assert exact.predict(np.array([[4.0]]))[0, 0] == pytest.approx(9.0)
    # standardised x at 3 is 1.5 / sqrt(1.25); its ridge slope sum(xs * yc) / (sum(xs^2) + 4)
    shrunk = fit_attribute_predictor(x, y, ridge_alpha=4.0)
    assert shrunk.predict(np.array([[3.0]]))[0, 0] == pytest.approx(4.0 + 1.5)
    with pytest.raises(ValueError, match=r"features \(4, 1\) and targets \(3, 1\)"):
        fit_attribute_predictor(x, y[:3])
    with pytest.raises(ValueError, match="ridge_alpha"):
        fit_attribute_predictor(x, y, ridge_alpha=-1.0)
    with pytest.raises(ValueError, match="do not fit the attribute predictor"):
        exact.predict(np.ones((1, 2)))


def test_ranked_explanations_text_and_scores():
    out = ranked_explanations(np.array([[0.5, 2.0, 1.0, 2.0]]), NAMES, ["thing"], top_k=2)
    assert out[0].dimension_ids == [1, 3] and out[0].scores == [2.0, 2.0]
    assert out[0].text == "predicted thing because: colour::red, pattern::dots"
    with pytest.raises(ValueError, match="class_names_pred has 2 names"):
        ranked_explanations(np.ones((1, 4)), NAMES, ["a", "b"])


def test_choose_evidence_exact_on_a_hand_case():
    prior = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    evidence = np.array([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    truth = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # weight 0 names dim 0 (right for image 1), weight 1 dims 1 and 2 (right for image 0);
    # weight 0.5: image 0 -> dim 1 (0.259, 0.707, -0.966), image 1 -> dim 0 (0.259, -0.354,
    # 0.095): both right
    chosen = choose_evidence(
        prior,
        {"e": evidence},
        truth,
        [1.0, 0.5, 0.0],
        k=1,
        subsets={"first": np.array([True, False]), "none": np.array([False, False])},
    )
    assert (chosen.evidence, chosen.weight, chosen.precision) == ("e", 0.5, 1.0)
    table = chosen.table
    assert table["weight"].tolist() == [0.0, 0.5, 1.0]
    assert table["precision_at_k"].tolist() == [0.5, 1.0, 0.5]
    assert table["precision_at_k_first"].tolist() == [0.0, 1.0, 1.0]
    assert table["precision_at_k_none"].isna().all()
    assert table["chosen"].tolist() == [False, True, False]
    tie = choose_evidence(prior, {"e": evidence}, truth, [1.0, 0.0], k=1)
    assert tie.weight == 0.0  # ties go to the smaller weight (nearer the class prior)
    with pytest.raises(ValueError, match="no validation images"):
        choose_evidence(prior[:0], {"e": evidence[:0]}, truth[:0], [0.5], k=1)
    with pytest.raises(ValueError, match="weights: expected a number in"):
        choose_evidence(prior, {"e": evidence}, truth, [2.0], k=1)


PRESENT_PRED = np.array([[1, 1, 0], [0, 1, 1]])
PRESENT_RUNNER_UP = np.array([[1, 0, 0], [0, 0, 1]])


def test_contrastive_share_exact():
    named = [[0, 1], [2, 0]]
    # image 0: dim 0 shared, dim 1 differs -> 1/2; image 1: dims 2 and 0 shared -> 0
    assert contrastive_share(named, PRESENT_PRED, PRESENT_RUNNER_UP, 2) == pytest.approx(0.25)
    assert contrastive_share(named, PRESENT_PRED, PRESENT_RUNNER_UP, 1) == 0.0
    assert contrastive_share([[1, 0], [1, 2]], PRESENT_PRED, PRESENT_RUNNER_UP, 1) == 1.0
    # random naming: each image has 1 differing dimension of 3
    assert random_contrastive_share(PRESENT_PRED, PRESENT_RUNNER_UP) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        contrastive_share([[0, 5], [0, 1]], PRESENT_PRED, PRESENT_RUNNER_UP, 2)
    with pytest.raises(ValueError, match="must agree"):
        contrastive_share(named, PRESENT_PRED, PRESENT_RUNNER_UP[:, :2], 2)


def test_naming_diversity_exact():
    named = [[0, 1], [0, 2], [1, 0]]
    two = naming_diversity(named, NAMES, 2)
    assert two == NamingDiversity(3, 3, "shape::circle", 1.0)
    one = naming_diversity(named, NAMES, 1)
    assert (one.n_distinct, one.top_attribute, one.top_attribute_share) == (
        2,
        "shape::circle",
        pytest.approx(2 / 3),
    )


def test_random_naming_diversity():
    # 2 explanations of 2 of 4 dimensions: E[distinct] = 4 (1 - (1/2)^2) = 3; the most
    # frequent is named by both unless the two are disjoint (probability 1/6)
    expected = random_naming_diversity(2, 4, 2, seed=0, draws=4000)
    assert expected.n_distinct == pytest.approx(3.0)
    assert expected.top_attribute is None
    assert expected.top_attribute_share == pytest.approx(1 - 1 / 12, abs=0.01)
    single = random_naming_diversity(1, 4, 2)
    assert (single.n_distinct, single.top_attribute_share) == (pytest.approx(2.0), 1.0)


def test_class_prototypes_and_departing_images():
    attributes = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 0]])
    class_ids = np.array([7, 7, 7, 9, 9, 9])
    prototypes = class_prototypes(attributes, class_ids)
    assert prototypes.index.tolist() == [7, 9]
    assert prototypes.to_numpy().tolist() == [[True, False], [False, True]]
    departs = departs_from_prototype(attributes, class_ids, prototypes)
    assert departs.tolist() == [False, False, True, False, False, True]
    with pytest.raises(InputError, match=r"true class id\(s\) \[8\] have no domain knowledge"):
        departs_from_prototype(attributes[:1], np.array([8]), prototypes)


def test_present_in_class_and_class_prior_ranking():
    dk = pd.DataFrame([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], index=[10, 20, 30])
    assert present_in_class(dk).to_numpy().tolist() == [[True, False], [False, True]] + [
        [False, False]
    ]
    values = pd.DataFrame([[0.1, 0.9, 0.5], [0.7, 0.2, 0.1]], index=[10, 20])
    assert class_prior_ranking(values, np.array([20, 10]), 2).tolist() == [[0, 1], [1, 2]]
    with pytest.raises(InputError, match=r"predicted class id\(s\) \[5\]"):
        class_prior_ranking(values, np.array([5]), 2)


def _scored_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [0, 1, 2],
            "true_class_id": [10, 20, 20],
            "predicted_class_id": [10, 10, 20],
            "runner_up_class_id": [20, 20, 10],
            "true_seen": [True, False, False],
            "correct": [True, False, True],
            "dimension_id_1": [0, 1, 2],
            "dimension_id_2": [1, 2, 0],
        }
    )


def test_precision_by_group_with_departing_images_and_other_rankings():
    scored = _scored_frame()
    truth = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    dk = pd.DataFrame([[0.9, 0.5, 0.1], [0.1, 0.2, 0.8]], index=[10, 20])
    paper = np.array([[2, 1], [2, 1], [1, 0]])
    groups = precision_by_group(
        scored, truth, dk, 2, rankings={"inverse_map": paper}, departing=[False, True, True]
    )
    unseen = groups["unseen_departing"]  # images 1 (wrong) and 2 (right)
    assert unseen["n_images"] == 2 and unseen["n_correct"] == 1
    assert unseen["all"] == pytest.approx((2 + 2) / 4)  # named [1, 2] and [2, 0]
    assert unseen["class_prior"] == pytest.approx((1 + 1) / 4)  # priors [0, 1] and [2, 1]
    assert unseen["class_prior_incorrect"] == pytest.approx(1 / 2)
    assert unseen["inverse_map"] == pytest.approx((2 + 1) / 4)  # [2, 1] and [1, 0]
    assert unseen["inverse_map_correct"] == pytest.approx(1 / 2)
    assert unseen["random"] == pytest.approx(4 / 6)
    assert groups["seen_departing"] == {"n_images": 0}
    assert set(groups) == {"all", "seen", "unseen", "seen_departing", "unseen_departing"}


def test_contrast_and_diversity_by_group_exact():
    scored = _scored_frame()
    dk = pd.DataFrame([[0.9, 0.5, 0.1], [0.1, 0.6, 0.8]], index=[10, 20])
    # present (above the mean over the 2 classes): class 10 [1, 0, 0], class 20 [0, 1, 1]:
    # every dimension separates them
    rankings = {"explanation": scored[["dimension_id_1", "dimension_id_2"]].to_numpy()}
    contrast, diversity = contrast_and_diversity_by_group(
        scored, rankings, dk, ["a", "b", "c"], 2, seed=0
    )
    assert contrast["all"] == {"explanation": 1.0, "random": 1.0}
    assert diversity["unseen"]["explanation"] == {
        "n_explanations": 2,
        "n_distinct": 3,
        "top_attribute": "c",  # images 1 and 2 both name c (index 2); b once, a once
        "top_attribute_share": 1.0,
    }
    with pytest.raises(ValueError, match="runner_up_class_id"):
        contrast_and_diversity_by_group(
            scored.drop(columns="runner_up_class_id"), rankings, dk, ["a", "b", "c"], 2
        )
