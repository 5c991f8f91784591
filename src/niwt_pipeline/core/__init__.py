"""The NIWT library: data readers, backbones, importance, mapper, transfer, scoring.

Nothing in this package imports kedro or mlflow; the Kedro pipelines in
``niwt_pipeline.pipelines`` are thin adapters around it.
"""
