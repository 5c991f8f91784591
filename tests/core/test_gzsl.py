"""The GZSL evaluation of every method, on a hand-made 4-image 3-class problem."""

from __future__ import annotations

import numpy as np
import pytest

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.gzsl import METRIC_KEYS, GZSLEvaluation, evaluate_methods, problem_for

# Columns: classes 4 and 9 are seen, class 2 is unseen.  Four test images.
CLASS_IDS = np.array([4, 9, 2])
SEEN = np.array([True, True, False])
IMAGE_IDS = np.array([100, 101, 102, 103])
LABELS = np.array([4, 9, 2, 2])

# Method "calibrated".  d = best seen score - best unseen score: the image is predicted as its
# best seen class while gamma < d, as the unseen class 2 when gamma > d.
#   img 100 (4)  [3, 1,   2  ]  best seen 4 (right)  d = 1
#   img 101 (9)  [0, 2,   0.5]  best seen 9 (right)  d = 1.5
#   img 102 (2)  [1, 0,   0.5]  best seen 4 (wrong)  d = 0.5
#   img 103 (2)  [0, 2.5, 0  ]  best seen 9 (wrong)  d = 2.5
# gamma 0: every image predicted seen: S = 1, U = 0, H = 0.
# gamma 0.75: img 102 switches to 2 (right): predicted 4, 9, 2, 9; S = 1, U = 1/2, H = 2/3;
#   per class: 4 -> 1, 9 -> 1, 2 -> 1/2.
# Curve over gamma: (-inf, .5) S 1 U 0; (.5, 1) S 1 U .5; (1, 1.5) S .5 U .5;
#   (1.5, 2.5) S 0 U .5; (2.5, inf) S 0 U 1.  AUSUC over (U, S): .5 * 1 = 0.5.
# ZSL top-1 (unseen images among unseen classes; only class 2): 1.
CALIBRATED = np.array([[3.0, 1.0, 2.0], [0.0, 2.0, 0.5], [1.0, 0.0, 0.5], [0.0, 2.5, 0.0]])
# Method "oracle": one-hot scores on the true class; every image right at gamma 0.
#   d = 1 for the seen images, -1 for the unseen ones: curve (S, U) = (1, 0), (1, 1), (0, 1).
ORACLE = np.eye(3)[[0, 1, 2, 2]]


@pytest.fixture(scope="module")
def evaluation() -> GZSLEvaluation:
    return evaluate_methods(
        {"calibrated": CALIBRATED, "oracle": ORACLE},
        IMAGE_IDS,
        LABELS,
        CLASS_IDS,
        SEEN,
        {"oracle": 0.0, "calibrated": 0.75},
    )


def test_metrics_by_hand(evaluation):
    assert evaluation.methods == ["calibrated", "oracle"]
    calibrated = evaluation.results["calibrated"]
    assert list(calibrated.metrics) == list(METRIC_KEYS)
    assert calibrated.metrics == pytest.approx(
        {
            "S": 1.0,
            "U": 0.0,
            "H": 0.0,
            "zsl_top1": 1.0,
            "ausuc": 0.5,
            "S_calibrated": 1.0,
            "U_calibrated": 0.5,
            "H_calibrated": 2 / 3,
            "gamma": 0.75,
        },
        abs=1e-12,
    )
    oracle = evaluation.results["oracle"].metrics
    assert oracle == {k: (0.0 if k == "gamma" else 1.0) for k in METRIC_KEYS}


