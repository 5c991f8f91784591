"""Neuron names as tables and markdown.

Each neuron of the importance layer is named by the domain-knowledge dimensions that map
most strongly onto it, from the mapper's weights and, independently, from the covariation
of its importance with the domain knowledge.  Plain DataFrames in, strings and DataFrames
out; nothing reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


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
        agreement: ``{"agreement", "random_baseline", "top_k", "n_dimensions",
            "n_neurons", ...}`` (agreements are fractions in [0, 1]); omitted when empty.
        title: the markdown heading.

    Returns:
        The markdown text, ending with a newline.

    Raises:
        KeyError: when ``agreement`` is given but lacks one of the keys above.
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
    with scores), ``overlap`` (shared dimensions) and ``mapper_top_score``.

    Args:
        names: long table ``source`` (``mapper``/``covariation``), ``neuron``, ``rank``,
            ``dimension``, ``score`` (mapper weight or correlation).

    Returns:
        One row per neuron, sorted by ``neuron``; ``mapper_top_score`` is NaN for a neuron
        without a rank-1 mapper dimension.
    """
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
