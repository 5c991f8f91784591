"""The report's figures: seen-unseen curves, confusion matrix, per-class accuracy and the
explanation grid.

Functions return ``matplotlib.figure.Figure`` objects built without pyplot, so no GUI
backend is touched and the global backend is left alone (saving renders with Agg); they
are never shown or saved here: the catalog or the page does that.  Accuracies are given as
fractions and drawn in percent, except in the per-class table, which holds percent.

* :func:`gzsl_views` draws a :class:`~niwt_pipeline.core.gzsl.GZSLEvaluation` as it is
  (curves, operating points, confusion matrix, per-class accuracy); nothing is recomputed.
* :func:`explanation_grid` lays out Grad-CAM overlays next to each image's textual
  explanation (also saved as the ``gradcam_examples`` PNG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from niwt_pipeline.core.gzsl import GZSLEvaluation
from niwt_pipeline.core.metrics import ausuc, confusion_matrix

METHOD_LABELS = {
    "niwt_paper": "NIWT (paper settings)",
    "niwt_tuned": "NIWT (validated variant)",
    "ensemble_niwt_tuned_eszsl": "ensemble: validated NIWT + ESZSL (score fusion)",
    "weight_regression": "ridge rows (weight regression)",
    "eszsl": "ESZSL",
    "ale": "ALE (bilinear, weighted ranking loss)",
    "sje": "SJE (bilinear, structured SVM loss)",
    "devise": "DeViSE (bilinear, hinge rank loss)",
    "sae": "SAE (semantic autoencoder)",
    "fclswgan": "f-CLSWGAN (generated features + softmax)",
}
"""Display names of the scored methods; unknown methods are shown by their key."""


# ---------------------------------------------------------------------------------------
# Seen-unseen curves and confusion matrices
# ---------------------------------------------------------------------------------------
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

    Raises:
        ValueError: when ``cm``, ``class_names`` and ``seen_mask`` disagree in size.
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


# ---------------------------------------------------------------------------------------
# GZSL views drawn from the evaluation
# ---------------------------------------------------------------------------------------
@dataclass
class GZSLViews:
    """What the report draws of the GZSL evaluation.

    Attributes:
        curve_figure: seen-unseen curves of every method, operating points at each
            method's calibrated gamma.
        confusion_figure: the confusion matrix of one method (NIWT by default) at its
            calibrated gamma.
        per_class: one row per class: ``class_id``, ``name``, ``seen``, ``n_test_images``,
            then each method's top-1 accuracy (percent, calibrated; NaN without images).
        accuracy_figure: per-class accuracy of the first method (bars) and the other
            methods (markers).
        classes_without_images: names of the classes that have no test images.
    """

    curve_figure: Figure
    confusion_figure: Figure
    per_class: pd.DataFrame
    accuracy_figure: Figure
    classes_without_images: list[str] = field(default_factory=list)


def gzsl_views(
    evaluation: GZSLEvaluation,
    classes: pd.DataFrame,
    *,
    confusion_method: str = "niwt_tuned",
) -> GZSLViews:
    """The report's GZSL figures and per-class table, drawn from an evaluation as it is.

    Nothing is recomputed from the scores: every number comes from ``evaluation``'s
    :class:`~niwt_pipeline.core.gzsl.GZSLResult` objects.  With N test images, C classes
    (``evaluation.class_ids``, in that order) and the methods in ``evaluation.methods``
    order, it draws:

    * the seen-unseen curve of each method from ``curve_s`` / ``curve_u`` (fractions,
      drawn in percent, AUSUC in the legend), with the method's operating point at
      ``(metrics["S_calibrated"], metrics["U_calibrated"])``;
    * the (C, C) confusion matrix of ``confusion_method``, counted from its ``predicted``
      (N,) class ids against ``evaluation.labels`` (N,) and drawn row-normalised;
    * the per-class table and figure: ``n_test_images`` per class and each method's
      ``per_class_accuracy`` in percent (``100 *`` the fraction; NaN without images).

    Args:
        evaluation: the GZSL evaluation of every method on the test images.
        classes: ``class_id`` and ``name`` of (at least) every class of ``evaluation``;
            only the names are read (seen / unseen comes from ``evaluation.seen``).
        confusion_method: whose confusion matrix to draw (a method of ``evaluation``).

    Returns:
        A :class:`GZSLViews`; ``per_class`` has C rows in ``evaluation.class_ids`` order.

    Raises:
        KeyError: when ``confusion_method`` is not a method of ``evaluation``, or a class
            of ``evaluation`` has no row in ``classes``.
    """
    if confusion_method not in evaluation.results:
        raise KeyError(
            f"gzsl_views: confusion_method {confusion_method!r} is not among the evaluated "
            f"methods {evaluation.methods}"
        )
    class_ids = np.asarray(evaluation.class_ids, dtype=np.int64)
    seen = np.asarray(evaluation.seen, dtype=bool)
    by_id = {int(c): name for c, name in zip(classes["class_id"], classes["name"], strict=True)}
    missing = [int(c) for c in class_ids if int(c) not in by_id]
    if missing:
        raise KeyError(f"gzsl_views: classes has no name for the class ids {missing}")
    names = [by_id[int(c)] for c in class_ids]
    counts = pd.Series(np.asarray(evaluation.labels, dtype=np.int64)).value_counts()
    per_class = pd.DataFrame({"class_id": class_ids, "name": names, "seen": seen})
    per_class["n_test_images"] = [int(counts.get(int(c), 0)) for c in class_ids]
    for method, result in evaluation.results.items():
        per_class[method] = 100.0 * np.asarray(result.per_class_accuracy, dtype=np.float64)
    label = {m: METHOD_LABELS.get(m, m) for m in evaluation.results}
    curve_figure = plot_seen_unseen_curves(
        {label[m]: (r.curve_s, r.curve_u) for m, r in evaluation.results.items()},
        {
            label[m]: (r.metrics["S_calibrated"], r.metrics["U_calibrated"])
            for m, r in evaluation.results.items()
        },
    )
    confusion = confusion_matrix(
        evaluation.columns_of(evaluation.results[confusion_method].predicted),
        evaluation.columns_of(evaluation.labels),
        len(class_ids),
    )
    confusion_figure = plot_confusion(
        confusion,
        names,
        seen,
        title=f"{label[confusion_method]}: confusion matrix at the calibrated gamma",
    )
    return GZSLViews(
        curve_figure=curve_figure,
        confusion_figure=confusion_figure,
        per_class=per_class,
        accuracy_figure=per_class_accuracy_figure(per_class, evaluation.methods),
        classes_without_images=per_class.loc[per_class["n_test_images"] == 0, "name"].tolist(),
    )


def per_class_accuracy_figure(per_class: pd.DataFrame, methods: Sequence[str]) -> Figure:
    """Horizontal bars of the first method's per-class accuracy, markers for the others;
    unseen classes first and in red, as in the confusion matrix.

    Args:
        per_class: a table like :attr:`GZSLViews.per_class`: ``name``, ``seen`` and one
            column per method with its accuracy in percent (NaN drawn as an empty bar).
        methods: the method columns to draw; the first is drawn as bars.

    Raises:
        ValueError: when ``methods`` is empty.
        KeyError: when a method is not a column of ``per_class``.
    """
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
        """Whether the predicted class is the true class."""
        return self.true_class == self.predicted_class


def example_rows(explained: pd.DataFrame, examples: Mapping[str, Any]) -> list[ExampleRow]:
    """The :class:`ExampleRow` of each explained image that has Grad-CAM maps.

    Args:
        explained: the textual explanations (``image_id``, ``true_class``,
            ``predicted_class``, ``true_seen``, ``predicted_seen``, ``text``).
        examples: ``image_id`` (N,), ``original``, ``cam_predicted``, ``cam_true``
            (N, H, W, 3) uint8 tensors or arrays, in the examples' order.

    Returns:
        N rows, in the order of ``examples["image_id"]``.

    Raises:
        KeyError: when an example's image is not among ``explained``.
    """
    ids = np.asarray(examples["image_id"]).astype(np.int64)
    table = explained.set_index("image_id").loc[ids].reset_index()
    arrays = {k: np.asarray(examples[k]) for k in ("original", "cam_predicted", "cam_true")}
    return [
        ExampleRow(
            original=arrays["original"][i],
            cam_predicted=arrays["cam_predicted"][i],
            cam_true=arrays["cam_true"][i],
            true_class=str(row.true_class),
            predicted_class=str(row.predicted_class),
            true_seen=bool(row.true_seen),
            predicted_seen=bool(row.predicted_seen),
            text=str(row.text),
        )
        for i, row in enumerate(table.itertuples(index=False))
    ]


def _kind(seen: bool) -> str:
    return "seen" if seen else "unseen (NIWT row)"


def explanation_grid(rows: Sequence[ExampleRow], *, title: str | None = None) -> Figure:
    """A grid: per image, the image, Grad-CAM of the predicted row and of the true row,
    with the textual explanation beside them.

    Args:
        rows: the explained images (``(H, W, 3)`` uint8 panels); none gives a single
            "no test images" panel.
        title: the figure's title.

    Returns:
        A figure with 4 axes per row (3 images and the text).
    """
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
