"""Errors raised on bad input, with the location that caused them."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, line, class or key that is not what was expected.

    The message always names where the problem is and what was expected, e.g.
    ``images.txt line 12: expected '<image_id> <relative path>', got 'abc'``.
    """


def where(path: str | Path, line: int | None = None, key: str | None = None) -> str:
    """Format a location prefix: ``'<path> line 3'``, ``'<path> [key]'``."""
    text = str(path)
    if line is not None:
        text += f" line {line}"
    if key is not None:
        text += f" [{key}]"
    return text


def fail(
    path: str | Path, message: str, *, line: int | None = None, key: str | None = None
) -> InputError:
    """Build an :class:`InputError` located at ``path`` (use as ``raise fail(...)``)."""
    return InputError(f"{where(path, line, key)}: {message}")


def shorten(items: list[str], limit: int = 8) -> str:
    """The first ``limit`` items joined by commas, then ``... (N more)`` when there are more."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
