"""An image table as a torch ``Dataset``, and a seeded ``DataLoader`` for it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from niwt_pipeline.core.data.images import load_rgb
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
        img = self._resize_shorter(img, round(self.image_size / self.crop_fraction))
        img = self._random_crop(img) if self.augment else self._center_crop(img)
        if self.augment and self.hflip and torch.rand(()) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.to_tensor(img), self.labels[index], index

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
