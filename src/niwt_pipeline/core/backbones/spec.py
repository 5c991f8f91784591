"""What rebuilds and feeds a trained backbone: its architecture, importance layer,
preprocessing and the classes of its classifier's outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from niwt_pipeline.core.errors import InputError


@dataclass
class BackboneSpec:
    """How to rebuild and feed a trained backbone.

    Attributes:
        arch: architecture name (see :data:`~niwt_pipeline.core.backbones.zoo.ARCHS`).
        layer: the importance layer (a torch.fx node name).
        image_size: side of the square network input, in pixels.
        mean, std: per-channel input normalisation of [0, 1] pixel values.
        seen_class_ids: canonical ``class_id`` of classifier output ``j`` (seen classes only).
        crop_fraction: centre-crop fraction used at evaluation time.
        trunk: ``None`` when the whole network was trained; in frozen-trunk mode the
            fingerprint of the stored activations its head was trained on
            (:func:`~niwt_pipeline.core.trunk.trunk_context`), so later stages read them
            instead of running the unchanged pretrained stem again.
    """

    arch: str
    layer: str
    image_size: int
    mean: list[float]
    std: list[float]
    seen_class_ids: list[int]
    crop_fraction: float = 1.0
    trunk: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BackboneSpec:
        """Rebuild from the JSON form written by :meth:`to_dict`.

        Raises:
            InputError: when keys are missing or unknown (naming them).
        """
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("crop_fraction", "trunk")}
        missing = sorted(required - set(values))
        unknown = sorted(set(values) - known)
        if missing or unknown:
            raise InputError(
                f"backbone spec: missing keys {missing}, unknown keys {unknown}; "
                f"expected {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def seen_label_map(self) -> dict[int, int]:
        """``class_id -> classifier output index`` for the seen classes."""
        return {int(cid): j for j, cid in enumerate(self.seen_class_ids)}
