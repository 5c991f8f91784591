"""The ``predict`` pipeline run on an in-memory catalog."""

from __future__ import annotations

from niwt_pipeline.pipelines.predict import create_pipeline


def test_pipeline_classifies_the_test_images_from_persisted_inputs(chain, run_pipeline, params_for):
    pipeline = create_pipeline()
    inputs = {
        name: (params_for("predict") if name == "params:predict" else getattr(chain, name))
        for name in pipeline.inputs()
    }
    outputs = run_pipeline(pipeline, inputs)
    assert set(outputs) == {
        "predictions",
        "predictions_csv",
        "predictions_gallery",
        "predictions_gradcam",
    }
    assert outputs["predictions_gradcam"] == {}  # predict.gradcam is off by default
    n_test = len(chain.gzsl_evaluation.image_ids)
    assert len(outputs["predictions"]) == n_test
    assert outputs["predictions_gallery"].startswith("<!DOCTYPE html>")
