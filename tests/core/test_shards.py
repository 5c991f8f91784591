"""Sharded, resumable runs: exact equality with one pass, resume after a failure, staleness,
atomic writes and streaming, on a tiny seeded CNN."""

from __future__ import annotations

import gc
import logging
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from niwt_pipeline.core.backbones import build_backbone, cut_at_layer
from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.importance import extract
from niwt_pipeline.core.shards import (
    Shard,
    ShardStore,
    fingerprint,
    merge_shards,
    plan_shards,
    run_shards,
)

N, BATCH, SHARD = 22, 4, 8  # 3 shards: 8 + 8 + 6 rows, each a whole number of batches


@pytest.fixture(scope="module")
def tiny():
    """A seeded small_cnn cut at block3, N random 16-px images, labels with unknown ones."""
    torch.manual_seed(0)
    cut = cut_at_layer(build_backbone("small_cnn", 3), "block3")
    x = torch.randn(N, 3, 16, 16)
    y = torch.tensor([0, 1, 2, -1, 5] * 4 + [1, 2])  # -1 and 5 are not classes of the model
    table = pd.DataFrame(
        {"image_id": np.arange(N) + 100, "path": [f"img/{i}.png" for i in range(N)]}
    )
    return cut, x, y, table


def outputs(cut, x, y, start: int, stop: int) -> dict[str, torch.Tensor]:
    """The extraction tensors of rows start:stop, batches of BATCH."""
    data = TensorDataset(x[start:stop], y[start:stop], torch.arange(stop - start))
    result = extract(cut, DataLoader(data, batch_size=BATCH), progress=False)
    return {
        "image_id": torch.arange(start, stop) + 100,
        "features": torch.from_numpy(result.features),
        "logits": torch.from_numpy(result.logits),
        "importance_gt": torch.from_numpy(result.importance_gt),
        "importance_pred": torch.from_numpy(result.importance_pred),
    }


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same names in the same order, dtypes, shapes and values (NaN rows included)."""
    assert list(a) == list(b)
    for name, x in a.items():
        torch.testing.assert_close(x, b[name], rtol=0, atol=0, equal_nan=True, msg=name)


class Counting:
    """``compute`` for run_shards that counts its calls and can fail on the n-th one."""

    def __init__(self, tiny, fail_on: int | None = None) -> None:
        self.cut, self.x, self.y, _ = tiny
        self.fail_on = fail_on
        self.calls: list[int] = []

    def __call__(self, shard: Shard) -> dict[str, torch.Tensor]:
        self.calls.append(shard.index)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("killed")
        return outputs(self.cut, self.x, self.y, shard.start, shard.stop)


def shard_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def plan(tiny):
    return plan_shards(tiny[3], SHARD, fingerprint("context"))


# ---------------------------------------------------------------- fingerprints and plans
def test_fingerprint_is_stable_and_sees_every_change():
    weights = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2)}
    same = {"b": torch.zeros(2), "w": torch.arange(6.0).view(2, 3)}  # other key order
    base = fingerprint(weights, {"targets": "gt"}, "cpu")

    assert base == fingerprint(same, {"targets": "gt"}, "cpu")
    assert len(base) == 64
    changed = [
        fingerprint({**weights, "b": torch.tensor([0.0, 1e-7])}, {"targets": "gt"}, "cpu"),
        fingerprint(
            {**weights, "b": torch.zeros(2, dtype=torch.float64)}, {"targets": "gt"}, "cpu"
        ),
        fingerprint({**weights, "w": torch.arange(6.0).view(3, 2)}, {"targets": "gt"}, "cpu"),
        fingerprint(weights, {"targets": "gt_and_pred"}, "cpu"),
        fingerprint(weights, {"targets": "gt"}, "cuda"),
        fingerprint(weights, {"targets": "gt"}),
    ]
    assert len({base, *changed}) == 1 + len(changed)


def test_fingerprint_refuses_what_it_cannot_read():
    with pytest.raises(InputError, match="object"):
        fingerprint(object())


def test_plan_covers_the_rows_in_order(tiny):
    shards = plan_shards(tiny[3], SHARD, "ctx")

    assert [(s.index, s.count, s.start, s.stop) for s in shards] == [
        (0, 3, 0, 8),
        (1, 3, 8, 16),
        (2, 3, 16, 22),
    ]
    assert [s.name for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]
    assert len({s.fingerprint for s in shards}) == 3
    assert plan_shards(tiny[3], SHARD, "ctx") == shards  # deterministic
    assert plan_shards(tiny[3].iloc[:0], SHARD, "ctx") == []
    with pytest.raises(InputError, match="shard_size"):
        plan_shards(tiny[3], 0, "ctx")


def test_a_shard_fingerprint_follows_its_rows_and_the_context(tiny):
    table = tiny[3]
    renamed = table.assign(path=table["path"].where(table.index != 9, "img/other.png"))
    before, after = plan_shards(table, SHARD, "ctx"), plan_shards(renamed, SHARD, "ctx")
    other = plan_shards(table, SHARD, "ctx2")

    assert [a.fingerprint == b.fingerprint for a, b in zip(before, after, strict=True)] == [
        True,
        False,
        True,
    ]
    assert all(a.fingerprint != b.fingerprint for a, b in zip(before, other, strict=True))


# ---------------------------------------------------------------- equality with one pass
def test_sharded_outputs_are_identical_to_one_pass(tiny, plan, tmp_path, caplog):
    cut, x, y, _ = tiny
    store = ShardStore(tmp_path / "shards")
    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")

    run = run_shards(store, plan, Counting(tiny))
    merged = merge_shards(store, plan)

    assert run.computed == [0, 1, 2] and run.skipped == []
    assert_identical(merged, outputs(cut, x, y, 0, N))
    assert torch.isnan(merged["importance_gt"][3]).all()  # an unknown label stays NaN
    assert shard_files(store.root) == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert "shard 2/3 (rows 8-15): computed in" in caplog.text


def test_a_second_run_computes_nothing(tiny, plan, tmp_path, caplog):
    store = ShardStore(tmp_path / "shards")
    run_shards(store, plan, Counting(tiny))
    again = Counting(tiny)
    caplog.set_level(logging.INFO, logger="niwt_pipeline.core.shards")

    run = run_shards(store, plan, again)

    assert again.calls == [] and run.skipped == [0, 1, 2]
    assert "shard 3/3 (rows 16-21): skipped (done)" in caplog.text


# ---------------------------------------------------------------- resume
def test_a_run_that_fails_after_two_shards_resumes_with_the_rest(tiny, plan, tmp_path):
    cut, x, y, _ = tiny
    store = ShardStore(tmp_path / "shards")
    failing = Counting(tiny, fail_on=3)

    with pytest.raises(RuntimeError, match="killed"):
        run_shards(store, plan, failing)

    assert failing.calls == [0, 1, 2]
    assert shard_files(store.root) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    resumed = Counting(tiny)
    run = run_shards(store, plan, resumed)
    assert resumed.calls == [2]
    assert run.computed == [2] and run.skipped == [0, 1]
    assert_identical(merge_shards(store, plan), outputs(cut, x, y, 0, N))


def test_a_stale_shard_is_recomputed(tiny, plan, tmp_path):
    table = tiny[3]
    store = ShardStore(tmp_path / "shards")
    run_shards(store, plan, Counting(tiny))
    # the image of row 17 now has another file: only the third shard is stale
    moved = table.assign(path=table["path"].where(table.index != 17, "img/moved.png"))
    new_plan = plan_shards(moved, SHARD, fingerprint("context"))
    again = Counting(tiny)

    run_shards(store, new_plan, again)

    assert again.calls == [2]
    assert store.fingerprint_of("shard-00002") == new_plan[2].fingerprint
    # weights or settings changed: every shard is stale
    changed = Counting(tiny)
    run_shards(store, plan_shards(table, SHARD, fingerprint("other weights")), changed)
    assert changed.calls == [0, 1, 2]


def test_a_corrupt_shard_file_is_recomputed(tiny, plan, tmp_path):
    store = ShardStore(tmp_path / "shards")
    run_shards(store, plan, Counting(tiny))
    store.path("shard-00001").write_bytes(b"not a safetensors file")
    again = Counting(tiny)

    run_shards(store, plan, again)

    assert again.calls == [1]
    assert store.is_done(plan[1])


def test_other_plans_files_are_pruned(tiny, tmp_path):
    table = tiny[3]
    store = ShardStore(tmp_path / "shards")
    run_shards(store, plan_shards(table, 4, "ctx"), Counting(tiny))  # 6 shards
    assert len(store.names()) == 6

    run_shards(store, plan_shards(table, 12, "ctx"), Counting(tiny))  # 2 shards

    assert store.names() == ["shard-00000", "shard-00001"]


# ---------------------------------------------------------------- atomic writes
def test_no_temporary_file_is_left_after_a_failure(tiny, plan, tmp_path, monkeypatch):
    store = ShardStore(tmp_path / "shards")

    with pytest.raises(RuntimeError):
        run_shards(store, plan, Counting(tiny, fail_on=2))
    with pytest.raises(InputError, match="rows"):
        store.write(plan[1], {"features": torch.zeros(3, 2)})

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr("niwt_pipeline.core.shards.save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        store.write(plan[1], {"features": torch.zeros(8, 2)})

    assert shard_files(store.root) == ["shard-00000.safetensors"]


def test_temporaries_of_a_killed_run_are_removed(tiny, plan, tmp_path):
    store = ShardStore(tmp_path / "shards")
    store.root.mkdir()
    leftover = store.root / ".shard-00001.safetensors.k1ll3d.tmp"
    leftover.write_bytes(b"half a shard")
    unrelated = store.root / "notes.txt"
    unrelated.write_text("kept")

    run_shards(store, plan, Counting(tiny))

    assert not leftover.exists() and unrelated.exists()
    assert shard_files(store.root) == ["notes.txt"] + [
        f"shard-0000{i}.safetensors" for i in range(3)
    ]


def test_shards_are_streamed_not_held(tiny, plan, tmp_path):
    """Each shard's tensors are released before the next shard is computed."""
    cut, x, y, _ = tiny
    alive: list[weakref.ref] = []
    held_when_computing: list[int] = []

    def compute(shard: Shard) -> dict[str, torch.Tensor]:
        gc.collect()
        held_when_computing.append(sum(ref() is not None for ref in alive))
        out = outputs(cut, x, y, shard.start, shard.stop)
        alive.append(weakref.ref(out["features"]))
        return out

    run_shards(ShardStore(tmp_path / "shards"), plan, compute)

    assert held_when_computing == [0, 0, 0]


