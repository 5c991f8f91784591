"""The run report: one self-contained HTML page built from plain inputs, and its figures.

Everything here takes plain values (dicts, DataFrames, numpy arrays, matplotlib figures) and
returns plain values (strings, figures, DataFrames); nothing reads or writes files and
nothing imports kedro or mlflow.  Images are embedded as base64 PNG ``data:`` URIs, so the
page opens anywhere, offline, without its data folder.

* :func:`gzsl_views` recomputes what the report draws from a run's test scores and its
  calibration: the seen-unseen curves, the confusion matrix and the per-class accuracy.
* :func:`explanation_grid` lays out Grad-CAM overlays next to each image's textual
  explanation (also saved as the ``gradcam_examples`` PNG).
* :func:`neuron_names_markdown` renders the neuron-name table as markdown.
* :func:`build_report` assembles the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from niwt_pipeline.core.gzsl import evaluate_scores, problem_for
from niwt_pipeline.core.metrics import (
    calibrated_predictions,
    confusion_matrix,
    per_class_accuracy,
)
from niwt_pipeline.core.plots import plot_confusion, plot_seen_unseen_curves

METHOD_LABELS = {
    "niwt": "NIWT",
    "weight_regression": "ridge rows (weight regression)",
    "eszsl": "ESZSL",
}
"""Display names of the scored methods; unknown methods are shown by their key."""


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------
def figure_png_base64(fig: Figure, *, dpi: int = 110) -> str:
    """A matplotlib figure as a base64 PNG (rendered with Agg, no pyplot, nothing shown)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_png_base64(image: Image.Image | np.ndarray) -> str:
    """An RGB image (``PIL`` or ``(H, W, 3)`` uint8 array) as a base64 PNG."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(b64: str, alt: str, css: str = "") -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}" class="{css}">'


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "&ndash;"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def html_table(
    frame: pd.DataFrame,
    *,
    digits: int | Mapping[str, int] = 1,
    css: str = "",
    row_css: Sequence[str] | None = None,
) -> str:
    """A small HTML table (escaped cells, NaN shown as a dash, numbers right-aligned)."""
    per_column = digits if isinstance(digits, Mapping) else {}
    default = digits if isinstance(digits, int) else 1
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for column, value in row.items():
            numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
                value, bool | np.bool_
            )
            cell = _fmt(value, per_column.get(str(column), default))
            cells.append(f'<td class="num">{cell}</td>' if numeric else f"<td>{cell}</td>")
        cls = f' class="{row_css[i]}"' if row_css is not None and row_css[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


# ---------------------------------------------------------------------------------------
# GZSL views recomputed from the scores
# ---------------------------------------------------------------------------------------
@dataclass
class GZSLViews:
    """What the report draws of the GZSL evaluation.

    Attributes:
        curve_figure: seen-unseen curves of every method, operating points at each
            method's calibrated gamma.
        confusion_figure: NIWT's confusion matrix at its calibrated gamma.
        per_class: one row per class: ``class_id``, ``name``, ``seen``, ``n_test_images``,
            then each method's top-1 accuracy (percent, calibrated; NaN without images).
        accuracy_figure: per-class accuracy of NIWT (bars) and the other methods (markers).
        classes_without_images: names of the classes that have no test images.
    """

    curve_figure: Figure
    confusion_figure: Figure
    per_class: pd.DataFrame
    accuracy_figure: Figure
    classes_without_images: list[str] = field(default_factory=list)


def gzsl_views(
    scores: Mapping[str, np.ndarray],
    image_class_ids: np.ndarray,
    classes: pd.DataFrame,
    gammas: Mapping[str, float],
    *,
    confusion_method: str = "niwt",
) -> GZSLViews:
    """Recompute the report's GZSL figures and per-class table from the test scores.

    Args:
        scores: ``{method: (N, C) scores}``, columns = ``classes`` sorted by ``class_id``.
        image_class_ids: ``(N,)`` the true class id of each scored image.
        classes: ``class_id``, ``name``, ``seen`` of every class.
        gammas: each method's calibration gamma (chosen without test data).
        confusion_method: whose confusion matrix to draw.
    """
    ordered = classes.sort_values("class_id").reset_index(drop=True)
    class_ids = ordered["class_id"].to_numpy(dtype=np.int64)
    seen = ordered["seen"].to_numpy(dtype=bool)
    labels = np.asarray(image_class_ids, dtype=np.int64)
    problem = problem_for(labels, class_ids, class_ids[~seen])
    curves, chosen = {}, {}
    per_class = ordered[["class_id", "name", "seen"]].copy()
    counts = pd.Series(labels).value_counts()
    per_class["n_test_images"] = [int(counts.get(int(c), 0)) for c in class_ids]
    predictions = {}
    for method, matrix in scores.items():
        values = np.asarray(matrix, dtype=np.float64)
        gamma = float(gammas[method])
        result = evaluate_scores(values, problem, gamma)
        curves[method] = (np.asarray(result["curve"]["S"]), np.asarray(result["curve"]["U"]))
        chosen[method] = (result["S_calibrated"], result["U_calibrated"])
        predictions[method] = calibrated_predictions(values, seen, gamma)
        columns = np.arange(len(class_ids))
        accuracy = per_class_accuracy(predictions[method], problem.labels, columns)
        per_class[method] = [100.0 * accuracy[j] for j in columns]
    label = {m: METHOD_LABELS.get(m, m) for m in scores}
    curve_figure = plot_seen_unseen_curves(
        {label[m]: c for m, c in curves.items()}, {label[m]: c for m, c in chosen.items()}
    )
    confusion_figure = plot_confusion(
        confusion_matrix(predictions[confusion_method], problem.labels, len(class_ids)),
        ordered["name"].tolist(),
        seen,
        title=f"{label[confusion_method]}: confusion matrix at the calibrated gamma",
    )
    return GZSLViews(
        curve_figure=curve_figure,
        confusion_figure=confusion_figure,
        per_class=per_class,
        accuracy_figure=per_class_accuracy_figure(per_class, list(scores)),
        classes_without_images=per_class.loc[per_class["n_test_images"] == 0, "name"].tolist(),
    )


def per_class_accuracy_figure(per_class: pd.DataFrame, methods: Sequence[str]) -> Figure:
    """Horizontal bars of the first method's per-class accuracy, markers for the others;
    unseen classes first and in red, as in the confusion matrix."""
    table = pd.concat([per_class[~per_class["seen"]], per_class[per_class["seen"]]])
    n = len(table)
    fig = Figure(figsize=(7.5, float(np.clip(0.22 * n + 1.6, 3.0, 40.0))), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    first, *others = methods
    colours = ["tab:red" if not s else "tab:blue" for s in table["seen"]]
    ax.barh(y, table[first].fillna(0.0), color=colours, alpha=0.75)
    ax.barh([], [], color="grey", alpha=0.75, label=f"{METHOD_LABELS.get(first, first)} (bars)")
    for marker, method in zip(("o", "s", "^", "D", "v"), others, strict=False):
        ax.plot(
            table[method],
            y,
            marker=marker,
            linestyle="none",
            markerfacecolor="none",
            color="black",
            label=METHOD_LABELS.get(method, method),
            markersize=5,
        )
    ax.set_yticks(y, labels=table["name"].tolist(), fontsize=float(np.clip(300 / max(n, 1), 5, 9)))
    for tick, s in zip(ax.get_yticklabels(), table["seen"], strict=True):
        tick.set_color("black" if s else "tab:red")
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy over all classes, calibrated (%)")
    ax.set_title("Per-class accuracy (unseen classes in red)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return fig


# ---------------------------------------------------------------------------------------
# Explanations
# ---------------------------------------------------------------------------------------
@dataclass
class ExampleRow:
    """One explained image for :func:`explanation_grid` and the report.

    Attributes:
        original: ``(H, W, 3)`` uint8, the image as the model saw it.
        cam_predicted: Grad-CAM of the predicted class's row, overlaid.
        cam_true: Grad-CAM of the true class's row, overlaid.
        true_class, predicted_class: names.
        true_seen, predicted_seen: whether each is a seen class.
        text: the textual explanation.
    """

    original: np.ndarray
    cam_predicted: np.ndarray
    cam_true: np.ndarray
    true_class: str
    predicted_class: str
    true_seen: bool
    predicted_seen: bool
    text: str

    @property
    def correct(self) -> bool:
        return self.true_class == self.predicted_class


def _kind(seen: bool) -> str:
    return "seen" if seen else "unseen (NIWT row)"


def explanation_grid(rows: Sequence[ExampleRow], *, title: str | None = None) -> Figure:
    """A grid: per image, the image, Grad-CAM of the predicted row and of the true row,
    with the textual explanation beside them."""
    n = max(len(rows), 1)
    fig = Figure(figsize=(11.0, 1.9 * n + 0.6), layout="constrained")
    grid = fig.add_gridspec(n, 4, width_ratios=[1, 1, 1, 2.4])
    if not rows:
        ax = fig.add_subplot(grid[0, :])
        ax.axis("off")
        ax.text(0.5, 0.5, "no test images to explain", ha="center", va="center")
        return fig
    for i, row in enumerate(rows):
        panels = (
            (row.original, f"true: {row.true_class}"),
            (row.cam_predicted, f"Grad-CAM predicted\n({_kind(row.predicted_seen)})"),
            (row.cam_true, f"Grad-CAM true\n({_kind(row.true_seen)})"),
        )
        for j, (image, caption) in enumerate(panels):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(caption, fontsize=7)
        ax = fig.add_subplot(grid[i, 3])
        ax.axis("off")
        verdict = "correct" if row.correct else "wrong"
        ax.text(
            0.0,
            0.5,
            _wrap(f"[{verdict}] {row.text}", 52),
            va="center",
            ha="left",
            fontsize=8,
            color="darkgreen" if row.correct else "darkred",
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def neuron_names_markdown(
    names: pd.DataFrame,
    agreement: Mapping[str, Any] | None = None,
    *,
    title: str = "Neuron names",
) -> str:
    """Markdown: one line per neuron with its top dimensions from the mapper and from
    covariation, and their overlap.

    Args:
        names: long table ``source`` (``mapper``/``covariation``), ``neuron``, ``rank``,
            ``dimension``, ``score``.
        agreement: ``{"agreement", "random_baseline", "top_k", "n_dimensions", ...}``.
    """
    wide = neuron_names_wide(names)
    lines = [f"# {title}", ""]
    if agreement:
        lines += [
            f"Top-{agreement['top_k']} agreement between the mapper's weights and the "
            f"covariation of importance with the domain knowledge: "
            f"**{agreement['agreement']:.3f}** (random naming: {agreement['random_baseline']:.3f}, "
            f"{agreement['n_dimensions']} dimensions, {agreement['n_neurons']} neurons).",
            "",
        ]
    lines += [
        "| neuron | from the mapper (weight) | from covariation (correlation) | overlap |",
        "|---:|---|---|---:|",
    ]
    for _, row in wide.iterrows():
        lines.append(
            f"| {row['neuron']} | {_escape_md(row['mapper'])} | {_escape_md(row['covariation'])} "
            f"| {row['overlap']} |"
        )
    return "\n".join(lines) + "\n"


def _escape_md(text: str) -> str:
    return text.replace("|", "\\|")


def neuron_names_wide(names: pd.DataFrame) -> pd.DataFrame:
    """One row per neuron: ``neuron``, ``mapper``, ``covariation`` (the ranked dimensions
    with scores), ``overlap`` (shared dimensions) and ``mapper_top_score``."""
    out = []
    for neuron, group in names.groupby("neuron", sort=True):
        parts, sets = {}, {}
        for source in ("mapper", "covariation"):
            ranked = group[group["source"] == source].sort_values("rank")
            parts[source] = ", ".join(
                f"{d} ({s:+.2f})" for d, s in zip(ranked["dimension"], ranked["score"], strict=True)
            )
            sets[source] = set(ranked["dimension"])
        top = group[(group["source"] == "mapper") & (group["rank"] == 1)]["score"]
        out.append(
            {
                "neuron": int(neuron),
                "mapper": parts["mapper"],
                "covariation": parts["covariation"],
                "overlap": len(sets["mapper"] & sets["covariation"]),
                "mapper_top_score": float(top.iloc[0]) if len(top) else math.nan,
            }
        )
    return pd.DataFrame(
        out, columns=["neuron", "mapper", "covariation", "overlap", "mapper_top_score"]
    )


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------
@dataclass
class ReportInputs:
    """Everything :func:`build_report` shows; all plain values.

    Attributes:
        summary: the ingestion summary (dataset, classes, images per split, notes).
        gzsl: the GZSL metrics (``dataset``, ``backbone``, ``n_test_images``, ``methods``
            with S/U/H/... in percent).
        views: figures and the per-class table (:func:`gzsl_views`).
        examples: explained images with their Grad-CAM maps.
        explanation_metrics: the explanation stage's numbers (neuron-name agreement,
            precision@k by group, the source of truth).
        neuron_names: the long neuron-name table (see :func:`neuron_names_wide`).
        timings: ``[(stage, seconds, where the number comes from)]``.
        max_neurons: neurons shown in the page's table (the full table is in its files).
        extra_notes: lines shown under the title (e.g. fallbacks that were taken).
    """

    summary: Mapping[str, Any]
    gzsl: Mapping[str, Any]
    views: GZSLViews
    examples: Sequence[ExampleRow]
    explanation_metrics: Mapping[str, Any]
    neuron_names: pd.DataFrame
    timings: Sequence[tuple[str, float | None, str]] = ()
    max_neurons: int = 24
    extra_notes: Sequence[str] = ()


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2530;
background:#f4f6f9}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px}
header{background:#1d3557;color:#fff;padding:22px 32px}
header h1{margin:0 0 6px;font-size:26px}
header p{margin:0;opacity:.85}
section{background:#fff;border-radius:8px;padding:18px 24px;margin:18px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin:0 0 12px;font-size:20px;color:#1d3557}
h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border-bottom:1px solid #e3e7ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ours td{font-weight:600}
tr.unseen td:first-child,tr.unseen td:nth-child(2){color:#c0392b}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:4px 0 8px}
.kpi{background:#eef2f7;border-radius:6px;padding:10px 16px;min-width:120px}
.kpi b{display:block;font-size:22px;color:#1d3557}
.kpi span{font-size:12px;color:#5a6473}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.fig{max-width:100%;height:auto}
.fig.half{max-width:560px}
.fig.conf{width:560px;max-width:100%}
.note{font-size:12.5px;color:#5a6473}
.example{display:flex;gap:10px;align-items:center;border-bottom:1px solid #eef2f7;
padding:8px 0}
.example figure{margin:0;text-align:center;font-size:11px;color:#5a6473}
.example img{width:112px;height:112px;image-rendering:pixelated;border-radius:4px}
.example .text{font-size:14px;margin-left:10px}
.ok{color:#1e7d32;font-weight:600}.bad{color:#b03a2e;font-weight:600}
.tag{display:inline-block;font-size:11px;padding:1px 6px;border-radius:8px;
background:#eef2f7;margin-left:4px}
.tag.unseen{background:#fde2df;color:#b03a2e}
.scroll{max-height:600px;overflow:auto}
"""


