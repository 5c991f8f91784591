"""The run report: one self-contained HTML page built from plain inputs.

:func:`build_report` takes a :class:`ReportInputs` of plain values (dicts, DataFrames,
figures) and returns the page as a string; images are embedded as base64 PNG ``data:``
URIs, so the page opens anywhere, offline, without its data folder.  Nothing here reads or
writes files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from niwt_pipeline.core.report.encode import (
    _fmt,
    _img,
    figure_png_base64,
    html_table,
    image_png_base64,
)
from niwt_pipeline.core.report.figures import METHOD_LABELS, ExampleRow, GZSLViews, _kind
from niwt_pipeline.core.report.neurons import neuron_names_wide


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
    """The whole run report as one self-contained HTML page.

    Returns:
        The page (``<!DOCTYPE html>`` ... ``</html>``), every image embedded as a base64
        PNG ``data:`` URI.

    Raises:
        KeyError: when ``inputs.explanation_metrics["neuron_names"]`` is given but lacks
            ``agreement``, ``random_baseline``, ``top_k`` or ``n_neurons``.
    """
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
        fused = list(methods)[top].startswith("ensemble_")
        best = (
            f"Best calibrated H: <b>{html.escape(frame.loc[top, 'method'])}</b>"
            + (", a fusion of two methods' scores, not NIWT alone" if fused else "")
            + ". "
        )
    row_css = ["ours" if m.startswith("niwt") else "" for m in methods]
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
    "seen_departing": "seen-class images departing from their class's prototype",
    "unseen_departing": "unseen-class images departing from their class's prototype",
}

#: The explanations compared side by side: key in the scores, column label.
_EXPLAINERS = (
    ("", "explanation"),
    ("inverse_map", "paper's (inverse map)"),
    ("class_prior", "class prior"),
    ("random", "random"),
)


def _precision_key(name: str, part: str) -> str:
    """Key of one explainer's precision on ``part`` (``all``, ``correct``, ``incorrect``)."""
    if not name:
        return part
    return name if part == "all" else f"{name}_{part}"


def _row(label: str, cells: Sequence[str]) -> str:
    numbers = "".join(f"<td class='num'>{c}</td>" for c in cells)
    return f"<tr><td>{label}</td>{numbers}</tr>"


def _section_explanation_scores(metrics: Mapping[str, Any]) -> str:
    textual = metrics.get("textual") or {}
    groups = textual.get("precision_at_k") or {}
    k = metrics.get("top_k", "k")
    shown = [
        (name, label)
        for name, label in _EXPLAINERS
        if not name or any(_precision_key(name, "all") in v for v in groups.values())
    ]
    heads = "".join(f"<th>{label}</th>" for _, label in shown)
    overall, outcome = [], []
    for group, values in groups.items():
        label = _GROUP_LABELS.get(group, html.escape(group))
        overall.append(
            _row(
                label,
                [_fmt(values.get("n_images"))]
                + [
                    (f"<b>{_fmt(values.get(_precision_key(n, 'all')), 3)}</b>")
                    if not n
                    else _fmt(values.get(_precision_key(n, "all")), 3)
                    for n, _ in shown
                ],
            )
        )
        cells = []
        for part in ("correct", "incorrect"):
            cells.append(_fmt(values.get(f"n_{part}")))
            cells += [_fmt(values.get(_precision_key(n, part)), 3) for n, _ in shown]
        outcome.append(_row(label, cells))
    if overall:
        table = (
            f"<table><thead><tr><th>test images</th><th>images</th>{heads}</tr></thead>"
            f"<tbody>{''.join(overall)}</tbody></table>"
            "<h3>By prediction outcome</h3>"
            "<table><thead><tr><th rowspan='2'>test images</th>"
            f"<th colspan='{len(shown) + 1}'>correct predictions</th>"
            f"<th colspan='{len(shown) + 1}'>wrong predictions</th></tr>"
            f"<tr>{('<th>images</th>' + heads) * 2}</tr></thead>"
            f"<tbody>{''.join(outcome)}</tbody></table>"
        )
    else:
        table = "<p class='note'>Not scored.</p>"
    setup = textual.get("explanation") or {}
    described = ""
    if setup:
        validation = setup.get("validation_precision_at_k") or {}
        described = (
            "<p><b>Explanation:</b> the predicted class's domain knowledge blended with the "
            f"image's <b>{html.escape(str(setup.get('evidence')))}</b> evidence at weight "
            f"<b>{_fmt(setup.get('evidence_weight'), 2)}</b> (0: the class prior, 1: the "
            "evidence alone), contrast weight "
            f"{_fmt(setup.get('contrast_weight'), 2)}; chosen on "
            f"{html.escape(str(setup.get('chosen_on')))}"
            + (
                f" (validation precision@{k} {_fmt(validation.get('chosen'), 3)}, the "
                f"paper's {_fmt(validation.get('inverse_map'), 3)})"
                if validation
                else ""
            )
            + ".</p>"
        )
    return (
        f"<section><h2>Scored textual explanations (precision@{k})</h2>"
        f"<p><b>Source of truth:</b> {html.escape(str(textual.get('truth_description', '?')))}</p>"
        f"{described}{table}"
        f"{_contrast_and_diversity(textual, shown, k)}"
        f"<p class='note'>Precision@{k}: share of an explanation's {k} dimensions that "
        "are true for the image. Paper's: the inverse map applied to the predicted row's "
        "importance on the image (Selvaraju et al. 2018). Random: the expected precision of "
        f"naming {k} dimensions uniformly at random (the share of true dimensions). Class "
        f"prior: naming the {k} largest domain-knowledge dimensions of the predicted class, "
        "without looking at the image."
        + (f" {html.escape(str(textual['departing']))}." if textual.get("departing") else "")
        + "</p></section>"
    )


