"""Label-safe augmentation of phantom images with MONAI intensity transforms.

Only intensity transforms are used (noise, contrast/gamma, smoothing, bias field, intensity
scaling). Spatial transforms are left out on purpose: a horizontal flip swaps the patient's left
and right (every laterality label would become wrong), and rotations, zooms or crops move
findings across zone, lobe and costophrenic boundaries. The renderers already vary anatomy,
position and acquisition, so geometry needs no augmentation.

MONAI is imported when an augmenter is built (it takes seconds to import), never at module import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def label_safe_augmentation(seed: int, *, strength: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Build a seeded augmenter for ``(H, W)`` greyscale or ``(H, W, 3)`` RGB images in [0, 1].

    Args:
        seed: seed of the transforms' random state (the same seed and inputs give the same outputs).
        strength: scales the noise, contrast and bias-field ranges (0 disables them).

    Returns:
        A function mapping a float image to an augmented float32 image of the same shape, clipped
        to [0, 1].

    Raises:
        ValueError: if ``strength`` is negative.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandBiasField,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleIntensity,
    )

    s = strength
    transforms: list[Any] = [
        RandGaussianNoise(prob=0.5, mean=0.0, std=0.02 * s),
        RandAdjustContrast(prob=0.5, gamma=(1.0 - 0.2 * s, 1.0 + 0.25 * s)),
        RandScaleIntensity(prob=0.5, factors=0.1 * s),
        RandGaussianSmooth(prob=0.3, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
        RandBiasField(prob=0.3, coeff_range=(0.0, 0.1 * s)),
    ]
    pipeline = Compose(transforms)
    pipeline.set_random_state(seed=seed)

    def augment(image: np.ndarray) -> np.ndarray:
        """Augment one image (see :func:`label_safe_augmentation`)."""
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            chw = arr[None]
        elif arr.ndim == 3 and arr.shape[2] == 3:
            chw = np.moveaxis(arr, 2, 0)
        else:
            raise ValueError(f"expected (H, W) or (H, W, 3), got shape {arr.shape}")
        out = np.asarray(pipeline(np.ascontiguousarray(chw)), dtype=np.float32)
        out = out[0] if arr.ndim == 2 else np.moveaxis(out, 0, 2)
        return np.clip(out, 0.0, 1.0)

    return augment
