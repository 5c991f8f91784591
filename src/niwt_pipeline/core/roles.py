"""Which images each training stage uses: the backbone's train/holdout roles and the
validation problem's pseudo-unseen classes.

"Split" is kept for the dataset's own partition (``trainval``, ``test_seen``,
``test_unseen``); the tables here give images a *role* within the trainval images.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from niwt_pipeline.core.errors import InputError

logger = logging.getLogger(__name__)

BACKBONE_ROLES = ("train", "holdout")
VALIDATION_ROLES = ("train", "holdout", "pseudo_unseen")


def stratified_holdout(class_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask choosing ``fraction`` of each class's items (at least one item kept in
    training per class; classes with one item are never held out).

    Args:
        class_ids: (N,) class of each item.
        fraction: share of each class to hold out, in [0, 1).
        seed: random seed.

    Returns:
        (N,) bool, True for the held-out items.

    Raises:
        InputError: when ``fraction`` is outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"holdout fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(class_ids), dtype=bool)
    for cid in np.unique(class_ids):
        members = np.flatnonzero(class_ids == cid)
        n_out = min(int(round(fraction * len(members))), len(members) - 1)
        if n_out > 0:
            held[rng.choice(members, size=n_out, replace=False)] = True
    return held


def choose_classes(class_ids: np.ndarray, amount: int | float, seed: int) -> np.ndarray:
    """A seeded choice of ``amount`` classes (a count, or a fraction of them; at least one
    when the amount is positive, and always leaving at least two unchosen).

    Returns:
        Sorted int64 array of the chosen class ids.

    Raises:
        InputError: when the amount would leave fewer than two classes unchosen.
    """
    class_ids = np.unique(np.asarray(class_ids, dtype=np.int64))
    if isinstance(amount, float) and 0.0 < amount < 1.0:
        count = max(1, int(round(amount * len(class_ids))))
    else:
        count = int(amount)
    if count < 0 or count > len(class_ids) - 2:
        raise InputError(
            f"cannot choose {amount} of {len(class_ids)} classes as pseudo-unseen "
            "(at least two must stay seen)"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(class_ids, size=count, replace=False))


def backbone_roles(trainval: pd.DataFrame, holdout_fraction: float, seed: int) -> pd.DataFrame:
    """Give every trainval image of a seen class the role ``train`` or ``holdout``.

    Args:
        trainval: the trainval rows of the images table (``image_id``, ``class_id``).
        holdout_fraction: the stratified share of each class held out of training.
        seed: seeds the choice.

    Returns:
        ``image_id`` (int64), ``role`` in :data:`BACKBONE_ROLES`, in ``trainval``'s order.

    Raises:
        InputError: when ``holdout_fraction`` is outside [0, 1).
    """
    held = stratified_holdout(trainval["class_id"].to_numpy(), holdout_fraction, seed)
    return pd.DataFrame(
        {
            "image_id": trainval["image_id"].astype("int64").to_numpy(),
            "role": pd.Series(["holdout" if h else "train" for h in held], dtype="str"),
        }
    )


def validation_roles(
    images: pd.DataFrame,
    seen_ids: np.ndarray,
    roles: pd.DataFrame,
    pseudo_unseen: int | float,
    seed: int,
) -> pd.DataFrame:
    """Choose the pseudo-unseen classes and give every trainval image of a seen class a role.

    Images of the other seen classes keep their backbone role (so the validation backbone
    trains on exactly the images the backbone trained on, minus the pseudo-unseen classes);
    every trainval image of a pseudo-unseen class is ``pseudo_unseen``.  Test images get
    no role.

    Args:
        images: the images table (``image_id``, ``class_id``).
        seen_ids: (S,) the seen class ids.
        roles: the backbone's roles (``image_id``, ``role``), from :func:`backbone_roles`.
        pseudo_unseen: how many seen classes become pseudo-unseen (a count or a fraction).
        seed: seeds their choice.

    Returns:
        ``image_id``, ``class_id``, ``role`` in :data:`VALIDATION_ROLES`.

    Raises:
        InputError: when ``roles`` names images that ``images`` lacks, or the amount of
            pseudo-unseen classes leaves fewer than two seen ones.
    """
    pseudo = choose_classes(np.asarray(seen_ids, dtype=np.int64), pseudo_unseen, seed)
    table = roles.merge(images[["image_id", "class_id"]], on="image_id", how="left")
    if table["class_id"].isna().any():
        missing = table.loc[table["class_id"].isna(), "image_id"].head(3).tolist()
        raise InputError(f"backbone_roles: image ids {missing} are not in images")
    role = np.where(np.isin(table["class_id"], pseudo), "pseudo_unseen", table["role"])
    out = pd.DataFrame(
        {
            "image_id": table["image_id"].astype("int64"),
            "class_id": table["class_id"].astype("int64"),
            "role": pd.Series(role, dtype="str"),
        }
    )
    logger.info(
        "validation: %d pseudo-unseen classes %s; images per role %s",
        len(pseudo),
        pseudo.tolist(),
        out["role"].value_counts().to_dict(),
    )
    return out


def rows_with_role(images: pd.DataFrame, roles: pd.DataFrame, *wanted: str) -> pd.DataFrame:
    """The rows of ``images`` whose ``image_id`` has one of the ``wanted`` roles, in the
    images table's order (index reset)."""
    ids = roles.loc[roles["role"].isin(wanted), "image_id"]
    return images[images["image_id"].isin(set(ids))].reset_index(drop=True)
