"""The run report: one self-contained HTML page built from plain inputs, and its figures.

Everything here takes plain values (dicts, DataFrames, numpy arrays, matplotlib figures,
a :class:`~niwt_pipeline.core.gzsl.GZSLEvaluation`) and returns plain values (strings,
figures, DataFrames); nothing reads or writes files and nothing imports kedro or mlflow.
Images are embedded as base64 PNG ``data:`` URIs, so the page opens anywhere, offline,
without its data folder.

Modules:

* :mod:`.encode`: figures and images as base64 PNG, values and tables as HTML.
* :mod:`.figures`: every matplotlib figure of the report: seen-unseen curves, confusion
  matrices, :func:`gzsl_views` (draws a ``GZSLEvaluation`` as it is, recomputing nothing),
  the per-class accuracy and the Grad-CAM :func:`explanation_grid`.
* :mod:`.neurons`: the neuron-name table, wide and as markdown.
* :mod:`.gallery`: ``predictions.html``, the predict pipeline's gallery.
* :mod:`.page`: :class:`ReportInputs` and :func:`build_report`, the HTML page.
"""

from __future__ import annotations

from niwt_pipeline.core.report.encode import figure_png_base64, html_table, image_png_base64
from niwt_pipeline.core.report.figures import (
    METHOD_LABELS,
    ExampleRow,
    GZSLViews,
    example_rows,
    explanation_grid,
    gzsl_views,
    per_class_accuracy_figure,
    plot_confusion,
    plot_seen_unseen_curves,
)
from niwt_pipeline.core.report.gallery import predictions_gallery
from niwt_pipeline.core.report.neurons import neuron_names_markdown, neuron_names_wide
from niwt_pipeline.core.report.page import ReportInputs, build_report, stage_timings

__all__ = [
    "METHOD_LABELS",
    "ExampleRow",
    "GZSLViews",
    "ReportInputs",
    "build_report",
    "example_rows",
    "explanation_grid",
    "figure_png_base64",
    "gzsl_views",
    "html_table",
    "image_png_base64",
    "neuron_names_markdown",
    "neuron_names_wide",
    "per_class_accuracy_figure",
    "plot_confusion",
    "plot_seen_unseen_curves",
    "predictions_gallery",
    "stage_timings",
]
