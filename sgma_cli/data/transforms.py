"""Training augmentation: one joint geometric transform for every sensor, mask and label.

It plugs into :class:`~sgma_cli.data.tile_dataset.TileDataset`'s ``transform=`` hook, which sees
the raw sample (numpy, sensor units, before normalisation). All modality bands are
stacked into one ``(H, W, ΣC)`` image and the label plus the ``M`` availability masks into
one ``(H, W, 1 + M)`` mask, so albumentations draws ONE random scale, crop, flip and
rotation and applies it to all of them (bilinear for pixels, nearest for masks):

* random rescale in ``scale``, pad to the crop if needed, random crop ``crop_size``;
* horizontal / vertical flips, rotation by a multiple of 90°.

Padding must read as "not seen" and "unlabelled": the label is stored as ``(label + 1) %
256`` so the zero fill decodes to 255 (ignore), and a zero availability means no sensor.

Photometric jitter (contrast and brightness) touches only optical modalities (RGB, NIR),
never heights or backscatter. It is done here in sensor units, scaled by each band's
p2-p98 range from the dataset statistics: albumentations' photometric transforms assume
``[0, 1]`` floats and clip, which would destroy raw reflectances or DN.

Randomness is reproducible per sample: :meth:`JointAugment.reseed` sets the state from
a seed the caller derives from ``(run seed, epoch, sample index)``, so the same sample
gets the same augmentation on any number of processes or loader workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from sgma_cli.data.tile_dataset import RawSample

__all__ = ["AugmentConfig", "JointAugment"]


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """The numbers of the training augmentation (the recipe's ``[data]`` table sets most).

    Args:
        crop_size: output side in pixels (multiple of 32 for the model).
        scale: random rescale range ``(low, high)`` applied before the crop.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotate90: probability of a rotation by 90°, 180° or 270°.
        photometric: probability of contrast/brightness jitter per optical modality.
        contrast: contrast factor drawn from ``1 ± contrast``.
        brightness: brightness shift drawn from ``± brightness × (p98 - p2)``.
    """

    crop_size: int
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5
    photometric: float = 0.5
    contrast: float = 0.2
    brightness: float = 0.1

    def __post_init__(self) -> None:
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")


class JointAugment:
    """Joint random scale/crop/flip/rot90 of all modalities + photometric jitter on optical ones.

    Args:
        modalities: ``(name, bands, optical)`` per modality, in the sample's order.
        config: crop size, scale range, probabilities and jitter strengths.
        band_range: ``{name: (p2, p98)}`` per band, to scale the brightness shift.
        seed: initial seed (see :meth:`reseed`).
    """

    def __init__(
        self,
        modalities: Sequence[tuple[str, int, bool]],
        config: AugmentConfig,
        band_range: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
        seed: int = 0,
    ) -> None:
        self.modalities = [(str(n), int(b), bool(o)) for n, b, o in modalities]
        self.config = config
        self.crop_size = crop_size = config.crop_size
        self.band_range = {
            k: (np.asarray(lo, np.float32), np.asarray(hi, np.float32))
            for k, (lo, hi) in (band_range or {}).items()
        }
        steps: list[A.BasicTransform] = []
        low, high = config.scale
        if (low, high) != (1.0, 1.0):
            steps.append(
                A.RandomScale(
                    scale_limit=(low - 1.0, high - 1.0),
                    interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST,
                    p=1.0,
                )
            )
        steps += [
            A.PadIfNeeded(
                crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0
            ),
            A.RandomCrop(crop_size, crop_size),
            A.HorizontalFlip(p=config.hflip),
            A.VerticalFlip(p=config.vflip),
            A.RandomRotate90(p=config.rotate90),
        ]
        self.geometric = A.Compose(steps, seed=seed)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Reset every random state from ``seed`` (call once per sample)."""
        self.geometric.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: RawSample) -> RawSample:
        """Augment a raw sample; returns a new dict with the same keys.

        ``sample["image"][name]`` is ``(C_m, H, W)`` float32 (NaN where unseen),
        ``sample["mask"]`` bool ``(M, H, W)``, ``sample["label"]`` int ``(H, W)``.
        """
        names = [n for n, _, _ in self.modalities]
        bands = [int(sample["image"][n].shape[0]) for n in names]
        stacked = np.concatenate([sample["image"][n] for n in names], axis=0)  # (ΣC, H, W)
        stacked = np.nan_to_num(stacked.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        label = np.asarray(sample["label"])
        encoded = ((label.astype(np.int64) + 1) % 256).astype(np.uint8)  # ignore 255 -> 0
        masks = np.concatenate(
            [encoded[None], np.asarray(sample["mask"], dtype=np.uint8)], axis=0
        )  # (1+M, H, W)
        out = self.geometric(
            image=np.ascontiguousarray(stacked.transpose(1, 2, 0)),
            mask=np.ascontiguousarray(masks.transpose(1, 2, 0)),
        )
        image = (
            np.asarray(out["image"], dtype=np.float32)
            .reshape(self.crop_size, self.crop_size, -1)
            .transpose(2, 0, 1)
        )
        mask = (
            np.asarray(out["mask"]).reshape(self.crop_size, self.crop_size, -1).transpose(2, 0, 1)
        )
        availability = mask[1:].astype(bool)
        new_label = (mask[0].astype(np.int64) - 1) % 256
        images: dict[str, np.ndarray] = {}
        start = 0
        for (name, _, optical), count, seen in zip(self.modalities, bands, availability):
            part = np.ascontiguousarray(image[start : start + count])
            start += count
            chance = self.config.photometric
            if optical and chance > 0 and self.rng.random() < chance:
                part = self._jitter(name, part, seen)
            part[:, ~seen] = np.nan
            images[name] = part
        return {**sample, "image": images, "mask": availability, "label": new_label}

    def _jitter(self, name: str, part: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Contrast about the sample's band means and a brightness shift, in sensor units."""
        contrast, brightness = self.config.contrast, self.config.brightness
        factor = 1.0 + self.rng.uniform(-contrast, contrast)
        shift = self.rng.uniform(-brightness, brightness)
        if name in self.band_range:
            lo, hi = self.band_range[name]
            span = np.maximum(hi - lo, 1e-6)
        else:
            span = part[:, seen].std(axis=1) if seen.any() else np.ones(part.shape[0], np.float32)
        mean = part[:, seen].mean(axis=1) if seen.any() else np.zeros(part.shape[0], np.float32)
        out = (
            (part - mean[:, None, None]) * factor
            + mean[:, None, None]
            + shift * span[:, None, None]
        )
        return out.astype(np.float32)
