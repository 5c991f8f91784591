"""GZSL scoring on tiny score matrices whose curves are derived by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niwt_pipeline.core.metrics import (
    ausuc,
    calibrated_predictions,
    choose_gamma,
    confusion_matrix,
    gzsl_evaluate,
    gzsl_report,
    harmonic_mean,
    mean_class_accuracy,
    per_class_accuracy,
    seen_unseen_curve,
    to_percent,
    zsl_top1,
)

SEEN = np.array([True, True, False])  # classes 0, 1 seen; class 2 unseen

# Example A.  d = best seen score - best unseen score decides the switch point of each image.
#   img0 label 0  [3, 1, 2]    best seen 0 (right), best unseen 2 (wrong)  d = 3 - 2   = 1
#   img1 label 1  [0, 2, 2.5]  best seen 1 (right), best unseen 2 (wrong)  d = 2 - 2.5 = -0.5
#   img2 label 2  [1, 0, 0.5]  best seen 0 (wrong), best unseen 2 (right)  d = 1 - 0.5 = 0.5
#   img3 label 2  [0, 4, 1]    best seen 1 (wrong), best unseen 2 (right)  d = 4 - 1   = 3
# S = mean(acc class 0, acc class 1), U = acc of class 2 (two images).  Sweeping gamma up:
#   -inf          all predicted seen           S = 1,   U = 0
#   (-0.5, 0.5)   img1 switches (now wrong)    S = 0.5, U = 0     midpoint 0
#   (0.5, 1)      img2 switches (now right)    S = 0.5, U = 0.5   midpoint 0.75
#   (1, 3)        img0 switches (now wrong)    S = 0,   U = 0.5   midpoint 2
#   +inf          img3 switches (now right)    S = 0,   U = 1
# AUSUC over (U, S) = (0,1) (0,.5) (.5,.5) (.5,0) (1,0): only .5 wide at S = .5 -> 0.25.
SCORES_A = np.array([[3, 1, 2], [0, 2, 2.5], [1, 0, 0.5], [0, 4, 1]], dtype=float)
LABELS_A = np.array([0, 1, 2, 2])

# Example B (ties in H).  Switch points:
#   imgA label 2 [0, 1, 4]  d = 1 - 4 = -3 (switch makes it right)
#   imgS1 label 0 [1, 0, 3] d = 1 - 3 = -2 (switch makes it wrong)
#   imgB label 2 [5, 0, 1]  d = 5 - 1 = 4  (switch makes it right)
#   imgS2 label 1 [0, 6, 1] d = 6 - 1 = 5  (switch makes it wrong)
# States: -inf (S 1, U 0); (-3,-2): (1, .5) H 2/3; (-2,4): (.5, .5) H .5; (4,5): (.5, 1) H 2/3;
# +inf: (0, 1).  H ties between midpoints -2.5 and 4.5 -> the smaller |gamma|, -2.5.
# AUSUC: (0,1) (.5,1) (.5,.5) (1,.5) (1,0): .5 * 1 + .5 * .5 = 0.75.
SCORES_B = np.array([[0, 1, 4], [1, 0, 3], [5, 0, 1], [0, 6, 1]], dtype=float)
LABELS_B = np.array([2, 0, 2, 1])


def test_per_class_and_mean_accuracy():
    pred = np.array([0, 0, 1, 1, 2, 0])
    labels = np.array([0, 0, 0, 1, 2, 2])
    acc = per_class_accuracy(pred, labels)
    assert acc == pytest.approx({0: 2 / 3, 1: 1.0, 2: 0.5})
    assert mean_class_accuracy(pred, labels) == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    with_missing = per_class_accuracy(pred, labels, classes=[0, 7])
    assert with_missing[0] == pytest.approx(2 / 3) and np.isnan(with_missing[7])
    assert mean_class_accuracy(pred, labels, classes=[0, 7]) == pytest.approx(2 / 3)
    assert mean_class_accuracy(np.array([], int), np.array([], int)) == 0.0


def test_gzsl_evaluate_by_hand():
    # gamma 0: argmaxes 0 (right), 2 (wrong), 0 (wrong), 1 (wrong) -> S = .5, U = 0, H = 0
    r0 = gzsl_evaluate(SCORES_A, LABELS_A, SEEN)
    assert (r0["S"], r0["U"], r0["H"]) == pytest.approx((0.5, 0.0, 0.0))
    # gamma .75: [2.25, .25, 2] -> 0 right; [-.75, 1.25, 2.5] -> 2 wrong;
    #            [.25, -.75, .5] -> 2 right; [-.75, 3.25, 1] -> 1 wrong: S = .5, U = .5
    r = gzsl_evaluate(SCORES_A, LABELS_A, SEEN, gamma=0.75)
    assert (r["S"], r["U"], r["H"], r["gamma"]) == pytest.approx((0.5, 0.5, 0.5, 0.75))
    # split given explicitly (and torch input) gives the same
    r_t = gzsl_evaluate(
        torch.tensor(SCORES_A),
        torch.tensor(LABELS_A),
        torch.tensor(SEEN),
        np.array([False, False, True, True]),
        gamma=0.75,
    )
    assert r_t == r


def test_calibrated_predictions_infinite_gamma():
    assert calibrated_predictions(SCORES_A, SEEN, -np.inf).tolist() == [0, 1, 0, 1]
    assert calibrated_predictions(SCORES_A, SEEN, np.inf).tolist() == [2, 2, 2, 2]
    # ties go to the lowest class id
    assert calibrated_predictions(np.array([[1.0, 1.0, 1.0]]), SEEN, 0.0).tolist() == [0]


def test_seen_unseen_curve_by_hand():
    gammas, s, u = seen_unseen_curve(SCORES_A, LABELS_A, SEEN)
    np.testing.assert_allclose(gammas, [-np.inf, 0.0, 0.75, 2.0, np.inf])
    np.testing.assert_allclose(s, [1.0, 0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(u, [0.0, 0.0, 0.5, 0.5, 1.0])
    assert ausuc(s, u) == pytest.approx(0.25)
    _, s_b, u_b = seen_unseen_curve(SCORES_B, LABELS_B, SEEN)
    np.testing.assert_allclose(s_b, [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(u_b, [0.0, 0.5, 0.5, 1.0, 1.0])
    assert ausuc(s_b, u_b) == pytest.approx(0.75)


def test_curve_agrees_with_direct_evaluation_on_random_scores():
    rng = np.random.default_rng(0)
    n, c = 60, 7
    seen = np.array([True] * 4 + [False] * 3)
    labels = rng.integers(0, c, n)
    scores = rng.integers(0, 4, (n, c)).astype(float)  # many ties between images
    scores[np.arange(n), labels] += rng.random(n)
    gammas, s, u = seen_unseen_curve(scores, labels, seen)
    for g, s_g, u_g in zip(gammas, s, u, strict=True):
        r = gzsl_evaluate(scores, labels, seen, gamma=g)
        assert (r["S"], r["U"]) == pytest.approx((s_g, u_g), abs=1e-12)
    assert u[0] == 0.0 and s[-1] == 0.0
    assert np.all(np.diff(s) <= 0) and np.all(np.diff(u) >= 0)


def test_ausuc_adds_endpoints_and_sorts():
    # from (U .2, S .8) and (.6, .4): extended to (0, .8) and down to (.6, 0):
    # .2 * .8 + .4 * (.8 + .4) / 2 = .16 + .24 = .4
    assert ausuc([0.4, 0.8], [0.6, 0.2]) == pytest.approx(0.4)
    assert ausuc([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.5)  # straight diagonal
    assert ausuc([1.0, 1.0, 0.0], [0.0, 1.0, 1.0]) == pytest.approx(1.0)  # perfect
    with pytest.raises(ValueError, match="ausuc"):
        ausuc([0.1], [0.1, 0.2])


def test_choose_gamma_by_hand():
    # A: H is .5 only on (0.5, 1) -> its midpoint 0.75
    assert choose_gamma(SCORES_A, LABELS_A, SEEN) == pytest.approx(0.75)
    # B: H = 2/3 at -2.5 and at 4.5 -> the smaller |gamma|
    assert choose_gamma(SCORES_B, LABELS_B, SEEN) == pytest.approx(-2.5)
    # if the best interval contains 0, 0 itself is returned
    shifted = SCORES_B.copy()
    shifted[:, :2] += 2.5  # every d moves up by 2.5: best intervals (-.5, .5) and (6.5, 7.5)
    assert choose_gamma(shifted, LABELS_B, SEEN) == 0.0


def test_zsl_top1_and_report():
    # unseen-only images restricted to unseen classes: class 2 is the only candidate -> 1
    assert zsl_top1(SCORES_A, LABELS_A, [2]) == 1.0
    scores = np.array([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 3.0, 1.0], [9.0, 0.0, 0.0, 1.0]])
    # among classes 2, 3: img0 -> 3 (label 2, wrong), img1 -> 2 (right), img2 -> 3 (right)
    assert zsl_top1(scores, np.array([2, 2, 3]), [2, 3]) == pytest.approx((0.5 + 1.0) / 2)
    rep = gzsl_report(SCORES_A, LABELS_A, SEEN, gamma=0.75)
    # H is uncalibrated (gamma 0), H_calibrated at the given gamma
    assert rep["H_calibrated"] == pytest.approx(0.5) and rep["H"] == 0.0
    assert (rep["S_calibrated"], rep["U_calibrated"]) == pytest.approx((0.5, 0.5))
    assert (rep["S"], rep["U"], rep["gamma"]) == pytest.approx((0.5, 0.0, 0.75))
    assert not any(key.endswith("_uncalibrated") for key in rep)
    assert rep["ausuc"] == pytest.approx(0.25) and rep["zsl_top1"] == 1.0


def test_harmonic_mean_percent_and_confusion():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert to_percent({"S": 0.5, "curve": np.array([0.1, 0.2]), "n": [0.25]}) == {
        "S": 50.0,
        "curve": pytest.approx(np.array([10.0, 20.0])),
        "n": [25.0],
    }
    cm = confusion_matrix(np.array([0, 2, 2]), np.array([0, 1, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 0, 1], [0, 0, 1]])


def test_input_errors():
    with pytest.raises(ValueError, match="seen_mask"):
        gzsl_evaluate(SCORES_A, LABELS_A, np.array([True, True, True]))
    with pytest.raises(ValueError, match="columns"):
        gzsl_evaluate(SCORES_A, LABELS_A, np.array([True, False]))
    with pytest.raises(ValueError, match="labels"):
        gzsl_evaluate(SCORES_A, np.array([0, 1, 2, 5]), SEEN)


def test_plots_build_figures_without_pyplot():
    import io

    import matplotlib
    from matplotlib.figure import Figure

    from niwt_pipeline.core.report import plot_confusion, plot_seen_unseen_curves

    backend = matplotlib.get_backend()
    _, s, u = seen_unseen_curve(SCORES_A, LABELS_A, SEEN)
    fig = plot_seen_unseen_curves(
        {"NIWT": (s, u), "ESZSL": (s[::-1] * 0 + 0.5, u)}, {"NIWT": (0.5, 0.5)}
    )
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "NIWT (AUSUC 25.0)" and "S 50.0, U 50.0" in labels[2]
    rng = np.random.default_rng(0)
    seen = np.arange(40) % 5 != 0
    cm = rng.integers(0, 5, (40, 40))
    fig = plot_confusion(cm, [f"class_{i:03d}" for i in range(40)], seen)
    ax = fig.axes[0]
    ticks = ax.get_xticklabels()
    assert len(ticks) == 40 and ticks[0].get_text() == "class_001"  # seen classes first
    assert ticks[-1].get_text() == "class_035" and ticks[-1].get_color() == "tab:red"
    np.testing.assert_allclose(ax.images[0].get_array().sum(1), 1.0)  # rows normalised
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="disagree"):
        plot_confusion(cm, ["a"], seen)


def _gamma_one_at_a_time(scores, labels, seen, is_unseen=None):
    """The sweep candidate by candidate with gzsl_evaluate (the definition choose_gamma
    computes at once): the candidates, in |gamma| order, and their H."""
    from niwt_pipeline.core.metrics import _check_gzsl, _curve_parts

    sc, y, mask, unseen_img = _check_gzsl(scores, labels, seen, is_unseen)
    d = _curve_parts(sc, y, mask, unseen_img)[0]
    breaks = np.unique(d[np.isfinite(d)])
    gap = float(np.mean(np.diff(breaks))) if breaks.size > 1 else 1.0
    cands = np.concatenate(
        [[0.0, breaks[0] - gap], (breaks[:-1] + breaks[1:]) / 2.0, [breaks[-1] + gap]]
    )
    cands = np.unique(cands[~np.isin(cands, breaks)])
    best_h, best_g = -1.0, 0.0
    for g in cands[np.argsort(np.abs(cands), kind="stable")]:
        h = gzsl_evaluate(sc, y, mask, unseen_img, gamma=float(g))["H"]
        if h > best_h + 1e-12:
            best_h, best_g = h, float(g)
    return best_g


@pytest.mark.parametrize("seed", range(12))
def test_choose_gamma_equals_the_sweep_one_candidate_at_a_time(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 120)), int(rng.integers(3, 12))
    seen = np.zeros(c, dtype=bool)
    seen[: int(rng.integers(1, c))] = True
    labels = rng.integers(0, c, n)
    # scores on a coarse grid: many tied breakpoints and tied class scores
    scores = rng.integers(-4, 5, (n, c)).astype(np.float64) / 2.0
    if seed % 3 == 0:
        scores = rng.normal(size=(n, c))
    is_unseen = None if seed % 2 else rng.random(n) < 0.4  # images of a class in both splits
    assert choose_gamma(scores, labels, seen, is_unseen) == _gamma_one_at_a_time(
        scores, labels, seen, is_unseen
    )


def test_choose_gamma_with_nan_scores_sweeps_one_at_a_time():
    scores = SCORES_B.copy()
    scores[1, 1] = np.nan  # argmax takes the NaN: its image is always predicted as class 1
    assert choose_gamma(scores, LABELS_B, SEEN) == _gamma_one_at_a_time(scores, LABELS_B, SEEN)