def build_report(inputs: ReportInputs) -> str:
    """The whole run report as one self-contained HTML page."""
    summary, gzsl = inputs.summary, inputs.gzsl
    backbone = gzsl.get("backbone") or {}
    subtitle = (
        f"{summary.get('dataset', '?')} &middot; domain knowledge: "
        f"{html.escape(str(summary.get('domain_knowledge') or gzsl.get('domain_knowledge')))} "
        f"&middot; backbone {html.escape(str(backbone.get('arch', '?')))} "
        f"cut at {html.escape(str(backbone.get('layer', '?')))}"
    )
    sections = [
        _section_data(summary, inputs.extra_notes),
        _section_metrics(gzsl),
        _section_curves(inputs.views),
        _section_examples(inputs.examples, inputs.explanation_metrics),
        _section_explanation_scores(inputs.explanation_metrics),
        _section_neurons(inputs.neuron_names, inputs.explanation_metrics, inputs.max_neurons),
        _section_timings(inputs.timings),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>NIWT run report: {html.escape(str(summary.get('dataset', '')))}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>NIWT zero-shot learning: run report</h1><p>{subtitle}</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def _section_data(summary: Mapping[str, Any], extra_notes: Sequence[str]) -> str:
    splits = summary.get("images_per_split") or {}
    kpis = [
        (summary.get("n_classes"), "classes"),
        (summary.get("n_seen"), "seen classes"),
        (summary.get("n_unseen"), "unseen classes"),
        (summary.get("domain_knowledge_dims"), "domain-knowledge dims"),
        *((v, f"{k} images") for k, v in splits.items()),
    ]
    boxes = "".join(f'<div class="kpi"><b>{_fmt(v)}</b><span>{k}</span></div>' for v, k in kpis)
    unseen = ", ".join(html.escape(str(c)) for c in summary.get("unseen_classes") or [])
    notes = [*(summary.get("notes") or []), *extra_notes]
    note_html = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
    return (
        "<section><h2>Dataset and split</h2>"
        f'<div class="kpis">{boxes}</div>'
        f'<p class="note">Unseen classes: {unseen or "&ndash;"}</p>'
        + (f'<ul class="note">{note_html}</ul>' if note_html else "")
        + "</section>"
    )


_METRIC_COLUMNS = [
    ("S", "S"),
    ("U", "U"),
    ("H", "H"),
    ("S_calibrated", "S cal."),
    ("U_calibrated", "U cal."),
    ("H_calibrated", "H cal."),
    ("ausuc", "AUSUC"),
    ("zsl_top1", "ZSL top-1"),
    ("gamma", "gamma"),
]


def _section_metrics(gzsl: Mapping[str, Any]) -> str:
    methods = gzsl.get("methods") or {}
    rows = []
    for method, values in methods.items():
        row = {"method": METHOD_LABELS.get(method, method)}
        row.update({label: values.get(key, math.nan) for key, label in _METRIC_COLUMNS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    best = ""
    if len(frame) and frame["H cal."].astype(float).notna().any():
        top = frame["H cal."].astype(float).idxmax()
        best = f"Best calibrated H: <b>{html.escape(frame.loc[top, 'method'])}</b>. "
    row_css = ["ours" if m == "niwt" else "" for m in methods]
    table = html_table(frame, digits={"gamma": 3}, row_css=row_css) if len(frame) else ""
    return (
        "<section><h2>Generalised zero-shot accuracy (%)</h2>"
        f"{table}<p class='note'>{best}S / U: per-class mean top-1 accuracy on the seen / "
        "unseen test images, predicting over all classes; H = 2SU/(S+U). "
        '"cal.": calibrated stacking at the gamma chosen on held-out seen classes treated as '
        "pseudo-unseen (no test data). AUSUC: area under the seen-unseen curve. ZSL top-1: "
        f"unseen images among unseen classes only. {_fmt(gzsl.get('n_test_images'))} test "
        "images.</p></section>"
    )


def _section_curves(views: GZSLViews) -> str:
    missing = (
        f"<p class='note'>Classes without test images (no accuracy): "
        f"{html.escape(', '.join(views.classes_without_images))}</p>"
        if views.classes_without_images
        else ""
    )
    fixed = ("class_id", "name", "seen", "n_test_images")
    methods = [c for c in views.per_class.columns if c not in fixed]
    short = {"weight_regression": "ridge rows", "n_test_images": "test images", "class_id": "id"}
    table = views.per_class.rename(
        columns={c: short.get(c, METHOD_LABELS.get(c, c)) for c in [*fixed, *methods]}
    )
    row_css = ["" if s else "unseen" for s in views.per_class["seen"]]
    return (
        "<section><h2>Seen-unseen trade-off and per-class accuracy</h2>"
        '<div class="row">'
        f"{_img(figure_png_base64(views.curve_figure), 'seen-unseen curves', 'fig half')}"
        f"{_img(figure_png_base64(views.accuracy_figure), 'per-class accuracy', 'fig half')}"
        "</div>"
        f"{missing}"
        '<div class="row"><div>'
        "<h3>Confusion matrix</h3>"
        f"{_img(figure_png_base64(views.confusion_figure), 'confusion matrix', 'fig conf')}"
        "</div><div><h3>Per-class accuracy (%, calibrated)</h3>"
        f'<div class="scroll">{html_table(table, row_css=row_css)}</div>'
        "</div></div></section>"
    )


def _section_examples(examples: Sequence[ExampleRow], metrics: Mapping[str, Any]) -> str:
    def tag(seen: bool) -> str:
        return f'<span class="tag{"" if seen else " unseen"}">{_kind(seen)}</span>'

    items = []
    for row in examples:
        verdict = (
            '<span class="ok">correct</span>' if row.correct else '<span class="bad">wrong</span>'
        )
        items.append(
            '<div class="example">'
            f"<figure>{_img(image_png_base64(row.original), 'image')}"
            "<figcaption>image</figcaption></figure>"
            f"<figure>{_img(image_png_base64(row.cam_predicted), 'Grad-CAM predicted')}"
            "<figcaption>Grad-CAM, predicted row</figcaption></figure>"
            f"<figure>{_img(image_png_base64(row.cam_true), 'Grad-CAM true')}"
            "<figcaption>Grad-CAM, true row</figcaption></figure>"
            f'<div class="text">{verdict} &middot; true <b>{html.escape(row.true_class)}</b>'
            f"{tag(row.true_seen)}<br>"
            f"<q>{html.escape(row.text)}</q> {tag(row.predicted_seen)}</div>"
            "</div>"
        )
    gamma = (metrics.get("textual") or {}).get("gamma")
    body = "".join(items) or "<p class='note'>No test images to explain.</p>"
    return (
        "<section><h2>Example explanations</h2>"
        f"<p class='note'>NIWT predictions at the calibrated gamma ({_fmt(gamma, 3)}). The text is "
        "the inverse map (importance &rarr; domain knowledge) applied to the importance of the "
        "predicted class's row on the image; the maps are Grad-CAM of the predicted row and of "
        "the true class's row (new NIWT rows for unseen classes) at the importance layer.</p>"
        f"{body}</section>"
    )


_GROUP_LABELS = {
    "all": "all test images",
    "seen": "seen-class images",
    "unseen": "unseen-class images",
}


def _section_explanation_scores(metrics: Mapping[str, Any]) -> str:
    textual = metrics.get("textual") or {}
    groups = textual.get("precision_at_k") or {}
    k = metrics.get("top_k", "k")
    sub = ["images", f"P@{k}", "random", "class prior"]
    head = (
        "<tr><th rowspan='2'>test images</th><th colspan='4'>correct predictions</th>"
        f"<th colspan='4'>wrong predictions</th><th rowspan='2'>P@{k} all</th></tr>"
        f"<tr>{''.join(f'<th>{c}</th>' for c in sub * 2)}</tr>"
    )
    body = []
    for group, values in groups.items():
        cells = [_GROUP_LABELS.get(group, group)]
        for part in ("correct", "incorrect"):
            cells += [
                _fmt(values.get(f"n_{part}")),
                f"<b>{_fmt(values.get(part), 3)}</b>",
                _fmt(values.get(f"random_{part}"), 3),
                _fmt(values.get(f"class_prior_{part}"), 3),
            ]
        cells.append(_fmt(values.get("all"), 3))
        numbers = "".join(f"<td class='num'>{c}</td>" for c in cells[1:])
        body.append(f"<tr><td>{cells[0]}</td>{numbers}</tr>")
    table = (
        f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
        if body
        else "<p class='note'>Not scored.</p>"
    )
    return (
        f"<section><h2>Scored textual explanations (precision@{k})</h2>"
        f"<p><b>Source of truth:</b> {html.escape(str(textual.get('truth_description', '?')))}</p>"
        f"{table}<p class='note'>Precision@{k}: share of an explanation's {k} dimensions that "
        "are true for the image. Random: the expected precision of naming "
        f"{k} dimensions uniformly at random (the share of true dimensions). Class prior: "
        f"naming the {k} largest domain-knowledge dimensions of the predicted class, without "
        "looking at the image (an upper reference when the prediction is correct, since the "
        "class's attributes describe most of its images).</p></section>"
    )


def _section_neurons(names: pd.DataFrame, metrics: Mapping[str, Any], max_neurons: int) -> str:
    agreement = metrics.get("neuron_names") or {}
    wide = neuron_names_wide(names) if len(names) else pd.DataFrame()
    shown = (
        wide.sort_values("mapper_top_score", ascending=False).head(max_neurons)
        if len(wide)
        else wide
    )
    table = (
        html_table(shown.drop(columns="mapper_top_score"), digits=0)
        if len(shown)
        else "<p class='note'>No neuron names.</p>"
    )
    head = ""
    if agreement:
        head = (
            f"<div class='kpis'><div class='kpi'><b>{agreement['agreement']:.3f}</b>"
            f"<span>top-{agreement['top_k']} agreement</span></div>"
            f"<div class='kpi'><b>{agreement['random_baseline']:.3f}</b><span>random naming"
            "</span></div>"
            f"<div class='kpi'><b>{agreement['n_neurons']}</b><span>neurons</span></div></div>"
        )
    return (
        "<section><h2>Neuron names</h2>"
        f"{head}<p class='note'>Each neuron of the importance layer named by the domain-knowledge "
        "dimensions that map most strongly onto it: from the mapper's weights, and independently "
        "from the correlation of the neuron's importance with the domain knowledge over the seen "
        f"training images. Showing the {len(shown)} neurons with the largest mapper weight of "
        f"{len(wide)}; the full table is in neuron_names.md / neuron_names.parquet.</p>"
        f"{table}</section>"
    )


def _section_timings(timings: Sequence[tuple[str, float | None, str]]) -> str:
    if not timings:
        return ""
    frame = pd.DataFrame([{"stage": s, "seconds": sec, "source": src} for s, sec, src in timings])
    return (
        "<section><h2>Stage timings</h2>"
        f"{html_table(frame, digits=1)}"
        "<p class='note'>Per-node wall times of the whole run are written by the timing hook "
        "after the last node, to data/08_reporting/run_timings.json and MLflow "
        "(<code>seconds.*</code>); this page shows the timings the stages recorded in their "
        "own reports.</p></section>"
    )


__all__ = [
    "ExampleRow",
    "GZSLViews",
    "ReportInputs",
    "build_report",
    "explanation_grid",
    "figure_png_base64",
    "gzsl_views",
    "html_table",
    "image_png_base64",
    "neuron_names_markdown",
    "neuron_names_wide",
    "per_class_accuracy_figure",
]
