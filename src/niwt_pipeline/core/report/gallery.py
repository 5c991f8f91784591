"""``predictions.html``: a page a person can scan, one card per classified image (its
thumbnail, the top classes with their probabilities, seen or unseen, the explanation),
and a card naming the error for every file that could not be read."""

from __future__ import annotations

import html
from collections.abc import Mapping

import pandas as pd
from PIL import Image

from niwt_pipeline.core.report.encode import _img, image_png_base64

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.8rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.85rem}
.card{overflow-wrap:anywhere;min-width:0}
.card img{width:100%;height:auto;image-rendering:pixelated;border-radius:4px}
.card.error{border-color:#c33;background:#fff5f5}
.unseen{color:#06c;font-weight:600}.seen{color:#555}
.path{color:#777;font-size:.75rem;word-break:break-all}
ol{margin:.3rem 0;padding-left:1.2rem}.why{font-style:italic}
"""


def predictions_gallery(
    predictions: pd.DataFrame,
    thumbnails: Mapping[str, Image.Image],
    *,
    title: str,
    top_k: int,
    shown: int,
) -> str:
    """The gallery page as one self-contained HTML string (thumbnails as base64 PNG).

    Args:
        predictions: the table of :meth:`ZeroShotClassifier.predict` (``image``, ``error``,
            ``class_<r>``, ``probability_<r>``, ``seen_<r>``, optionally ``explanation``).
        thumbnails: image name -> small RGB image, for the rows shown (missing: no picture).
        title: the page heading (e.g. the classifier's dataset and method).
        top_k: ranks shown per image (at most the table's).
        shown: how many rows are shown (the first ones); the page says how many exist.

    Returns:
        The HTML page.
    """
    n_errors = int((predictions["error"] != "").sum()) if len(predictions) else 0
    rows = predictions.head(shown)
    cards = []
    for _, row in rows.iterrows():
        name = str(row["image"])
        picture = _img(image_png_base64(thumbnails[name]), name) if name in thumbnails else ""
        if row["error"]:
            body = f"<p><b>not classified</b>: {html.escape(str(row['error']))}</p>"
            cards.append(
                f"<div class='card error'><div class='path'>{html.escape(name)}</div>{body}</div>"
            )
            continue
        ranks = []
        for r in range(1, top_k + 1):
            if f"class_{r}" not in row:
                break
            kind = "seen" if row[f"seen_{r}"] else "unseen"
            ranks.append(
                f"<li><span class='{kind}'>{html.escape(str(row[f'class_{r}']))}</span> "
                f"{100 * float(row[f'probability_{r}']):.1f}% <small>({kind})</small></li>"
            )
        why = (
            f"<p class='why'>{html.escape(str(row['explanation']))}</p>"
            if "explanation" in row and row["explanation"]
            else ""
        )
        cards.append(
            f"<div class='card'>{picture}<ol>{''.join(ranks)}</ol>{why}"
            f"<div class='path'>{html.escape(name)}</div></div>"
        )
    summary = (
        f"{len(predictions)} image(s), {len(predictions) - n_errors} classified, "
        f"{n_errors} not readable; showing the first {len(rows)}."
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{summary} Probabilities are the softmax of the "
        "calibrated scores over every class; <span class='unseen'>blue</span> names are "
        "unseen classes (no training image).</p>"
        f"<div class='grid'>{''.join(cards)}</div></body></html>\n"
    )