# ---------------------------------------------------------------- merge
def test_merge_refuses_a_missing_or_stale_shard(tiny, plan, tmp_path):
    store = ShardStore(tmp_path / "shards")
    run_shards(store, plan, Counting(tiny))
    stale = plan_shards(tiny[3], SHARD, "another context")

    with pytest.raises(InputError, match="stale"):
        merge_shards(store, stale)
    store.path("shard-00001").unlink()
    with pytest.raises(InputError, match=r"shard-00001.*missing"):
        merge_shards(store, plan)
    with pytest.raises(InputError, match="no shards"):
        merge_shards(store, [])


def test_merge_refuses_shards_that_do_not_fit_together(plan, tmp_path):
    store = ShardStore(tmp_path / "shards")
    for shard in plan:
        width = 3 if shard.index == 1 else 2
        store.write(shard, {"features": torch.zeros(len(shard), width)})

    with pytest.raises(InputError, match=r"shard-00001: features"):
        merge_shards(store, plan)


def test_a_killed_process_resumes_where_it_stopped(tmp_path):
    """SIGKILL while computing the third shard, in a child process; then resume here."""
    import subprocess
    import sys
    import textwrap

    root = tmp_path / "shards"
    script = textwrap.dedent(
        f"""
        import os, signal
        import pandas as pd, torch
        from niwt_pipeline.core.shards import ShardStore, plan_shards, run_shards

        def compute(shard):
            if shard.index == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return {{"x": torch.arange(shard.start, shard.stop)}}

        table = pd.DataFrame({{"image_id": range(10)}})
        run_shards(ShardStore({str(root)!r}), plan_shards(table, 3, "ctx"), compute)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=False
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    assert shard_files(root) == ["shard-00000.safetensors", "shard-00001.safetensors"]

    calls: list[int] = []

    def compute(shard: Shard) -> dict[str, torch.Tensor]:
        calls.append(shard.index)
        return {"x": torch.arange(shard.start, shard.stop)}

    shards = plan_shards(pd.DataFrame({"image_id": range(10)}), 3, "ctx")
    run_shards(ShardStore(root), shards, compute)
    assert calls == [2, 3]
    assert torch.equal(merge_shards(ShardStore(root), shards)["x"], torch.arange(10))
