"""The finished zero-shot classifier as one object: a trained backbone, one classifier row
per class (seen rows and the rows NIWT built for classes without training images), the
calibrated-stacking ``gamma`` the validation chose, and, when the validated variant fuses
them, ESZSL's projection and class signatures.

It classifies new images among *all* classes (generalised zero-shot learning, GZSL):

    score_c(x)       = w_c . z(x) + b_c                       (NIWT rows; sec. 3.3 of
                                                               Selvaraju et al., ECCV 2018)
    fused_c(x)       = std(score)_c + fusion * std(eszsl)_c    (only when fusion > 0)
    calibrated_c(x)  = fused_c(x) - gamma * [c is seen]        (calibrated stacking,
                                                               Chao et al., ECCV 2016)
    probability_c(x) = softmax_c(calibrated(x))

and explains its top class in domain-knowledge words: the importance of the top class's
row on the image (the gradient of its logit w.r.t. the importance layer's activations,
summed over positions) mapped back to domain knowledge by the inverse map.

A classifier is stored as a folder, read without Kedro and without unpickling anything::

    <folder>/weights.safetensors   backbone.*, rows.*, eszsl.*, inverse.*
    <folder>/classifier.json       format, project version, backbone spec, classes, gamma,
                                   fusion, domain-knowledge source, dimension names
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from niwt_pipeline import __version__
from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.baselines import ESZSLModel
from niwt_pipeline.core.data.atomic import replaced_folder
from niwt_pipeline.core.data.images import UNREADABLE, load_rgb, to_rgb, unreadable_image
from niwt_pipeline.core.errors import InputError, fail, shorten
from niwt_pipeline.core.explain.textual import textual_explanations
from niwt_pipeline.core.explain.visual import visual_explanations
from niwt_pipeline.core.imageset import ImageTableDataset
from niwt_pipeline.core.mapper import InverseMap
from niwt_pipeline.core.rows import ClassRows
from niwt_pipeline.core.selection import fuse_scores
from niwt_pipeline.core.trained import TrainedBackbone
from niwt_pipeline.core.training import resolve_device

logger = logging.getLogger(__name__)

#: The folder format this code writes and reads; a folder of another format is refused.
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = "classifier.json"

#: What :meth:`ZeroShotClassifier.predict` accepts as one image.
ImageInput = str | Path | bytes | Image.Image


@dataclass
class ZeroShotClassifier:
    """A GZSL classifier over seen and unseen classes, ready to classify new images.

    Attributes:
        backbone: the backbone trained on the seen classes (gives the (D,) features).
        rows: one row per class, (C, D) float64 weights and (C,) biases; ``rows.class_ids``
            are the columns of every score matrix.
        class_names: (C,) the class names, in column order.
        seen: (C,) bool, True for the classes the backbone was trained on.
        gamma: the calibrated-stacking gamma (score units) subtracted from seen scores.
        method: the method the rows come from (e.g. ``niwt_tuned``).
        fusion: the weight of ESZSL's standardised scores fused into the rows'
            standardised scores; 0 means the rows alone.
        eszsl: ESZSL's (D, A) projection, required when ``fusion > 0``.
        signatures: (C, A) the classes' domain knowledge, required when ``fusion > 0``.
        inverse: importance (K,) -> domain knowledge (A,), for the textual explanations.
        dimension_names: the A domain-knowledge dimension names (with ``inverse``).
        domain_knowledge: one line describing the domain-knowledge source.
        project_version: the version of the project that built it.

    Raises:
        InputError: when the parts do not fit together (naming what differs).
    """

    backbone: TrainedBackbone
    rows: ClassRows
    class_names: list[str]
    seen: np.ndarray
    gamma: float
    method: str = "niwt_tuned"
    fusion: float = 0.0
    eszsl: ESZSLModel | None = None
    signatures: np.ndarray | None = None
    inverse: InverseMap | None = None
    dimension_names: list[str] | None = None
    domain_knowledge: str = ""
    project_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        n = len(self.rows.class_ids)
        self.class_names = [str(c) for c in self.class_names]
        self.seen = np.asarray(self.seen, dtype=bool).reshape(-1)
        if len(self.class_names) != n or len(self.seen) != n:
            raise InputError(
                f"classifier: {n} rows, {len(self.class_names)} class names and "
                f"{len(self.seen)} seen flags do not agree"
            )
        if len(set(self.class_names)) != n:
            repeated = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
            raise InputError(f"classifier: repeated class names {shorten(repeated)}")
        seen_ids = set(self.backbone.spec.seen_class_ids)
        flagged = {int(c) for c, s in zip(self.rows.class_ids, self.seen, strict=True) if s}
        if flagged != seen_ids:
            raise InputError(
                f"classifier: the seen flags mark classes {sorted(flagged)}, the backbone was "
                f"trained on {sorted(seen_ids)}"
            )
        if self.fusion < 0:
            raise InputError(f"classifier: fusion weight must be >= 0, got {self.fusion}")
        if self.fusion > 0:
            if self.eszsl is None or self.signatures is None:
                raise InputError("classifier: fusion > 0 needs ESZSL's projection and signatures")
            self.signatures = np.asarray(self.signatures, dtype=np.float64)
            if self.signatures.shape != (n, self.eszsl.projection.shape[1]):
                raise InputError(
                    f"classifier: signatures {self.signatures.shape} do not fit {n} classes "
                    f"and ESZSL's projection {self.eszsl.projection.shape}"
                )
        if self.inverse is not None:
            n_dims = self.inverse.weight.shape[1]
            if self.dimension_names is None or len(self.dimension_names) != n_dims:
                raise InputError(
                    f"classifier: the inverse map gives {n_dims} dimensions, "
                    f"{0 if self.dimension_names is None else len(self.dimension_names)} "
                    "dimension names given"
                )
            self.dimension_names = [str(d) for d in self.dimension_names]

    @property
    def class_ids(self) -> np.ndarray:
        """(C,) int64 the class ids, the columns of every score matrix."""
        return self.rows.class_ids

    def feature_scores(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """The (N, C) float64 uncalibrated scores of (N, D) penultimate features: the rows'
        linear scores, fused with ESZSL's when ``fusion > 0`` (exactly the scores the GZSL
        evaluation stores for the method)."""
        z = np.asarray(features, dtype=np.float64)
        scores = self.rows.scores(z, self.rows.class_ids)
        if self.fusion > 0:
            assert self.eszsl is not None and self.signatures is not None  # __post_init__
            scores = fuse_scores(scores, self.eszsl.scores(z, self.signatures), self.fusion)
        return scores

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """``scores - gamma * seen``: (N, C) float64 calibrated stacking scores."""
        return np.asarray(scores, dtype=np.float64) - self.gamma * self.seen[None, :]

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(N, C) softmax over the classes of the calibrated ``scores``."""
        calibrated = self.calibrated(scores)
        shifted = np.exp(calibrated - calibrated.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(
        self,
        images: Sequence[ImageInput] | torch.Tensor | pd.Series,
        *,
        top_k: int = 3,
        explain: bool = True,
        explanation_dims: int = 3,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> pd.DataFrame:
        """Classify images among every class; a file that cannot be read gets a row with
        its error and the others are still classified.

        Args:
            images: image file paths, raw image bytes (e.g. decoded from base64), PIL
                images, or a ``(N, 3, image_size, image_size)`` tensor already
                preprocessed as ``backbone.spec`` says.
            top_k: classes per image, best first (at most C).
            explain: add the textual explanation of the top class (needs ``inverse``).
            explanation_dims: domain-knowledge dimensions per explanation.
            batch_size: images per forward pass; memory does not grow with N.
            device: where to run the network (``"auto"``, ``"cpu"``, ``"cuda"``...).
            progress: show a progress bar.

        Returns:
            One row per image, in input order: ``image`` (the path, or ``#<i>``),
            ``error`` (empty when the image was classified; then the other columns are
            empty or missing), then for ranks
            ``r = 1..top_k``: ``class_<r>``, ``class_id_<r>`` (nullable Int64),
            ``seen_<r>`` (nullable boolean), ``score_<r>`` (calibrated score at ``gamma``),
            ``probability_<r>``; and
            ``explanation`` (``"predicted <class> because: <dim>, ..."``) when ``explain``.

        Raises:
            InputError: if ``top_k`` is not in ``[1, C]``, a tensor batch has the wrong
                shape, or ``explain`` is asked for without an inverse map.
        """
        n_classes = len(self.class_names)
        if not 1 <= top_k <= n_classes:
            raise InputError(f"top_k must be between 1 and {n_classes}, got {top_k}")
        if explain and self.inverse is None:
            raise InputError("this classifier has no inverse map: predict with explain=False")
        items = _ImageItems(images, self.backbone.spec)
        loader = DataLoader(items, batch_size=batch_size, collate_fn=_collate)
        frames = [
            self._predict_batch(batch, top_k, explain, explanation_dims, resolve_device(device))
            for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress)
        ]
        if not frames:
            return self._empty_frame(top_k, explain)
        return pd.concat(frames, ignore_index=True)

    def _predict_batch(
        self,
        batch: _Batch,
        top_k: int,
        explain: bool,
        explanation_dims: int,
        device: torch.device,
    ) -> pd.DataFrame:
        frame = pd.DataFrame(
            {"image": pd.array(batch.names, dtype="str"), "error": pd.array(batch.errors, "str")}
        )
        ok = np.array([not e for e in batch.errors], dtype=bool)
        n = len(batch.names)
        ranked = {
            "class": np.full((n, top_k), "", dtype=object),
            "class_id": np.full((n, top_k), -1, dtype=np.int64),
            "seen": np.zeros((n, top_k), dtype=bool),
            "score": np.full((n, top_k), np.nan),
            "probability": np.full((n, top_k), np.nan),
        }
        explanations = np.full(n, "", dtype=object)
        if ok.any():
            features, alpha_of = self._forward(batch.tensors.to(device), explain)
            scores = self.feature_scores(features)
            calibrated = self.calibrated(scores)
            probabilities = self.probabilities(scores)
            # ties go to the lowest column, as the GZSL evaluation's argmax does
            top = np.argsort(-calibrated, axis=1, kind="stable")[:, :top_k]
            rows = np.arange(len(top))[:, None]
            names = np.array(self.class_names, dtype=object)
            ranked["class"][ok] = names[top]
            ranked["class_id"][ok] = self.rows.class_ids[top]
            ranked["seen"][ok] = self.seen[top]
            ranked["score"][ok] = calibrated[rows, top]
            ranked["probability"][ok] = probabilities[rows, top]
            if explain:
                assert self.inverse is not None and self.dimension_names is not None
                importance = alpha_of(torch.as_tensor(self.rows.weight[top[:, 0]]))
                explained = textual_explanations(
                    importance,
                    self.inverse,
                    self.dimension_names,
                    list(names[top[:, 0]]),
                    top_k=min(explanation_dims, len(self.dimension_names)),
                )
                explanations[ok] = [e.text for e in explained]
        for r in range(top_k):  # an unreadable image: empty name, missing id and seen flag
            frame[f"class_{r + 1}"] = pd.array(list(ranked["class"][:, r]), dtype="str")
            frame[f"class_id_{r + 1}"] = pd.array(
                [int(c) if k else None for c, k in zip(ranked["class_id"][:, r], ok, strict=True)],
                dtype="Int64",
            )
            frame[f"seen_{r + 1}"] = pd.array(
                [bool(v) if k else None for v, k in zip(ranked["seen"][:, r], ok, strict=True)],
                dtype="boolean",
            )
            frame[f"score_{r + 1}"] = ranked["score"][:, r]
            frame[f"probability_{r + 1}"] = ranked["probability"][:, r]
        if explain:
            frame["explanation"] = pd.array(list(explanations), dtype="str")
        return frame

    def _forward(self, x: torch.Tensor, explain: bool) -> tuple[np.ndarray, Any]:
        """Features (B, D) of the batch, and a function giving the importance (B, K) of
        one row per image (one backward pass), or None without ``explain``."""
        cut = self.backbone.on(x.device)
        with torch.no_grad():
            activations = cut.stem(x)
        if not explain:
            with torch.no_grad():
                return cut.head(activations).double().cpu().numpy(), None
        a = activations.detach().requires_grad_(True)
        with torch.enable_grad():
            z = cut.head(a.clone())  # non-leaf copy: an in-place first op must not hit a

        def alpha_of(rows: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                logit = (z * rows.to(z.device, z.dtype)).sum()
                (grad,) = torch.autograd.grad(logit, a)
            return grad.flatten(2).sum(2).detach().cpu()

        return z.detach().double().cpu().numpy(), alpha_of

    def gradcam_overlay(
        self, path: str | Path, class_id: int, *, alpha: float = 0.5
    ) -> Image.Image:
        """Grad-CAM of ``class_id``'s row on one image file, overlaid on the image as the
        network sees it (``spec.image_size`` px RGB; Selvaraju et al., ICCV 2017).

        Raises:
            InputError: when the file cannot be read or the class has no row.
        """
        weight, _ = self.rows.rows_for([int(class_id)])
        return visual_explanations(
            self.backbone.cut,
            [str(path)],
            torch.as_tensor(weight, dtype=torch.float32),
            self.backbone.spec,
            alpha=alpha,
        )[0]

    def _empty_frame(self, top_k: int, explain: bool) -> pd.DataFrame:
        return self._predict_batch(_Batch([], [], torch.zeros(0)), top_k, explain, 1, "cpu")

    # -- storage ----------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the classifier to ``folder`` (a temporary sibling folder swapped into
        place, so a crash never leaves a half-written classifier).

        Returns:
            The folder.

        Raises:
            OSError: if the folder cannot be written.
        """
        root = Path(folder)
        tensors = {f"backbone.{k}": v for k, v in self.backbone.state.items()}
        tensors.update(self.rows.to_tensors("rows"))
        if self.eszsl is not None:
            tensors["eszsl.projection"] = torch.as_tensor(np.array(self.eszsl.projection))
        if self.signatures is not None:
            tensors["eszsl.signatures"] = torch.as_tensor(np.array(self.signatures))
        if self.inverse is not None:
            tensors.update({f"inverse.{k}": v for k, v in self.inverse.state().items()})
        with replaced_folder(root) as staging:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                str(staging / WEIGHTS_FILE),
            )
            (staging / SPEC_FILE).write_text(
                json.dumps(self.describe(), indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8",
            )
        return root

    def describe(self) -> dict[str, Any]:
        """The JSON spec written beside the weights (everything but the tensors)."""
        return {
            "format": "niwt-zero-shot-classifier",
            "format_version": FORMAT_VERSION,
            "project_version": self.project_version,
            "method": self.method,
            "backbone": self.backbone.spec.to_dict(),
            "classes": [
                {"class_id": int(c), "name": name, "seen": bool(s)}
                for c, name, s in zip(self.rows.class_ids, self.class_names, self.seen, strict=True)
            ],
            "gamma": float(self.gamma),
            "fusion": float(self.fusion),
            "eszsl": None
            if self.eszsl is None
            else {"gamma": self.eszsl.gamma, "lambda": self.eszsl.lam},
            "domain_knowledge": self.domain_knowledge,
            "dimension_names": self.dimension_names,
        }

    @classmethod
    def load(cls, folder: str | Path) -> ZeroShotClassifier:
        """Read a classifier written by :meth:`save`.

        Raises:
            InputError: naming the folder or file when the folder or one of its files is
                missing, the spec is not valid JSON of this format, the format version is
                not :data:`FORMAT_VERSION`, or the weights file is unreadable or lacks a
                tensor.
        """
        root = Path(folder)
        if not root.is_dir():
            raise fail(root, "classifier folder not found (run `kedro run` to build one)")
        spec_file, weights_file = root / SPEC_FILE, root / WEIGHTS_FILE
        for file in (spec_file, weights_file):
            if not file.is_file():
                raise fail(file, "missing: not a complete classifier folder (rebuild it)")
        try:
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise fail(spec_file, f"not valid JSON ({exc})") from None
        if not isinstance(spec, dict) or spec.get("format") != "niwt-zero-shot-classifier":
            raise fail(spec_file, "not a niwt-pipeline zero-shot classifier spec")
        if spec.get("format_version") != FORMAT_VERSION:
            raise fail(
                spec_file,
                f"classifier format {spec.get('format_version')!r} (project version "
                f"{spec.get('project_version')}), this version of niwt-pipeline "
                f"({__version__}) reads format {FORMAT_VERSION}: rebuild the classifier "
                "with `kedro run --pipelines=transfer`",
                key="format_version",
            )
        try:
            tensors = load_file(str(weights_file))
        except (SafetensorError, OSError) as exc:
            raise fail(weights_file, f"not a readable safetensors file ({exc})") from None
        try:
            backbone = TrainedBackbone(
                BackboneSpec.from_dict(spec["backbone"]),
                {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")},
            )
            classes = spec["classes"]
            eszsl = None
            if "eszsl.projection" in tensors:
                eszsl = ESZSLModel(
                    tensors["eszsl.projection"].numpy().astype(np.float64),
                    float(spec["eszsl"]["gamma"]),
                    float(spec["eszsl"]["lambda"]),
                )
            inverse_state = {
                k[len("inverse.") :]: v for k, v in tensors.items() if k.startswith("inverse.")
            }
            return cls(
                backbone=backbone,
                rows=ClassRows.from_tensors(tensors, "rows"),
                class_names=[c["name"] for c in classes],
                seen=np.array([bool(c["seen"]) for c in classes]),
                gamma=float(spec["gamma"]),
                method=str(spec["method"]),
                fusion=float(spec["fusion"]),
                eszsl=eszsl,
                signatures=tensors["eszsl.signatures"].numpy().astype(np.float64)
                if "eszsl.signatures" in tensors
                else None,
                inverse=InverseMap.from_state(inverse_state) if inverse_state else None,
                dimension_names=spec.get("dimension_names"),
                domain_knowledge=str(spec.get("domain_knowledge", "")),
                project_version=str(spec.get("project_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(spec_file, f"incomplete or inconsistent classifier ({exc!r})") from None


def load_classifier(folder: str | Path) -> ZeroShotClassifier:
    """The :class:`ZeroShotClassifier` stored in ``folder`` (see
    :meth:`ZeroShotClassifier.load`, which lists the errors raised)."""
    return ZeroShotClassifier.load(folder)


# -- image inputs -------------------------------------------------------------------------


@dataclass
class _Batch:
    names: list[str]
    errors: list[str]
    tensors: torch.Tensor  # (B_ok, 3, H, W): the images that could be read


class _ImageItems(Dataset):
    """Each input as ``(name, error, tensor or None)``; reading errors become messages."""

    def __init__(
        self, images: Sequence[ImageInput] | torch.Tensor | pd.Series, spec: BackboneSpec
    ) -> None:
        self.prepare = ImageTableDataset(
            [], [], spec.image_size, spec.mean, spec.std, crop_fraction=spec.crop_fraction
        ).prepare
        if isinstance(images, torch.Tensor):
            expected = (3, spec.image_size, spec.image_size)
            if images.ndim != 4 or tuple(images.shape[1:]) != expected:
                raise InputError(
                    f"a tensor batch must be (N, {', '.join(map(str, expected))}) preprocessed "
                    f"images, got {tuple(images.shape)}"
                )
        elif isinstance(images, (str, Path, bytes, Image.Image)):
            images = [images]
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[str, str, torch.Tensor | None]:
        item = self.images[index]
        if isinstance(item, torch.Tensor):
            return f"#{index}", "", item.float()
        name = str(item) if isinstance(item, (str, Path)) else f"#{index}"
        if isinstance(item, InputError):  # a request row that could not be decoded
            return name, str(item), None
        try:
            if isinstance(item, (str, Path)):
                img = load_rgb(item)
            elif isinstance(item, bytes):
                img = _image_from_bytes(item, name)
            elif isinstance(item, Image.Image):
                img = to_rgb(ImageOps.exif_transpose(item))
            else:
                return name, f"not an image: a {type(item).__name__}", None
            return name, "", self.prepare(img)
        except InputError as exc:
            return name, str(exc), None


def request_images(request: pd.DataFrame) -> list[ImageInput | InputError]:
    """The images of a prediction request (e.g. the DataFrame an MLflow model server hands
    over): a ``path`` column of image files, or an ``image`` column of base64-encoded image
    bytes (one of the two per row; ``image`` wins where both are given).

    A row whose base64 cannot be decoded becomes an :class:`InputError` that
    :meth:`ZeroShotClassifier.predict` reports in that row's ``error``.

    Raises:
        InputError: when the request has neither column.
    """
    columns = [c for c in ("image", "path") if c in request.columns]
    if not columns:
        raise InputError(
            f"a prediction request needs a `path` column (image files) or an `image` column "
            f"(base64-encoded image bytes); got columns {list(request.columns)}"
        )
    items: list[ImageInput | InputError] = []
    for i, row in enumerate(request[columns].itertuples(index=False)):
        values = dict(zip(columns, row, strict=True))
        encoded = values.get("image")
        if isinstance(encoded, str) and encoded:
            try:
                items.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError) as exc:
                items.append(InputError(f"row {i}: `image` is not valid base64 ({exc})"))
        elif isinstance(values.get("path"), str) and values["path"]:
            items.append(values["path"])
        else:
            items.append(InputError(f"row {i}: neither `image` nor `path` is given"))
    return items


def _image_from_bytes(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, *UNREADABLE) as exc:
        raise unreadable_image(name, exc) from exc


def _collate(items: list[tuple[str, str, torch.Tensor | None]]) -> _Batch:
    tensors = [t for _, _, t in items if t is not None]
    return _Batch(
        [n for n, _, _ in items],
        [e for _, e, _ in items],
        torch.stack(tensors) if tensors else torch.zeros(0),
    )
