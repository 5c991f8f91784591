"""The report package (``niwt_pipeline.core.report``): exact values on hand-made inputs."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from niwt_pipeline.core import report
from niwt_pipeline.core.gzsl import GZSLEvaluation, evaluate_methods
from niwt_pipeline.core.report import (
    ExampleRow,
    ReportInputs,
    build_report,
    explanation_grid,
    gzsl_views,
    html_table,
    neuron_names_markdown,
    neuron_names_wide,
)

PNG = b"\x89PNG\r\n\x1a\n"

CLASSES = pd.DataFrame(
    {
        "class_id": [0, 1, 2, 3],
        "name": ["cat", "dog", "<zebra>", "okapi"],
        "seen": [True, True, False, False],
    }
)
# rows: images; columns: classes 0..3 (0, 1 seen; 2, 3 unseen)
SCORES = np.array(
    [
        [5.0, 1.0, 0.0, 0.0],  # class 0 -> 0 (right)
        [1.0, 5.0, 0.0, 0.0],  # class 1 -> 1 (right)
        [0.0, 3.0, 4.0, 0.0],  # class 1 -> 2 (wrong: an unseen class wins)
        [2.0, 0.0, 1.0, 0.0],  # class 2 -> 0 at gamma 0, -> 2 at gamma 1.5
    ]
)
LABELS = np.array([0, 1, 1, 2])


def _evaluation(scores: dict[str, np.ndarray], gammas: dict[str, float]) -> GZSLEvaluation:
    """The GZSL evaluation of ``scores`` on the four images above."""
    return evaluate_methods(
        scores,
        np.arange(len(LABELS)),
        LABELS,
        CLASSES["class_id"].to_numpy(),
        CLASSES["seen"].to_numpy(),
        gammas,
    )


def _names() -> pd.DataFrame:
    rows = []
    for source, dims in (
        ("mapper", [["a", "b"], ["c", "d"]]),
        ("covariation", [["b", "x"], ["y", "z"]]),
    ):
        for neuron, ranked in enumerate(dims):
            for rank, dim in enumerate(ranked, start=1):
                rows.append(
                    {
                        "source": source,
                        "neuron": neuron,
                        "rank": rank,
                        "dimension": dim,
                        "score": 1.0 / rank + neuron,
                    }
                )
    return pd.DataFrame(rows)


def _example(correct: bool) -> ExampleRow:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    return ExampleRow(
        original=image,
        cam_predicted=image + 10,
        cam_true=image + 20,
        true_class="<zebra>",
        predicted_class="<zebra>" if correct else "cat",
        true_seen=False,
        predicted_seen=not correct,
        text="predicted <zebra> because: a, b, c",
    )


def test_png_encoders_round_trip():
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    assert base64.b64decode(report.figure_png_base64(fig)).startswith(PNG)
    data = base64.b64decode(report.image_png_base64(np.zeros((4, 5, 3), dtype=np.uint8)))
    assert data.startswith(PNG)


def test_html_table_escapes_and_formats():
    frame = pd.DataFrame({"name": ["<b>", "x"], "value": [1.234, math.nan], "n": [3, 4]})
    out = html_table(frame, digits={"value": 2})
    assert "<td>&lt;b&gt;</td>" in out
    assert '<td class="num">1.23</td>' in out
    assert '<td class="num">&ndash;</td>' in out
    assert '<td class="num">3</td>' in out


def test_gzsl_views_per_class_accuracy_is_exact():
    views = gzsl_views(
        _evaluation({"niwt_tuned": SCORES, "eszsl": SCORES}, {"niwt_tuned": 0.0, "eszsl": 1.5}),
        CLASSES,
    )
    table = views.per_class.set_index("class_id")
    assert table["n_test_images"].tolist() == [1, 2, 1, 0]
    assert table.loc[0, "niwt_tuned"] == 100.0 and table.loc[1, "niwt_tuned"] == 50.0
    assert table.loc[2, "niwt_tuned"] == 0.0 and table.loc[2, "eszsl"] == 100.0
    assert math.isnan(table.loc[3, "niwt_tuned"])
    assert views.classes_without_images == ["okapi"]
    for figure in (views.curve_figure, views.confusion_figure, views.accuracy_figure):
        assert isinstance(figure, Figure)


def test_gzsl_views_draws_the_evaluation_without_recomputing():
    evaluation = _evaluation(
        {"niwt_tuned": SCORES, "eszsl": SCORES}, {"niwt_tuned": 0.0, "eszsl": 1.5}
    )
    eszsl = evaluation.results["eszsl"]
    eszsl.metrics["S_calibrated"], eszsl.metrics["U_calibrated"] = 0.25, 0.75
    eszsl.predicted = np.array([3, 3, 3, 3])  # every image -> okapi
    eszsl.per_class_accuracy = np.array([0.1, 0.2, 0.3, math.nan])
    views = gzsl_views(evaluation, CLASSES, confusion_method="eszsl")
    legend = [t.get_text() for t in views.curve_figure.axes[0].get_legend().get_texts()]
    assert "ESZSL: S 25.0, U 75.0" in legend
    assert views.per_class["eszsl"].tolist()[:3] == pytest.approx([10.0, 20.0, 30.0])
    # seen first (cat, dog), then unseen (<zebra>, okapi); rows normalised
    drawn = np.asarray(views.confusion_figure.axes[0].images[0].get_array())
    np.testing.assert_array_equal(drawn[:3, 3], 1.0)
    assert drawn.sum() == 3.0  # okapi has no images
    with pytest.raises(KeyError, match="confusion_method"):
        gzsl_views(evaluation, CLASSES, confusion_method="absent")
    with pytest.raises(KeyError, match="no name"):
        gzsl_views(evaluation, CLASSES.iloc[1:])


def test_neuron_names_wide_and_markdown():
    wide = neuron_names_wide(_names())
    assert wide["overlap"].tolist() == [1, 0]
    assert wide.loc[0, "mapper"] == "a (+1.00), b (+0.50)"
    assert wide["mapper_top_score"].tolist() == [1.0, 2.0]
    text = neuron_names_markdown(
        _names(),
        {"agreement": 0.25, "random_baseline": 0.1, "top_k": 2, "n_dimensions": 20, "n_neurons": 2},
    )
    assert "**0.250** (random naming: 0.100, 20 dimensions, 2 neurons)" in text
    assert "| 0 | a (+1.00), b (+0.50) | b (+1.00), x (+0.50) | 1 |" in text


def test_explanation_grid_lays_out_three_maps_and_the_text():
    figure = explanation_grid([_example(True), _example(False)], title="t")
    assert len(figure.axes) == 8
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert any(t.startswith("[correct]") for t in texts)
    assert any(t.startswith("[wrong]") for t in texts)
    assert len(explanation_grid([]).axes) == 1


@pytest.fixture
def page() -> str:
    views = gzsl_views(_evaluation({"niwt_tuned": SCORES}, {"niwt_tuned": 0.0}), CLASSES)
    metrics = {
        "top_k": 3,
        "neuron_names": {"agreement": 0.5, "random_baseline": 0.2, "top_k": 2, "n_neurons": 2},
        "textual": {
            "truth_description": "the true attributes",
            "gamma": 0.0,
            "precision_at_k": {
                "unseen": {
                    "n_correct": 1,
                    "correct": 0.667,
                    "random_correct": 0.2,
                    "n_incorrect": 0,
                },
                "unseen_departing": {
                    "n_images": 4,
                    "all": 0.771,
                    "inverse_map": 0.558,
                    "class_prior": 0.637,
                    "random": 0.211,
                },
            },
            "explanation": {
                "evidence": "features",
                "evidence_weight": 0.5,
                "contrast_weight": 0.0,
                "chosen_on": "the <pseudo-unseen> images",
                "validation_precision_at_k": {"chosen": 0.882, "inverse_map": 0.711},
            },
            "contrastive_share": {
                "unseen": {
                    "explanation": 0.419,
                    "inverse_map": 0.392,
                    "class_prior": 0.491,
                    "random": 0.235,
                },
                "seen": {},
            },
            "naming_diversity": {
                "unseen": {
                    "explanation": {
                        "n_distinct": 17,
                        "top_attribute": "size::<small>",
                        "top_attribute_share": 0.656,
                    },
                    "random": {"n_distinct": 18.96, "top_attribute": None},
                }
            },
        },
    }
    return build_report(
        ReportInputs(
            summary={"dataset": "toy", "n_classes": 4, "images_per_split": {"test_seen": 3}},
            gzsl={"backbone": {"arch": "a", "layer": "l"}, "methods": {"niwt": {"S": 50.0}}},
            views=views,
            examples=[_example(True)],
            explanation_metrics=metrics,
            neuron_names=_names(),
            timings=[("backbone training", 1.5, "backbone_report.train_seconds")],
            extra_notes=["a <note>"],
        )
    )


def test_build_report_is_self_contained_and_escaped(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/png;base64,") == 3 + 3
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "&lt;zebra&gt;" in page and "<zebra>" not in page
    assert "a &lt;note&gt;" in page
    assert "0.667" in page and "the true attributes" in page


def test_build_report_shows_the_explanations_side_by_side(page):
    def cells(label: str, after: str) -> list[str]:
        start = page.index(after)
        row = re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", page[start:])
        return re.findall(r"<td class='num'>(.*?)</td>", row.group(1))

    departing = "unseen-class images departing from their class's prototype"
    heads = "<th>explanation</th><th>paper's (inverse map)</th><th>class prior</th><th>random</th>"
    assert heads in page
    assert cells(departing, "Scored textual") == ["4", "<b>0.771</b>", "0.558", "0.637", "0.211"]
    assert cells("unseen-class images", "By prediction outcome")[:5] == [
        "1",
        "0.667",
        "&ndash;",
        "&ndash;",
        "0.200",
    ]
    contrast = cells("unseen-class images", "Contrastive and specific?")
    assert contrast[:4] == ["0.419", "0.392", "0.491", "0.235"]
    assert (contrast[4], contrast[7], contrast[8]) == ("17", "19.0", "0.66 (size::&lt;small&gt;)")
    assert "<b>features</b> evidence at weight <b>0.50</b>" in page
    assert "chosen on the &lt;pseudo-unseen&gt; images (validation precision@3 0.882" in page
    assert "image. .</p>" not in page


@pytest.mark.parametrize(
    ("ensemble_h", "expected"),
    [
        (
            61.0,
            "Best calibrated H: <b>ensemble: validated NIWT + ESZSL (score fusion)</b>, "
            "a fusion of two methods' scores, not NIWT alone. ",
        ),
        (59.0, "Best calibrated H: <b>NIWT (validated variant)</b>. "),
    ],
)
def test_the_best_line_names_a_fused_winner_as_a_fusion(ensemble_h, expected):
    from niwt_pipeline.core.report.page import _section_metrics

    methods = {
        "niwt_paper": {"H_calibrated": 52.0},
        "niwt_tuned": {"H_calibrated": 60.0},
        "ensemble_niwt_tuned_eszsl": {"H_calibrated": ensemble_h},
        "eszsl": {"H_calibrated": 58.0},
    }
    section = _section_metrics({"methods": methods})
    assert expected in section
    assert section.count("Best calibrated H") == 1