def _contrast_and_diversity(
    textual: Mapping[str, Any], shown: Sequence[tuple[str, str]], k: Any
) -> str:
    contrast = textual.get("contrastive_share") or {}
    diversity = textual.get("naming_diversity") or {}
    if not contrast and not diversity:
        return ""
    names = [n or "explanation" for n, _ in shown]
    heads = "".join(f"<th>{label}</th>" for _, label in shown)
    rows = []
    for group in [*contrast, *(g for g in diversity if g not in contrast)]:
        shares, named = contrast.get(group) or {}, diversity.get(group) or {}
        if not shares and not named:
            continue
        cells = [_fmt(shares.get(n), 3) for n in names]
        cells += [_fmt((named.get(n) or {}).get("n_distinct"), 1) for n in names]
        for n in names:
            entry = named.get(n) or {}
            top = entry.get("top_attribute")
            share = _fmt(entry.get("top_attribute_share"), 2)
            cells.append(f"{share} ({html.escape(str(top))})" if top else share)
        rows.append(_row(_GROUP_LABELS.get(group, html.escape(group)), cells))
    return (
        "<h3>Contrastive and specific?</h3>"
        "<table><thead><tr><th rowspan='2'>test images</th>"
        f"<th colspan='{len(shown)}'>contrastive share</th>"
        f"<th colspan='{len(shown)}'>distinct dimensions named</th>"
        f"<th colspan='{len(shown)}'>share naming the most frequent one</th></tr>"
        f"<tr>{heads * 3}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class='note'>Contrastive share: mean share of the {k} named dimensions whose "
        "class-level presence (value above the dimension's mean over classes) differs between "
        "the predicted class and the runner-up class (the second-highest calibrated score): "
        "the part of the explanation that says why this class and not the runner-up. "
        "Distinct dimensions: how many different dimensions the explanations name (random: "
        "the expectation); the last columns give the share of explanations naming the most "
        "frequent dimension.</p>"
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


def stage_timings(
    backbone_report: Mapping[str, Any], transfer_report: Mapping[str, Any]
) -> list[tuple[str, float | None, str]]:
    """The stage timings the stages persisted in their own reports, for the page's table:
    ``[(stage, seconds, where the number comes from)]``."""
    out: list[tuple[str, float | None, str]] = [
        ("backbone training", backbone_report.get("train_seconds"), "backbone_report.train_seconds")
    ]
    for method in ("niwt_paper", "niwt_tuned"):
        part = transfer_report.get(method) or {}
        timings = part.get("timings") or {}
        if "optimise" in timings:
            out.append(
                (
                    f"NIWT transfer, {method} rows ({part.get('steps')} steps)",
                    timings["optimise"],
                    f"transfer_report.{method}.timings.optimise",
                )
            )
    return out
