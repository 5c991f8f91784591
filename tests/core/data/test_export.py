"""The xlsa17 interop export: written like xlsa17, read back by the project's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from safetensors.numpy import load_file

from niwt_pipeline.core.data import export as export_module
from niwt_pipeline.core.data.export import export_xlsa17, read_xlsa17_export
from niwt_pipeline.core.data.xlsa17 import read_att_splits

# 3 classes (0, 1 seen; 2 unseen), 6 images given in an unsorted order.
FILES = np.array(["b/2.jpg", "a/1.jpg", "c/1.jpg", "a/0.jpg", "b/1.jpg", "c/0.jpg"])
LABELS = np.array([1, 0, 2, 0, 1, 2])
SPLITS = np.array(["trainval", "test_seen", "test_unseen", "trainval", "trainval", "test_unseen"])
NAMES = np.array(["zebra", "ant", "moth"])  # deliberately not sorted
ATT = np.array([[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]])  # (A=2, C=3)


def _case() -> dict:
    features = np.arange(6 * 4, dtype=np.float32).reshape(6, 4) + LABELS[:, None] * 100
    return {
        "features": features,
        "labels": LABELS,
        "image_files": FILES,
        "splits": SPLITS,
        "class_names": NAMES,
        "att": ATT,
        "seen_rows": np.arange(8, dtype=np.float32).reshape(2, 4),
        "seen_bias": np.array([0.5, -0.5], dtype=np.float32),
        "seen_class_ids": np.array([1, 0]),
    }


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, dict]:
    case = _case()
    return export_xlsa17(tmp_path / "xlsa17", **case), case


# Per image, in FILES order: the validation's roles and the backbone's.
VALIDATION_ROLES = np.array(["train", "", "", "val", "train", ""])
BACKBONE_ROLES = np.array(["train", "", "", "", "holdout", ""])


class TestTrainValidationSplit:
    @pytest.fixture
    def with_roles(self, tmp_path: Path) -> Path:
        case = _case() | {"validation_roles": VALIDATION_ROLES, "backbone_roles": BACKBONE_ROLES}
        return export_xlsa17(tmp_path / "xlsa17", **case)

    def test_train_loc_and_val_loc_are_written_like_xlsa17s(self, with_roles):
        raw = scipy.io.loadmat(with_roles / "att_splits.mat")
        mat = scipy.io.loadmat(with_roles / "res101.mat")
        files = [str(np.asarray(f).ravel()[0]) for f in mat["image_files"].ravel()]
        # sorted files: a/0 a/1 b/1 b/2 c/0 c/1 -> b/2 (train) is 4th, a/0 (val) 1st, b/1 3rd
        assert raw["train_loc"].tolist() == [[3], [4]] and files[2:4] == ["b/1.jpg", "b/2.jpg"]
        assert raw["val_loc"].tolist() == [[1]] and files[0] == "a/0.jpg"
        assert raw["backbone_train_loc"].tolist() == [[4]]
        assert raw["backbone_holdout_loc"].tolist() == [[3]]
        splits = read_att_splits(with_roles / "att_splits.mat")
        assert splits.train_loc.tolist() == [2, 3] and splits.val_loc.tolist() == [0]

    def test_the_roles_read_back(self, with_roles):
        back = read_xlsa17_export(with_roles)
        order = np.argsort(FILES, kind="stable")
        assert back.validation_roles.tolist() == VALIDATION_ROLES[order].tolist()
        assert back.backbone_roles.tolist() == BACKBONE_ROLES[order].tolist()

    def test_an_export_without_roles_has_none(self, exported):
        folder, _ = exported
        back = read_xlsa17_export(folder)
        assert back.validation_roles is None and back.backbone_roles is None
        assert "train_loc" not in scipy.io.loadmat(folder / "att_splits.mat")

    def test_an_export_with_the_old_features_name_is_still_read(self, exported):
        folder, case = exported
        (folder / "res101.mat").rename(folder / "features.mat")
        np.testing.assert_array_equal(
            read_xlsa17_export(folder).features, case["features"][np.argsort(FILES)]
        )

    def test_unknown_roles_are_refused(self, tmp_path):
        case = _case() | {"validation_roles": np.array(["train", "", "", "test", "", ""])}
        with pytest.raises(ValueError, match=r"validation_roles must be in \['train', 'val'\]"):
            export_xlsa17(tmp_path / "x", **case)
        assert not (tmp_path / "x").exists()


class TestRoundTrip:
    def test_files_are_laid_out_like_xlsa17(self, exported):
        folder, case = exported
        mat = scipy.io.loadmat(folder / "res101.mat")  # the name xlsa17 scripts open
        assert mat["features"].shape == (4, 6)  # D x N
        assert mat["labels"].shape == (6, 1)
        files = [str(np.asarray(f).ravel()[0]) for f in mat["image_files"].ravel()]
        assert files == sorted(FILES.tolist())
        assert sorted(p.name for p in folder.iterdir()) == [
            "att_splits.mat",
            "classifier.safetensors",
            "res101.mat",
        ]

    def test_locations_pick_the_right_columns_and_labels(self, exported):
        folder, case = exported
        mat = scipy.io.loadmat(folder / "res101.mat")
        raw = scipy.io.loadmat(folder / "att_splits.mat")
        files = [str(np.asarray(f).ravel()[0]) for f in mat["image_files"].ravel()]
        for key, split in (
            ("trainval_loc", "trainval"),
            ("test_seen_loc", "test_seen"),
            ("test_unseen_loc", "test_unseen"),
        ):
            loc = raw[key].ravel()  # 1-based, as in xlsa17
            assert loc.min() >= 1
            expected = {FILES[i] for i in np.flatnonzero(SPLITS == split)}
            assert {files[p - 1] for p in loc} == expected
            for p in loc:
                original = FILES.tolist().index(files[p - 1])
                np.testing.assert_array_equal(mat["features"][:, p - 1], case["features"][original])
                assert mat["labels"][p - 1, 0] == LABELS[original] + 1  # 1-based

    def test_att_columns_are_normalised_in_allclasses_names_order(self, exported):
        folder, _ = exported
        splits = read_att_splits(folder / "att_splits.mat")
        assert splits.allclasses_names == NAMES.tolist()
        np.testing.assert_allclose(np.linalg.norm(splits.att, axis=0), 1.0)
        np.testing.assert_allclose(splits.att[:, 0], [0.6, 0.8])
        np.testing.assert_allclose(splits.original_att, ATT)

    def test_classifier_rows_keep_their_class(self, exported):
        folder, case = exported
        classifier = load_file(str(folder / "classifier.safetensors"))
        np.testing.assert_array_equal(classifier["weight"], case["seen_rows"])
        np.testing.assert_array_equal(classifier["bias"], case["seen_bias"])
        np.testing.assert_array_equal(classifier["labels"], [2, 1])

    def test_read_back_gives_the_export_arguments_in_sorted_order(self, exported):
        folder, case = exported
        back = read_xlsa17_export(folder).as_arrays()
        order = np.argsort(FILES)
        np.testing.assert_array_equal(back["features"], case["features"][order])
        np.testing.assert_array_equal(back["labels"], LABELS[order])
        np.testing.assert_array_equal(back["image_files"], FILES[order])
        np.testing.assert_array_equal(back["splits"], SPLITS[order])
        np.testing.assert_array_equal(back["class_names"], NAMES)
        np.testing.assert_allclose(back["att"], ATT)
        np.testing.assert_array_equal(back["seen_class_ids"], [1, 0])

    def test_exporting_again_replaces_the_folder(self, exported):
        folder, case = exported
        case = dict(case, features=case["features"] * 2)
        export_xlsa17(folder, **case)
        back = read_xlsa17_export(folder)
        np.testing.assert_array_equal(back.features, case["features"][np.argsort(FILES)])
        assert [p.name for p in folder.parent.iterdir()] == [folder.name]


class TestAtomicWrite:
    def test_a_failure_leaves_no_partial_folder(self, tmp_path, monkeypatch):
        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(export_module, "write_att_splits", broken)
        with pytest.raises(OSError, match="disk full"):
            export_xlsa17(tmp_path / "xlsa17", **_case())
        assert list(tmp_path.iterdir()) == []

    def test_a_failure_keeps_the_earlier_export(self, exported, monkeypatch):
        folder, case = exported
        monkeypatch.setattr(export_module, "save_file", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            export_xlsa17(folder, **dict(case, features=case["features"] * 2))
        back = read_xlsa17_export(folder)
        np.testing.assert_array_equal(back.features, case["features"][np.argsort(FILES)])
        assert [p.name for p in folder.parent.iterdir()] == [folder.name]


class TestInvalidInput:
    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"splits": np.array(["trainval"] * 5 + ["val"])}, "splits must be in"),
            ({"labels": np.array([0, 1, 2, 3, 0, 1])}, "labels must be class ids"),
            ({"image_files": np.array(["a.jpg"] * 6)}, "unique"),
            ({"att": ATT[:, :2]}, "att must be"),
            ({"seen_bias": np.zeros(3)}, "do not fit"),
        ],
    )
    def test_bad_arguments_fail_before_writing(self, tmp_path, change, message):
        with pytest.raises(ValueError, match=message):
            export_xlsa17(tmp_path / "xlsa17", **dict(_case(), **change))
        assert list(tmp_path.iterdir()) == []
