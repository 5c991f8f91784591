"""Figures for the reports: seen-unseen curves and confusion matrices.

Functions return ``matplotlib.figure.Figure`` objects built without pyplot, so no GUI
backend is touched and the global backend is left alone (saving renders with Agg); they
are never shown or saved here: the catalog saves them.  Accuracies are given as
fractions and drawn in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from niwt_pipeline.core.metrics import ausuc


def plot_seen_unseen_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    chosen: Mapping[str, tuple[float, float]] | None = None,
    *,
    title: str = "Seen-unseen accuracy curves (calibrated stacking)",
) -> Figure:
    """One curve per method, x = U, y = S (in percent), AUSUC in the legend.

    Args:
        curves: ``{method: (S array, U array)}`` as returned by ``seen_unseen_curve`` (fractions).
        chosen: ``{method: (S, U)}`` operating points to mark (e.g. at the chosen gamma).
    """
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for name, (s, u) in curves.items():
        s_arr, u_arr = np.asarray(s, dtype=float), np.asarray(u, dtype=float)
        order = np.lexsort((-s_arr, u_arr))
        (line,) = ax.plot(
            100 * u_arr[order],
            100 * s_arr[order],
            label=f"{name} (AUSUC {100 * ausuc(s_arr, u_arr):.1f})",
        )
        colors[name] = line.get_color()
    for name, (s, u) in (chosen or {}).items():
        ax.plot(
            [100 * u],
            [100 * s],
            marker="o",
            linestyle="none",
            color=colors.get(name, "k"),
            markeredgecolor="k",
            label=f"{name}: S {100 * s:.1f}, U {100 * u:.1f}",
        )
    ax.set_xlabel("U: accuracy on unseen classes (%)")
    ax.set_ylabel("S: accuracy on seen classes (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    if curves or chosen:
        ax.legend(fontsize="small", loc="upper right")
    return fig


def plot_confusion(
    cm: np.ndarray,
    class_names: Sequence[str],
    seen_mask: np.ndarray | Sequence[bool],
    *,
    normalise: bool = True,
    group: bool = True,
    title: str = "Confusion matrix",
) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted), readable for ~40 classes.

    Args:
        cm: (C, C) counts.
        class_names: C names.
        seen_mask: (C,) True for seen classes; unseen class names are drawn in red
            and (with ``group``) the classes are reordered seen first, with separator lines.
        normalise: divide each row by its total (rows without images stay 0).
    """
    mat = np.asarray(cm, dtype=float)
    seen = np.asarray(seen_mask, dtype=bool)
    n = mat.shape[0]
    if mat.shape != (n, n) or len(class_names) != n or seen.shape != (n,):
        raise ValueError(
            f"plot_confusion: cm {mat.shape}, {len(class_names)} names and "
            f"seen_mask {seen.shape} disagree"
        )
    order = np.concatenate([np.flatnonzero(seen), np.flatnonzero(~seen)]) if group else np.arange(n)
    mat = mat[np.ix_(order, order)]
    names = [str(class_names[i]) for i in order]
    is_seen = seen[order]
    if normalise:
        totals = mat.sum(1, keepdims=True)
        mat = np.divide(mat, totals, out=np.zeros_like(mat), where=totals > 0)
    size = float(np.clip(0.22 * n + 2.5, 4.0, 30.0))
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        mat, cmap="viridis", vmin=0.0, vmax=1.0 if normalise else None, interpolation="nearest"
    )
    fig.colorbar(
        image, ax=ax, shrink=0.6, label="fraction of the class's images" if normalise else "images"
    )
    font = float(np.clip(260.0 / max(n, 1), 4.0, 10.0))
    ax.set_xticks(np.arange(n), labels=names, rotation=90, fontsize=font)
    ax.set_yticks(np.arange(n), labels=names, fontsize=font)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for label, s in zip(ticks, is_seen, strict=True):
            label.set_color("black" if s else "tab:red")
    if group and 0 < seen.sum() < n:
        edge = int(seen.sum()) - 0.5
        ax.axhline(edge, color="white", linewidth=1.0)
        ax.axvline(edge, color="white", linewidth=1.0)
    ax.set_xlabel("predicted class (unseen in red)")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig
