"""Image roles: the backbone's train/holdout and the validation's pseudo-unseen classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from niwt_pipeline.core.errors import InputError
from niwt_pipeline.core.roles import (
    BACKBONE_ROLES,
    VALIDATION_ROLES,
    backbone_roles,
    choose_classes,
    rows_with_role,
    stratified_holdout,
    validation_roles,
)

# trainval images of the seen classes 0 (4 images), 1 (2) and 2 (1), out of class order
TRAINVAL = pd.DataFrame(
    {
        "image_id": [10, 11, 12, 13, 14, 15, 16],
        "class_id": [0, 1, 0, 2, 0, 1, 0],
        "split": ["trainval"] * 7,
    }
)
# the whole images table: the trainval images plus two test images (of classes 0 and 3)
IMAGES = pd.concat(
    [
        TRAINVAL,
        pd.DataFrame({"image_id": [20, 21], "class_id": [0, 3], "split": ["test_seen", "x"]}),
    ],
    ignore_index=True,
)
# hand-set backbone roles of the trainval images
ROLES = pd.DataFrame(
    {
        "image_id": [10, 11, 12, 13, 14, 15, 16],
        "role": ["train", "train", "holdout", "train", "train", "holdout", "train"],
    }
)


def test_stratified_holdout_counts_per_class():
    class_ids = TRAINVAL["class_id"].to_numpy()
    held = stratified_holdout(class_ids, 0.5, seed=0)
    assert held.dtype == bool and held.shape == (7,)
    # class 0: round(0.5 * 4) = 2; class 1: round(0.5 * 2) = 1; class 2: one image, kept
    assert [int(held[class_ids == c].sum()) for c in (0, 1, 2)] == [2, 1, 0]
    np.testing.assert_array_equal(held, stratified_holdout(class_ids, 0.5, seed=0))
    # at least one image of each class stays in training: round(0.9 * 4) = 4 -> 3
    most = stratified_holdout(class_ids, 0.9, seed=0)
    assert [int(most[class_ids == c].sum()) for c in (0, 1, 2)] == [3, 1, 0]
    assert not stratified_holdout(class_ids, 0.0, seed=0).any()
    for bad in (1.0, -0.1):
        with pytest.raises(InputError, match=r"holdout fraction must be in \[0, 1\)"):
            stratified_holdout(class_ids, bad, seed=0)


def test_choose_classes_counts_fractions_and_limits():
    classes = np.array([5, 1, 7, 3, 3, 9, 2, 8, 6])  # eight distinct classes
    two = choose_classes(classes, 2, seed=1)
    assert two.dtype == np.int64 and len(two) == 2 and set(two) <= set(classes)
    assert two.tolist() == sorted(two.tolist())
    np.testing.assert_array_equal(two, choose_classes(classes, 2, seed=1))
    assert len(choose_classes(classes, 0.25, seed=0)) == 2  # round(0.25 * 8)
    assert len(choose_classes(classes, 0.01, seed=0)) == 1  # at least one
    assert len(choose_classes(classes, 6, seed=0)) == 6  # leaves two
    with pytest.raises(InputError, match="cannot choose 7 of 8 classes"):
        choose_classes(classes, 7, seed=0)
    with pytest.raises(InputError, match="at least two must stay seen"):
        choose_classes(classes, -1, seed=0)


def test_backbone_roles_follow_the_stratified_holdout():
    roles = backbone_roles(TRAINVAL, 0.5, seed=3)
    assert roles.columns.tolist() == ["image_id", "role"]
    assert roles["image_id"].dtype == np.int64
    assert roles["image_id"].tolist() == TRAINVAL["image_id"].tolist()  # trainval's order
    held = stratified_holdout(TRAINVAL["class_id"].to_numpy(), 0.5, seed=3)
    assert roles["role"].tolist() == ["holdout" if h else "train" for h in held]
    assert set(roles["role"]) <= set(BACKBONE_ROLES)
    by_class = roles.assign(class_id=TRAINVAL["class_id"]).groupby("class_id")["role"]
    assert by_class.apply(lambda r: int((r == "holdout").sum())).tolist() == [2, 1, 0]
    assert (backbone_roles(TRAINVAL, 0.0, seed=3)["role"] == "train").all()


def test_validation_roles_make_one_class_pseudo_unseen():
    seen_ids = np.array([0, 1, 2])
    pseudo = choose_classes(seen_ids, 1, seed=4)
    assert len(pseudo) == 1
    table = validation_roles(IMAGES, seen_ids, ROLES, 1, seed=4)
    assert table.columns.tolist() == ["image_id", "class_id", "role"]
    assert table["image_id"].tolist() == ROLES["image_id"].tolist()  # no test image has a role
    assert table["class_id"].tolist() == [0, 1, 0, 2, 0, 1, 0]
    expected = [
        "pseudo_unseen" if c in pseudo else r
        for c, r in zip(table["class_id"], ROLES["role"], strict=True)
    ]
    assert table["role"].tolist() == expected
    assert set(table["role"]) <= set(VALIDATION_ROLES)


def test_validation_roles_with_two_pseudo_unseen_classes_over_seeds():
    seen_ids = np.array([0, 1, 2, 4])  # class 4 has no image: the choice may still pick it
    backbone_role = dict(zip(ROLES["image_id"], ROLES["role"], strict=True))
    chosen = set()
    for seed in range(6):
        pseudo = choose_classes(seen_ids, 0.5, seed=seed)  # round(0.5 * 4) = 2 classes
        assert len(pseudo) == 2
        chosen |= set(pseudo.tolist())
        table = validation_roles(IMAGES, seen_ids, ROLES, 0.5, seed=seed)
        for image_id, class_id, role in zip(*(table[c] for c in table.columns), strict=True):
            assert role == ("pseudo_unseen" if class_id in pseudo else backbone_role[image_id])
        held = table[table["role"] != "pseudo_unseen"]
        assert not held["class_id"].isin(pseudo).any()
    assert {0, 1} <= chosen  # classes with train and holdout images were among the choices


def test_validation_roles_errors():
    with pytest.raises(InputError, match=r"image ids \[99\] are not in images"):
        validation_roles(
            IMAGES, [0, 1, 2], pd.DataFrame({"image_id": [10, 99], "role": ["train"] * 2}), 1, 0
        )
    with pytest.raises(InputError, match="cannot choose 2 of 3 classes"):
        validation_roles(IMAGES, [0, 1, 2], ROLES, 2, seed=0)


def test_rows_with_role_keeps_the_images_order():
    rows = rows_with_role(IMAGES, ROLES, "holdout")
    assert rows["image_id"].tolist() == [12, 15]
    assert rows.index.tolist() == [0, 1]
    both = rows_with_role(IMAGES, ROLES.iloc[::-1], "train", "holdout")
    assert both["image_id"].tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert rows_with_role(IMAGES, ROLES, "pseudo_unseen").empty
