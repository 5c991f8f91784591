"""Predict nodes on the shared chain: the packaged classifier reproduces the GZSL
evaluation, folders and CSVs of paths, bad files, and the gallery page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.pipelines.predict.nodes import classify_images, render_predictions


def _test_images(chain):
    evaluation = chain.gzsl_evaluation
    table = chain.images.set_index("image_id").loc[evaluation.image_ids].reset_index()
    return evaluation, table


def test_the_default_images_are_the_test_images_and_reproduce_the_evaluation(chain, params_for):
    evaluation, table = _test_images(chain)
    predictions = classify_images(chain.zero_shot_classifier, chain.images, params_for("predict"))
    by_path = predictions.set_index("image")
    rows = by_path.loc[table["path"].astype(str)]
    result = evaluation.results["ensemble_niwt_tuned_eszsl"]  # the packaged method
    assert (rows["error"] == "").all()
    # same class for every image
    assert rows["class_id_1"].tolist() == result.predicted.tolist()
    # same score: the stored (float32) score calibrated at the same gamma
    columns = evaluation.columns_of(result.predicted)
    stored = result.scores[np.arange(len(columns)), columns].astype(np.float64)
    calibrated = stored - result.gamma * evaluation.seen[columns]
    np.testing.assert_allclose(rows["score_1"].to_numpy(), calibrated, rtol=1e-4, atol=1e-4)
    assert chain.zero_shot_classifier.gamma == result.gamma


def test_a_folder_with_a_corrupt_file_and_a_stray_file(chain, params_for, tmp_path):
    _, table = _test_images(chain)
    for path in table["path"].head(4):
        Image.open(path).save(tmp_path / f"{len(list(tmp_path.iterdir()))}.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "notes.txt").write_text("not an image, not listed")
    (tmp_path / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    predictions = classify_images(
        chain.zero_shot_classifier,
        chain.images,
        params_for("predict", {"images": str(tmp_path), "top_k": 2}),
    )
    assert len(predictions) == 5  # the four images and the corrupt one; .txt, ._0.png not listed
    bad = predictions["image"] == str(tmp_path / "corrupt.png")
    assert predictions.loc[bad, "error"].str.contains("not a readable image").all()
    assert (predictions.loc[~bad, "error"] == "").all()
    assert (predictions.loc[~bad, "class_1"] != "").all()
    assert {"class_2", "probability_2", "seen_2", "explanation"} <= set(predictions.columns)
    csv_rows, page, maps = render_predictions(
        predictions, chain.zero_shot_classifier, params_for("predict")
    )
    assert csv_rows is predictions and maps == {}
    assert page.count("class='card'") == 4 and page.count("class='card error'") == 1
    assert "5 image(s), 4 classified, 1 not readable" in page


def test_a_csv_of_paths_relative_to_its_folder(chain, params_for, tmp_path):
    _, table = _test_images(chain)
    Image.open(table["path"].iloc[0]).save(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,note\na.png,first\n")
    predictions = classify_images(
        chain.zero_shot_classifier,
        chain.images,
        params_for("predict", {"images": str(tmp_path / "list.csv")}),
    )
    assert predictions["image"].tolist() == [str(tmp_path / "a.png")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no image files"),
        (lambda p: (p / "l.csv").write_text("file\nx.png\n") and p / "l.csv", "must have columns"),
        (lambda p: (p / "e.csv").write_text("path\n") and p / "e.csv", "the CSV lists no image"),
        (
            lambda p: (p / "bad.png").write_bytes(b"x") and p,
            "none of the 1 image.* could be read .*bad.png: not a readable image",
        ),
    ],
)
def test_bad_image_sources_name_the_culprit(chain, params_for, tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(InputError, match=message):
        classify_images(
            chain.zero_shot_classifier,
            chain.images,
            params_for("predict", {"images": str(source)}),
        )


def test_gradcam_pngs_are_the_top_rows_maps_computed_when_saved(chain, params_for, tmp_path):
    from niwt_pipeline.core.explain.visual import visual_explanations

    _, table = _test_images(chain)
    paths = table["path"].head(3).tolist()
    (tmp_path / "broken.png").write_bytes(b"nope")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path\n" + "\n".join([*paths, str(tmp_path / "broken.png")]) + "\n")
    options = params_for("predict", {"images": str(csv_file), "gradcam": True})
    classifier = chain.zero_shot_classifier
    predictions = classify_images(classifier, chain.images, options)
    _, _, maps = render_predictions(predictions, classifier, options)
    assert sorted(maps) == [f"{i:06d}_{Path(p).stem}" for i, p in enumerate(paths)]
    first = maps[sorted(maps)[0]]()  # computed only now
    weight, _ = classifier.rows.rows_for([int(predictions.loc[0, "class_id_1"])])
    expected = visual_explanations(
        classifier.backbone.cut, [paths[0]], weight, classifier.backbone.spec, alpha=0.5
    )[0]
    assert first.size == (classifier.backbone.spec.image_size,) * 2
    assert np.array_equal(np.asarray(first), np.asarray(expected))


def test_a_single_image_file_is_classified(chain, params_for):
    _, table = _test_images(chain)
    one = table["path"].iloc[0]
    predictions = classify_images(
        chain.zero_shot_classifier, chain.images, params_for("predict", {"images": one})
    )
    assert predictions["image"].tolist() == [one] and predictions.loc[0, "error"] == ""


def test_a_missing_images_folder_fails_parameter_validation(params_for, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="images folder not found: .*nowhere"):
        params_for("predict", {"images": str(tmp_path / "nowhere")})
