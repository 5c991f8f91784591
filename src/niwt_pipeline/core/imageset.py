"""Images for a backbone: a table of image files as a torch ``Dataset``, seeded loaders,
and the image tables the stages sample (reference images, explained images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from niwt_pipeline.core.backbones.spec import BackboneSpec
from niwt_pipeline.core.data.images import load_rgb
from niwt_pipeline.core.data.own import read_path_list_csv
from niwt_pipeline.core.errors import InputError


class ImageTableDataset(Dataset):
    """Images listed by path with integer labels, preprocessed for a backbone.

    Each image is read as RGB (:func:`~niwt_pipeline.core.data.images.load_rgb`), its
    shorter side resized to ``round(image_size / crop_fraction)`` (bilinear, antialiased),
    then center-cropped to ``image_size`` and normalised with ``mean``/``std``.

    With ``augment=True`` the crop is instead a random crop covering 80-100% of the
    resized image's area (aspect 3/4..4/3), resized to ``image_size``.  Colours are never
    changed (they can be attributes); horizontal flips only with ``hflip=True`` (a flip
    would swap any left/right attribute).  Randomness comes from torch's generator, so a
    seeded loader with ``num_workers=0`` is reproducible.

    Args:
        paths: N image files.
        labels: N integer labels (any value, e.g. -1 or an unseen class index, is passed
            through unchanged).
        image_size: side of the square output.
        mean, std: per-channel normalisation of the [0, 1] pixel values.
        augment: random crops (for training).
        hflip: random horizontal flips, only with ``augment``.
        crop_fraction: the center crop's share of the resized shorter side; 1.0 keeps the
            whole shorter side (generated worlds), 0.875 is the ImageNet convention.

    Items are ``(image: (3, image_size, image_size) float32, label: int, index: int)``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: bool = False,
        hflip: bool = False,
        crop_fraction: float = 1.0,
    ) -> None:
        if len(paths) != len(labels):
            raise InputError(f"got {len(paths)} image paths but {len(labels)} labels")
        if image_size < 1:
            raise InputError(f"image_size must be positive, got {image_size}")
        if not 0.0 < crop_fraction <= 1.0:
            raise InputError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise InputError(f"mean and std need 3 values (std > 0), got {mean!r} and {std!r}")
        self.paths = [str(p) for p in paths]
        self.labels = [int(y) for y in labels]
        self.image_size = int(image_size)
        self.augment = augment
        self.hflip = hflip
        self.crop_fraction = float(crop_fraction)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img = load_rgb(self.paths[index])
        if not self.augment:
            return self.prepare(img), self.labels[index], index
        img = self._resize_shorter(img, round(self.image_size / self.crop_fraction))
        img = self._random_crop(img)
        if self.hflip and torch.rand(()) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.to_tensor(img), self.labels[index], index

    def prepare(self, img: Image.Image) -> torch.Tensor:
        """The evaluation view of an RGB ``PIL.Image``: shorter side resized, centre crop,
        normalised, as a ``(3, image_size, image_size)`` float32 tensor (no augmentation)."""
        img = self._resize_shorter(img, round(self.image_size / self.crop_fraction))
        return self.to_tensor(self._center_crop(img))

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        """A ``(3, h, w)`` normalised float32 tensor from an RGB ``PIL.Image``."""
        array = np.asarray(img, dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return (tensor - self._mean) / self._std

    @staticmethod
    def _resize_shorter(img: Image.Image, side: int) -> Image.Image:
        w, h = img.size
        if min(w, h) == side:
            return img
        scale = side / min(w, h)
        size = (max(side, round(w * scale)), max(side, round(h * scale)))
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)

    def _center_crop(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = self.image_size
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))

    def _random_crop(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        area = w * h
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(0.8, 1.0))
            log_ratio = float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3)))
            ratio = math.exp(log_ratio)
            cw = round(math.sqrt(target * ratio))
            ch = round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left = int(torch.randint(0, w - cw + 1, ()))
                top = int(torch.randint(0, h - ch + 1, ()))
                box = (left, top, left + cw, top + ch)
                return img.resize(
                    (self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box
                )
        return self._center_crop(img)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` whose shuffling (and workers' seeds) follow ``seed``.

    Two loaders made with the same arguments yield the same batches in the same order.

    Raises:
        InputError: if ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def image_loader(
    images: pd.DataFrame,
    spec: BackboneSpec,
    *,
    batch_size: int,
    labels: np.ndarray | None = None,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A loader over ``images`` (canonical table rows) preprocessed as ``spec`` says.

    Args:
        images: a table with a ``path`` column (and ``class_id`` unless ``labels`` is given).
        spec: the backbone's input size, normalisation and classes.
        batch_size: images per batch.
        labels: (N,) labels; default the classifier index of each image's class (``-1``
            for classes the classifier does not have, e.g. unseen classes).
        shuffle, augment, seed: training options (see :class:`ImageTableDataset`).
        num_workers: decoding worker processes (the batches and their order do not change).

    Returns:
        A ``DataLoader`` of ``(images (B, 3, H, W), labels (B,), row positions (B,))``.

    Raises:
        InputError: on bad sizes or normalisation (see :class:`ImageTableDataset`).
    """
    if labels is None:
        mapping = spec.seen_label_map()
        labels = images["class_id"].map(lambda c: mapping.get(int(c), -1)).to_numpy()
    dataset = ImageTableDataset(
        images["path"].tolist(),
        [int(v) for v in labels],
        spec.image_size,
        spec.mean,
        spec.std,
        augment=augment,
        crop_fraction=spec.crop_fraction,
    )
    return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)


def model_view(paths: Sequence[str], spec: BackboneSpec) -> np.ndarray:
    """The images as the network sees them, before normalisation: resized and centre-cropped
    as ``spec`` says, as ``(N, image_size, image_size, 3)`` uint8 RGB.

    Raises:
        InputError: naming the file when an image is missing or unreadable.
    """
    if not len(paths):
        return np.zeros((0, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    return denormalise(network_inputs(paths, spec), spec)


def network_inputs(paths: Sequence[str], spec: BackboneSpec) -> torch.Tensor:
    """The images preprocessed for evaluation as ``spec`` says (resize, centre crop,
    normalisation; no augmentation), stacked as ``(N, 3, image_size, image_size)`` float32.

    Raises:
        InputError: naming the file when an image is missing or unreadable.
    """
    dataset = ImageTableDataset(
        list(paths),
        [0] * len(paths),
        spec.image_size,
        spec.mean,
        spec.std,
        crop_fraction=spec.crop_fraction,
    )
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def denormalise(x: torch.Tensor, spec: BackboneSpec) -> np.ndarray:
    """Normalised network inputs ``(N, 3, H, W)`` back to ``(N, H, W, 3)`` uint8 RGB."""
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    pixels = ((x.cpu() * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_images(folder: str | Path, max_images: int | None, seed: int) -> pd.DataFrame:
    """Every image file under ``folder`` (sorted; a seeded sample of ``max_images``).

    Returns:
        A table with a ``path`` column, the shape :func:`image_loader` reads.

    Raises:
        InputError: when the folder does not exist or holds no image files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: reference image folder not found")
    table = pd.DataFrame({"path": pd.Series(image_files(root), dtype="str")})
    return sample_rows(table, max_images, seed)


def sample_rows(table: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``max_rows`` rows, in their original order (index reset)."""
    if max_rows is None or len(table) <= max_rows:
        return table.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(table), size=max_rows, replace=False))
    return table.iloc[keep].reset_index(drop=True)


def images_to_classify(source: str | Path) -> list[str]:
    """The image files named by ``source``: every image file under a folder (sorted, by
    suffix: :data:`IMAGE_SUFFIXES`), one image file, or the ``path`` column of a CSV file.

    Files are not opened here: a file that cannot be read is reported per image by the
    classifier, so one bad photo never loses the batch.

    Raises:
        InputError: when ``source`` does not exist, a folder holds no image files, the
            CSV lists none or is malformed (see
            :func:`niwt_pipeline.core.data.own.read_path_list_csv`).
    """
    root = Path(source)
    if root.is_file() and root.suffix.lower() in IMAGE_SUFFIXES:
        return [str(root)]  # one image
    if root.is_file():
        paths = read_path_list_csv(root)
        if not paths:
            raise InputError(f"{root}: the CSV lists no image (add rows under its `path` header)")
        return paths
    if not root.is_dir():
        raise InputError(
            f"images folder not found: {root} (give a folder of images or a CSV with a "
            "`path` column: --params=predict.images=/path/to/folder)"
        )
    return image_files(root)


def image_files(folder: Path) -> list[str]:
    """The image files under an existing ``folder``, sorted (by suffix: :data:`IMAGE_SUFFIXES`),
    leaving out hidden files and folders (e.g. macOS's ``._photo.jpg`` metadata twins).

    Raises:
        InputError: when there are none.
    """
    paths = sorted(
        str(p)
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not paths:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths
