"""Every text file the project reads goes through :func:`read_text`: UTF-8 with or without a
byte-order mark, any line ending (``\\n``, ``\\r\\n``, ``\\r``); a file in another encoding
stops with a message naming the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

from niwt_pipeline.core.errors import fail


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped), line endings as
    ``\\n``.

    Raises:
        InputError: naming the file when it is missing, or the file and line of the first
            byte that is not UTF-8 (e.g. a spreadsheet's Windows-1252 export), with the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise fail(
            path,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)",
            line=line,
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
