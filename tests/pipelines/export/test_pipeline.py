"""The ``export`` pipeline run on an in-memory catalog."""

from __future__ import annotations

from niwt_pipeline.pipelines.export import create_pipeline


def test_pipeline_builds_the_export_from_persisted_inputs(chain, run_pipeline):
    pipeline = create_pipeline()
    inputs = {name: getattr(chain, name) for name in pipeline.inputs()}
    outputs = run_pipeline(pipeline, inputs)
    assert set(outputs) == {"xlsa17_export"}
    assert outputs["xlsa17_export"]["features"].shape[0] == len(chain.images)
