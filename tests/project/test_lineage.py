"""A partial run never mixes outputs of two ingestions: after ``ingestion`` is re-run with
other classes, ``transfer`` alone stops and names what to re-run; doing so works."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.helpers import run_in_test_env as _run

from niwt_pipeline.core.errors import InputError


def test_outputs_of_another_ingestion_are_refused(fresh_project, monkeypatch):
    monkeypatch.chdir(fresh_project)
    _run(fresh_project)
    lineage = json.loads((fresh_project / "data" / "lineage.json").read_text())
    assert len(set(lineage.values())) == 1 and "backbone" in lineage  # one lineage
    _run(fresh_project, ["transfer"])  # same ingestion: fine

    classes = fresh_project / "data/03_primary/classes.parquet"
    names = pd.read_parquet(classes)["name"].tolist()
    _run(fresh_project, ["ingestion"], {"ingestion": {"classes": names[:-1]}})
    metrics = fresh_project / "data/08_reporting/gzsl_metrics.json"
    before = metrics.read_bytes()
    with pytest.raises(InputError) as caught:
        _run(fresh_project, ["transfer"])
    message = str(caught.value)
    assert "made from another ingestion" in message and "backbone" in message
    assert metrics.read_bytes() == before  # nothing was overwritten
    command = message.rsplit("kedro run ", 1)[1]
    assert command.startswith("--pipelines=backbone,")
    assert "validation" in command and "mapping" in command and "--env=test" in command
    pipelines = command.split()[0].removeprefix("--pipelines=").split(",")
    _run(fresh_project, pipelines)  # the command the message gives
    _run(fresh_project, ["transfer"])
    lineage = json.loads((fresh_project / "data" / "lineage.json").read_text())
    assert len({lineage[n] for n in ("backbone", "images", "niwt_rows")}) == 1