def test_predictions_curves_and_per_class_accuracy_by_hand(evaluation):
    calibrated = evaluation.results["calibrated"]
    assert calibrated.method == "calibrated" and calibrated.gamma == 0.75
    assert calibrated.predicted.dtype == np.int64
    assert calibrated.predicted.tolist() == [4, 9, 2, 9]  # class ids, at gamma
    np.testing.assert_array_equal(calibrated.per_class_accuracy, [1.0, 1.0, 0.5])  # columns
    np.testing.assert_array_equal(calibrated.curve_s, [1.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(calibrated.curve_u, [0.0, 0.5, 0.5, 0.5, 1.0])
    assert calibrated.scores.dtype == np.float32
    np.testing.assert_array_equal(calibrated.scores, CALIBRATED.astype(np.float32))
    oracle = evaluation.results["oracle"]
    assert oracle.predicted.tolist() == LABELS.tolist()
    np.testing.assert_array_equal(oracle.per_class_accuracy, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(oracle.curve_s, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(oracle.curve_u, [0.0, 1.0, 1.0])


def test_evaluation_views(evaluation):
    assert evaluation.image_ids.tolist() == [100, 101, 102, 103]
    assert evaluation.class_ids.dtype == np.int64 and evaluation.seen.dtype == bool
    assert evaluation.label_columns.tolist() == [0, 1, 2, 2]
    assert evaluation.columns_of(np.array([2, 4, 9])).tolist() == [2, 0, 1]
    problem = evaluation.problem
    assert problem.unseen_columns.tolist() == [False, False, True]
    assert problem.image_is_unseen.tolist() == [False, False, True, True]
    percent = evaluation.metrics_percent()
    assert percent["calibrated"]["H_calibrated"] == pytest.approx(200 / 3)
    assert percent["calibrated"]["U_calibrated"] == 50.0
    assert percent["calibrated"]["gamma"] == 0.75  # score units, not percent


def test_class_without_test_images_has_nan_accuracy():
    # a fourth, seen column (class 7) without images
    scores = np.c_[ORACLE, np.zeros(4)]
    evaluation = evaluate_methods(
        {"oracle": scores},
        IMAGE_IDS,
        LABELS,
        [4, 9, 2, 7],
        [True, True, False, True],
        {"oracle": 0.0},
    )
    accuracy = evaluation.results["oracle"].per_class_accuracy
    np.testing.assert_array_equal(accuracy[:3], [1.0, 1.0, 1.0])
    assert np.isnan(accuracy[3])


def test_missing_gamma_or_class_and_bad_shapes_raise():
    with pytest.raises(KeyError, match="oracle"):
        evaluate_methods({"oracle": ORACLE}, IMAGE_IDS, LABELS, CLASS_IDS, SEEN, {})
    with pytest.raises(KeyError):
        evaluate_methods(
            {"oracle": ORACLE}, IMAGE_IDS, [4, 9, 2, 5], CLASS_IDS, SEEN, {"oracle": 0.0}
        )
    with pytest.raises(ValueError):
        evaluate_methods(
            {"oracle": ORACLE[:, :2]}, IMAGE_IDS, LABELS, CLASS_IDS, SEEN, {"oracle": 0}
        )


def test_problem_for_maps_class_ids_to_columns():
    problem = problem_for(np.array([9, 2, 4]), CLASS_IDS, [2])
    assert problem.labels.tolist() == [1, 2, 0]
    assert problem.image_is_unseen.tolist() == [False, True, False]


def test_safetensors_form_holds_everything(evaluation):
    tensors, metadata = evaluation.to_safetensors()
    assert [entry["method"] for entry in metadata["methods"]] == ["calibrated", "oracle"]
    assert metadata["methods"][0]["gamma"] == 0.75
    back = GZSLEvaluation.from_safetensors(tensors, metadata)
    assert back.methods == evaluation.methods and back.seen.dtype == bool
    np.testing.assert_array_equal(back.labels, LABELS)
    for method, result in evaluation.results.items():
        again = back.results[method]
        assert again.metrics == result.metrics and again.gamma == result.gamma
        for name in ("scores", "predicted", "curve_s", "curve_u", "per_class_accuracy"):
            np.testing.assert_array_equal(getattr(again, name), getattr(result, name))
    del tensors["oracle.curve_u"]
    with pytest.raises(InputError, match="oracle.curve_u"):
        GZSLEvaluation.from_safetensors(tensors, metadata)
    with pytest.raises(InputError, match="methods"):
        GZSLEvaluation.from_safetensors(tensors, {})
