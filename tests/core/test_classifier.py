"""The packaged zero-shot classifier on a hand-set backbone: exact scores, calibrated
stacking, the explanation's importance, per-file errors, and the folder round trip."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tests.helpers import CLASSIFIER_BIAS, CLASSIFIER_WEIGHT, DIM, SEEN_IDS, hand_set_backbone

from niwt_pipeline.core.baselines import ESZSLModel
from niwt_pipeline.core.classifier import SPEC_FILE, WEIGHTS_FILE, ZeroShotClassifier
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.explain.textual import row_importance_on_images
from niwt_pipeline.core.mapper import InverseMap
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.selection import fuse_scores

SIZE = 16
UNSEEN_IDS = [0, 2]
CLASS_IDS = np.array([0, 1, 2, 3, 4])  # columns; seen 1, 3, 4
K, A = 128, 4  # block3 channels of small_cnn; domain-knowledge dimensions


def _rows() -> ClassRows:
    seen = {c: j for j, c in enumerate(SEEN_IDS)}
    weight = np.zeros((5, DIM))
    bias = np.zeros(5)
    for c in CLASS_IDS:
        if int(c) in seen:
            weight[c] = CLASSIFIER_WEIGHT[seen[int(c)]].numpy()
            bias[c] = float(CLASSIFIER_BIAS[seen[int(c)]])
    weight[0] = -np.linspace(0, 1, DIM)  # unseen class 0: the opposite direction
    weight[2] = np.linspace(1, 0, DIM)  # unseen class 2: decreasing
    bias[[0, 2]] = [0.25, -0.5]
    return ClassRows("niwt_tuned", CLASS_IDS, weight, bias)


def _inverse() -> InverseMap:
    g = torch.Generator().manual_seed(1)
    return InverseMap(
        x_mean=torch.zeros(K, dtype=torch.float64),
        x_scale=torch.ones(K, dtype=torch.float64),
        weight=torch.randn(K, A, generator=g, dtype=torch.float64),
        bias=torch.zeros(A, dtype=torch.float64),
    )


def _classifier(**overrides) -> ZeroShotClassifier:
    values = dict(
        backbone=hand_set_backbone(SIZE),
        rows=_rows(),
        class_names=["zebra", "cat", "okapi", "dog", "cow"],
        seen=np.isin(CLASS_IDS, SEEN_IDS),
        gamma=0.75,
        inverse=_inverse(),
        dimension_names=["striped", "furry", "long neck", "hooves"],
        domain_knowledge="hand-set attributes",
    )
    values.update(overrides)
    return ZeroShotClassifier(**values)


def _images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def _features(classifier: ZeroShotClassifier, x: torch.Tensor) -> np.ndarray:
    cut = classifier.backbone.cut
    with torch.no_grad():
        return cut.head(cut.stem(x)).double().numpy()


def test_scores_are_the_rows_linear_scores_and_calibration_subtracts_gamma_from_seen():
    classifier = _classifier()
    z = np.array([[1.0] * DIM, [0.0] * DIM])
    scores = classifier.feature_scores(z)
    np.testing.assert_allclose(scores, z @ classifier.rows.weight.T + classifier.rows.bias)
    # row 2 (all zero features) scores the biases exactly
    assert scores[1].tolist() == [0.25, -0.25, -0.5, 0.5, 1.0]
    assert classifier.calibrated(scores)[1].tolist() == [0.25, -1.0, -0.5, -0.25, 0.25]
    p = classifier.probabilities(scores)[1]
    expected = np.exp([0.25, -1.0, -0.5, -0.25, 0.25])
    np.testing.assert_allclose(p, expected / expected.sum())


def test_fused_scores_follow_fuse_scores():
    projection = np.arange(DIM * A, dtype=np.float64).reshape(DIM, A) / (DIM * A)
    signatures = np.eye(5, A)
    classifier = _classifier(
        fusion=0.5, eszsl=ESZSLModel(projection, 1.0, 1.0), signatures=signatures
    )
    z = np.random.default_rng(0).normal(size=(3, DIM))
    plain = z @ classifier.rows.weight.T + classifier.rows.bias
    np.testing.assert_allclose(
        classifier.feature_scores(z), fuse_scores(plain, z @ projection @ signatures.T, 0.5)
    )


def test_predict_ranks_by_calibrated_score_and_explains_with_the_top_rows_importance():
    classifier = _classifier()
    x = _images()
    frame = classifier.predict(x, top_k=2, explanation_dims=2)
    calibrated = classifier.calibrated(classifier.feature_scores(_features(classifier, x)))
    order = np.argsort(-calibrated, axis=1, kind="stable")
    assert frame["image"].tolist() == [f"#{i}" for i in range(len(x))]
    assert (frame["error"] == "").all()
    assert frame["class_id_1"].tolist() == CLASS_IDS[order[:, 0]].tolist()
    assert frame["class_id_2"].tolist() == CLASS_IDS[order[:, 1]].tolist()
    np.testing.assert_allclose(frame["score_1"], calibrated[np.arange(len(x)), order[:, 0]])
    assert frame["seen_1"].tolist() == np.isin(CLASS_IDS[order[:, 0]], SEEN_IDS).tolist()
    assert (frame["probability_1"] >= frame["probability_2"]).all()
    # the explanation is the inverse map of the top row's importance on the image
    top_rows = torch.as_tensor(classifier.rows.weight[order[:, 0]], dtype=torch.float32)
    alpha = row_importance_on_images(classifier.backbone.cut, x, top_rows)
    predicted = classifier.inverse.predict(alpha).numpy()
    for i, text in enumerate(frame["explanation"]):
        best = np.argsort(-predicted[i])[:2]
        names = ", ".join(classifier.dimension_names[a] for a in best)
        assert text == f"predicted {classifier.class_names[order[i, 0]]} because: {names}"


def test_batches_do_not_change_the_predictions():
    classifier = _classifier()
    x = _images(7)
    one = classifier.predict(x, batch_size=7)
    small = classifier.predict(x, batch_size=2)
    assert one["class_id_1"].tolist() == small["class_id_1"].tolist()
    np.testing.assert_allclose(one["score_1"], small["score_1"], rtol=1e-5, atol=1e-6)
    assert one["explanation"].tolist() == small["explanation"].tolist()


def test_paths_bytes_and_pil_images_agree_and_a_bad_file_gets_its_own_error_row(tmp_path):
    classifier = _classifier()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        array = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(array).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    listed = [str(paths[0]), str(tmp_path / "broken.jpg"), str(paths[1]), str(paths[2])]
    frame = classifier.predict(listed + [str(tmp_path / "missing.png")], batch_size=2)
    assert frame["image"].tolist()[:4] == listed
    assert frame.loc[1, "error"].startswith(str(tmp_path / "broken.jpg"))
    assert "not a readable image" in frame.loc[1, "error"]
    assert "not found" in frame.loc[4, "error"]
    assert frame.loc[[1, 4], "class_1"].tolist() == ["", ""]
    assert np.isnan(frame.loc[1, "score_1"])
    good = frame.loc[[0, 2, 3]]
    assert (good["error"] == "").all() and (good["class_1"] != "").all()
    from_bytes = classifier.predict([p.read_bytes() for p in paths])
    from_pil = classifier.predict([Image.open(p) for p in paths])
    for other in (from_bytes, from_pil):
        assert other["class_id_1"].tolist() == good["class_id_1"].tolist()
        np.testing.assert_allclose(other["score_1"], good["score_1"].to_numpy())


def test_folder_round_trip_keeps_every_score(tmp_path):
    projection = np.linspace(-1, 1, DIM * A).reshape(DIM, A)
    classifier = _classifier(
        fusion=0.25, eszsl=ESZSLModel(projection, 0.1, 10.0), signatures=np.eye(5, A)
    )
    folder = classifier.save(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == [SPEC_FILE, WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    back = ZeroShotClassifier.load(folder)
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["classes"][0] == {"class_id": 0, "name": "zebra", "seen": False}
    assert (spec["gamma"], spec["fusion"], spec["method"]) == (0.75, 0.25, "niwt_tuned")
    x = _images()
    a, b = classifier.predict(x), back.predict(x)
    assert a.equals(b)


def test_loading_without_kedro(tmp_path):
    folder = _classifier().save(tmp_path / "clf")
    code = (
        "import sys, torch, niwt_pipeline\n"
        f"c = niwt_pipeline.load_classifier({str(folder)!r})\n"
        f"x = torch.randn(2, 3, {SIZE}, {SIZE})\n"
        "print(len(c.predict(x)), 'kedro' in sys.modules, 'mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["2", "False", "False"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / WEIGHTS_FILE).unlink(), "weights.safetensors: missing"),
        (lambda f: (f / SPEC_FILE).write_text("{"), "classifier.json: not valid JSON"),
        (
            lambda f: (f / SPEC_FILE).write_text(
                json.dumps({**json.loads((f / SPEC_FILE).read_text()), "format_version": 99})
            ),
            r"classifier format 99 .* reads format 1: rebuild the classifier",
        ),
        (lambda f: (f / WEIGHTS_FILE).write_bytes(b"garbage"), "not a readable safetensors"),
    ],
)
def test_a_damaged_folder_names_the_file_and_the_fix(tmp_path, damage, message):
    folder = _classifier().save(tmp_path / "clf")
    damage(folder)
    with pytest.raises(InputError, match=message):
        ZeroShotClassifier.load(folder)
    with pytest.raises(InputError, match="classifier folder not found"):
        ZeroShotClassifier.load(tmp_path / "nowhere")


def test_parts_that_do_not_fit_are_refused():
    with pytest.raises(InputError, match="seen flags mark classes"):
        _classifier(seen=np.isin(CLASS_IDS, [1, 3]))
    with pytest.raises(InputError, match="fusion > 0 needs ESZSL"):
        _classifier(fusion=1.0)
    with pytest.raises(InputError, match="4 dimensions, 2 dimension names"):
        _classifier(dimension_names=["a", "b"])
    with pytest.raises(InputError, match="top_k must be between 1 and 5"):
        _classifier().predict(_images(1), top_k=6)
    with pytest.raises(InputError, match=r"a tensor batch must be \(N, 3, 16, 16\)"):
        _classifier().predict(torch.zeros(1, 3, 8, 8))


def test_bytes_that_are_not_an_image_get_an_error_row():
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (10, 200, 30)).save(buffer, format="PNG")
    frame = _classifier().predict([buffer.getvalue(), b"\x00\x01"], explain=False)
    assert frame.loc[0, "error"] == "" and "not a readable image" in frame.loc[1, "error"]
    assert "explanation" not in frame


def test_bytes_and_pil_images_follow_the_file_loading_policy(tmp_path):
    """An RGBA image and a JPEG with an EXIF orientation give the same scores as bytes, as a
    PIL image and as a file (transparency over white, orientation applied)."""
    rgba = Image.new("RGBA", (SIZE, 24), (200, 30, 30, 0))
    rgba.paste((10, 200, 30, 255), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = [tmp_path / "a.png", tmp_path / "b.jpg"]
    rgba.save(files[0])
    rgba.convert("RGB").save(files[1], exif=exif, quality=95)
    classifier = _classifier()
    by_path = classifier.predict([str(f) for f in files], explain=False)
    by_bytes = classifier.predict([f.read_bytes() for f in files], explain=False)
    by_pil = classifier.predict([Image.open(f) for f in files], explain=False)
    for other in (by_bytes, by_pil):
        np.testing.assert_allclose(other["score_1"], by_path["score_1"], rtol=1e-6)
        assert other["class_id_1"].tolist() == by_path["class_id_1"].tolist()
