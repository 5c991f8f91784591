"""Encoding for the report page: figures and images as base64 PNG, values and tables as HTML.

Images become base64 PNG strings for ``data:image/png;base64,...`` URIs, so the page opens
anywhere, offline, without its data folder.  Nothing here reads or writes files.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image


def figure_png_base64(fig: Figure, *, dpi: int = 110) -> str:
    """A matplotlib figure as a base64 PNG (rendered with Agg, no pyplot, nothing shown).

    Args:
        fig: the figure; it is rendered, not changed or closed.
        dpi: resolution in dots per inch.

    Returns:
        The PNG bytes, base64-encoded as an ASCII string.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_png_base64(image: Image.Image | np.ndarray) -> str:
    """An RGB image (``PIL`` or ``(H, W, 3)`` uint8 array) as a base64 PNG.

    Returns:
        The PNG bytes, base64-encoded as an ASCII string.
    """
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
    """A small HTML table (escaped cells, NaN shown as a dash, numbers right-aligned).

    Args:
        frame: the rows and columns to show, as they are (no unit conversion).
        digits: decimals of the floats, for every column or per column name (default 1).
        css: the table's class.
        row_css: one class per row of ``frame`` (``""`` for none).
    """
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
