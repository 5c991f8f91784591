"""Sharded, resumable computation of per-row tensors over a table, one file per shard.

A long pass over a table (the backbone over every image) is cut into contiguous shards of
rows in table order.  Each shard's tensors are written as their own safetensors file, with
a *fingerprint* of everything its values depend on in the file's metadata.  A re-run after
a crash or a kill recomputes only the shards whose file is missing or whose fingerprint
differs (stale), then merges every shard, in table order, into one dict of tensors::

    store = ShardStore(Path("data/04_feature/image_output_shards"))
    context = fingerprint(weights, spec, {"targets": "gt"})
    shards = plan_shards(images[["image_id", "path"]], shard_size=1024, context=context)
    run_shards(store, shards, lambda shard: compute(images.iloc[shard.start : shard.stop]))
    outputs = merge_shards(store, shards)

Files are written to a temporary name in the same folder and renamed into place, so a shard
file is either complete or absent; temporaries a killed run left behind are removed on the
next run.  Memory does not grow with the number of shards: one shard is computed, written
and dropped before the next, and the merge fills preallocated outputs one shard at a time.

The files are those of ``niwt_pipeline.datasets.SafetensorsDataset`` (JSON metadata under
the ``"json"`` key), so the folder also reads as a Kedro ``PartitionedDataset`` of them.
One writer per folder: two runs sharing a folder at once would remove each other's
temporaries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from niwt_pipeline.core.data.atomic import replaced_atomically
from niwt_pipeline.core.errors import InputError

logger = logging.getLogger(__name__)

#: Written into every shard; a new value makes every existing shard stale.
SHARD_FORMAT = "niwt-shard/1"
SUFFIX = ".safetensors"
_NAME = re.compile(r"^shard-(\d+)\.safetensors$")
_TEMPORARY = re.compile(r"^\.shard-\d+\.safetensors\..*\.tmp$")


# ---------------------------------------------------------------- fingerprints
def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` to ``digest`` in a canonical, type-tagged, length-prefixed form."""

    def chunk(tag: bytes, payload: bytes) -> None:
        digest.update(tag + len(payload).to_bytes(8, "little") + payload)

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        chunk(b"T", f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        chunk(b"t", tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype == object:
            _feed(digest, array.tolist())
            return
        chunk(b"A", f"{array.dtype.str}{array.shape}".encode())
        chunk(b"a", array.tobytes())
    elif isinstance(value, pd.DataFrame):
        chunk(b"D", json.dumps([str(c) for c in value.columns]).encode())
        for column in value.columns:
            _feed(digest, value[column].tolist())
    elif isinstance(value, Mapping):
        chunk(b"M", str(len(value)).encode())
        for key in sorted(value, key=str):
            chunk(b"k", str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        try:  # a flat list of scalars (ids, paths): one JSON chunk
            chunk(b"J", json.dumps(value, allow_nan=True).encode())
        except TypeError:
            chunk(b"L", str(len(value)).encode())
            for item in value:
                _feed(digest, item)
    elif isinstance(value, np.generic):
        _feed(digest, value.item())
    elif value is None or isinstance(value, (str, int, float, bool)):
        chunk(b"S", json.dumps(value, allow_nan=True).encode())
    else:
        raise InputError(f"cannot fingerprint a value of type {type(value).__name__}")


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: tensors and arrays by dtype, shape and bytes; dicts by
    sorted keys; DataFrames by columns and values; JSON scalars by their JSON text.

    Equal inputs give equal fingerprints in any process; a changed weight, id, path or
    setting gives another one.
    """
    digest = hashlib.sha256()
    _feed(digest, [SHARD_FORMAT, len(parts)])
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


# ---------------------------------------------------------------- plan
@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of the table, shard ``index`` of ``count``.

    Attributes:
        fingerprint: of the run's context and this shard's identity rows; a stored shard
            with another fingerprint is stale.
    """

    index: int
    count: int
    start: int
    stop: int
    fingerprint: str

    @property
    def name(self) -> str:
        """File stem, e.g. ``shard-00003`` (also its partition id)."""
        return f"shard-{self.index:05d}"

    def __len__(self) -> int:
        return self.stop - self.start


def plan_shards(identity: pd.DataFrame, shard_size: int, context: str) -> list[Shard]:
    """Cut the table's rows, in their order, into shards of ``shard_size`` rows (the last
    one shorter).

    Args:
        identity: (N, c) the columns that identify each row's input (e.g. ``image_id``,
            ``path``, ``class_id``); each shard's fingerprint covers its rows of them.
        shard_size: rows per shard, >= 1.
        context: fingerprint of what every shard depends on (weights, settings), from
            :func:`fingerprint`.

    Returns:
        ``ceil(N / shard_size)`` shards covering ``0..N`` in order (none for an empty table).

    Raises:
        InputError: if ``shard_size`` < 1.
    """
    if shard_size < 1:
        raise InputError(f"shard_size must be positive, got {shard_size}")
    n = len(identity)
    count = -(-n // shard_size)
    shards = []
    for index in range(count):
        start, stop = index * shard_size, min(n, (index + 1) * shard_size)
        rows = identity.iloc[start:stop]
        shards.append(Shard(index, count, start, stop, fingerprint(context, start, rows)))
    return shards


# ---------------------------------------------------------------- store
class ShardStore:
    """A folder of shard files ``shard-00000.safetensors``, ... with their fingerprints.

    The folder is created on the first write.  Writes are atomic (temporary file in the
    folder, fsync, rename), so a reader never sees a half-written shard.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ShardStore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """The file of shard ``name`` (``shard-00003`` -> ``<root>/shard-00003.safetensors``)."""
        return self.root / f"{name}{SUFFIX}"

    def names(self) -> list[str]:
        """Stems of the shard files present, in index order."""
        if not self.root.is_dir():
            return []
        found = [(int(m[1]), p.stem) for p in self.root.iterdir() if (m := _NAME.match(p.name))]
        return [stem for _, stem in sorted(found)]

    def fingerprint_of(self, name: str) -> str | None:
        """The fingerprint stored in shard ``name`` (reads the header only); ``None`` when
        the file is missing, unreadable or not a shard of this format."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("json") or "{}")
        except Exception:  # noqa: BLE001 - any unreadable file is simply stale
            return None
        if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
            return None
        return meta.get("fingerprint")

    def is_done(self, shard: Shard) -> bool:
        """Whether ``shard`` is stored with its current fingerprint."""
        return self.fingerprint_of(shard.name) == shard.fingerprint

    def write(self, shard: Shard, tensors: Mapping[str, torch.Tensor]) -> Path:
        """Store ``tensors`` (each with ``len(shard)`` rows) as ``shard``, atomically.

        Returns:
            The path of the written ``.safetensors`` file.

        Raises:
            InputError: if a value is not a tensor or does not have ``len(shard)`` rows.
            OSError: if the folder or file cannot be written (no partial file is left).
        """
        bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise InputError(f"shard {shard.name}: values of {bad} are not tensors")
        short = [k for k, v in tensors.items() if v.ndim == 0 or v.shape[0] != len(shard)]
        if short:
            raise InputError(f"shard {shard.name}: {short} do not have {len(shard)} rows")
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {
            "format": SHARD_FORMAT,
            "fingerprint": shard.fingerprint,
            "index": shard.index,
            "count": shard.count,
            "rows": [shard.start, shard.stop],
            "keys": list(data),
        }
        path = self.path(shard.name)
        with replaced_atomically(path) as tmp:
            save_file(data, str(tmp), metadata={"json": json.dumps(meta)})
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        return path

    def read(self, shard: Shard) -> dict[str, torch.Tensor]:
        """The tensors of ``shard``, in the order they were written; refuses a missing or
        stale file.

        Raises:
            InputError: if the file is missing, unreadable or stored with another fingerprint.
        """
        path = self.path(shard.name)
        if not self.is_done(shard):
            raise InputError(f"{path}: missing or stale (fingerprint differs); run it again")
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            order = json.loads(handle.metadata()["json"]).get("keys") or sorted(tensors)
        return {name: tensors[name] for name in order}

    def remove_temporary(self) -> list[Path]:
        """Delete the temporaries a killed run left behind; returns them."""
        if not self.root.is_dir():
            return []
        leftovers = [p for p in self.root.iterdir() if _TEMPORARY.match(p.name)]
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers

    def prune(self, keep: Iterable[Shard]) -> list[Path]:
        """Delete shard files that are not among ``keep`` (e.g. from another shard size)."""
        wanted = {shard.name for shard in keep}
        removed = [self.path(name) for name in self.names() if name not in wanted]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


# ---------------------------------------------------------------- run and merge
@dataclass
class ShardRun:
    """Which shards :func:`run_shards` computed and which it found done."""

    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0


def run_shards(
    store: ShardStore,
    shards: Sequence[Shard],
    compute: Callable[[Shard], Mapping[str, torch.Tensor]],
    *,
    prune: bool = True,
) -> ShardRun:
    """Compute and store every shard that is missing or stale, one at a time.

    Args:
        store: where the shards live.
        shards: from :func:`plan_shards`.
        compute: ``shard -> {name: (len(shard), ...) tensor}``; called only for shards
            that are not done, in order.  Its result is written, then dropped.
        prune: once every shard is stored, delete shard files not in ``shards``.

    Returns:
        The indices computed and skipped.  An exception from ``compute`` propagates; the
        shards stored before it stay, so the next run resumes after them.
    """
    leftovers = store.remove_temporary()
    if leftovers:
        logger.info("removed %d temporary file(s) of an interrupted run", len(leftovers))
    run = ShardRun()
    started = time.perf_counter()
    for shard in shards:
        where = f"shard {shard.index + 1}/{shard.count} (rows {shard.start}-{shard.stop - 1})"
        if store.is_done(shard):
            logger.info("%s: skipped (done)", where)
            run.skipped.append(shard.index)
            continue
        t0 = time.perf_counter()
        store.write(shard, compute(shard))
        run.computed.append(shard.index)
        logger.info("%s: computed in %.1f s", where, time.perf_counter() - t0)
    if prune:
        removed = store.prune(shards)
        if removed:
            logger.info("removed %d shard file(s) of another plan", len(removed))
    run.seconds = time.perf_counter() - started
    logger.info(
        "%d shard(s) in %s: %d computed, %d skipped, %.1f s",
        len(shards),
        store.root,
        len(run.computed),
        len(run.skipped),
        run.seconds,
    )
    return run


def merge_shards(store: ShardStore, shards: Sequence[Shard]) -> dict[str, torch.Tensor]:
    """The stored shards' tensors concatenated along rows, in shard order.

    Outputs are preallocated from the first shard and filled one shard at a time (memory:
    the outputs plus one shard).  Every shard must be done and hold the same names, dtypes
    and trailing shapes.

    Returns:
        ``{name: (N, ...) tensor}`` with N the total rows of ``shards``.

    Raises:
        InputError: if ``shards`` is empty, a shard is missing or stale, or a shard's names,
            dtypes or shapes differ from the first one's.
    """
    if not shards:
        raise InputError("no shards to merge (the table is empty)")
    total = sum(len(shard) for shard in shards)
    out: dict[str, torch.Tensor] = {}
    row = 0
    for shard in shards:
        tensors = store.read(shard)
        if not out:
            out = {k: torch.empty((total, *v.shape[1:]), dtype=v.dtype) for k, v in tensors.items()}
        if set(tensors) != set(out):
            raise InputError(f"shard {shard.name} holds {sorted(tensors)}, expected {sorted(out)}")
        for name, target in out.items():
            value = tensors[name]
            if value.shape != (len(shard), *target.shape[1:]) or value.dtype != target.dtype:
                raise InputError(
                    f"shard {shard.name}: {name} is {value.dtype}{tuple(value.shape)}, expected "
                    f"{target.dtype}{(len(shard), *target.shape[1:])}"
                )
            target[row : row + len(shard)] = value
        row += len(shard)
        del tensors
    return out


__all__ = [
    "SHARD_FORMAT",
    "Shard",
    "ShardRun",
    "ShardStore",
    "fingerprint",
    "merge_shards",
    "plan_shards",
    "run_shards",
]
