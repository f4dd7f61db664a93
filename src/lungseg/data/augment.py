"""Training augmentation: what differs between X-rays of different hospitals.

A model trained on a few hospitals meets other detectors, exposures, display windows, fields of
view and burned-in annotations in use. These transforms (albumentations, plus one for burned-in
text, which albumentations only offers for documents) make the training images vary the same
ways, while the geometric ones move image and mask together.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


def train_augmentation(kind: str = "basic", soft_masks: bool = False):
    """Random geometry and exposure applied to ``{"image", "mask"}`` samples together.

    Works at the network size on the [0, 1] image, before :func:`normalize`; the dataset clips
    the result to [0, 1], so a contrast gain past 1 with a brightness shift acts as a display
    window (the range of grey values a hospital's export keeps). No horizontal flip: the heart
    makes the left lung smaller, and a flipped chest is not a plausible X-ray. Rotations stay
    small on purpose: frontal chest films are taken in a standard position.

    Args:
        kind: ``"basic"``, the set the paper-data model was trained with (affine geometry,
            brightness/contrast, gamma, a little blur or noise); or ``"hospital"``, which adds
            what differs between hospitals: windowing, CLAHE-like local contrast, detector noise
            and blur, down- and up-sampled resolution, cropped or padded fields of view, and
            burned-in text and markers.
        soft_masks: the masks are lung fractions (float32, see :func:`lung_fraction`), which
            the geometry interpolates linearly; binary masks (uint8) take the nearest value.

    Returns:
        An ``albumentations.Compose``; call it as ``aug(image=float32 (h, w), mask=(h, w))``.
        Reseed it with ``set_random_seed`` for reproducible runs.
    """
    mask_interpolation = cv2.INTER_LINEAR if soft_masks else cv2.INTER_NEAREST
    geometry = A.Affine(
        scale=(0.85, 1.15),
        translate_percent=(-0.06, 0.06),
        rotate=(-10, 10),
        shear=(-4, 4),
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=mask_interpolation,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=0,
        p=0.8,
    )
    if kind == "basic":
        return A.Compose(
            [
                geometry,
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
                A.RandomGamma(gamma_limit=(80, 125), p=0.4),
                A.OneOf(
                    [
                        A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                        A.GaussNoise(std_range=(0.01, 0.03), p=1.0),
                    ],
                    p=0.2,
                ),
            ]
        )
    if kind != "hospital":
        raise ValueError(f"unknown augmentation {kind!r}; use basic or hospital")
    return A.Compose(
        [
            geometry,
            # Field of view: collimated tighter (crop, zoom in) or wider with a black border.
            # The crop is resized back with cv2.resize, whose INTER_NEAREST samples half a pixel
            # off INTER_LINEAR's grid (tests/test_augment.py measured Dice 0.96 between the two
            # on a known shape); INTER_NEAREST_EXACT samples the same pixel centres.
            A.CropAndPad(
                percent=(-0.10, 0.08),
                keep_size=True,
                sample_independently=True,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR if soft_masks else cv2.INTER_NEAREST_EXACT,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.3,
            ),
            # Exposure and display: windowing (contrast past 1, then the clip), gamma, local
            # contrast as a hospital's post-processing applies it.
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=(-0.3, 0.4), p=0.6),
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=0.2),
            # Detector and resolution: blur, sharpening, quantum noise, low-resolution exports.
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                    A.Sharpen(alpha=(0.1, 0.4), lightness=(0.9, 1.1), p=1.0),
                    A.Downscale(
                        scale_range=(0.35, 0.8),
                        interpolation_pair={
                            "downscale": cv2.INTER_AREA,
                            "upscale": cv2.INTER_LINEAR,
                        },
                        p=1.0,
                    ),
                ],
                p=0.3,
            ),
            A.GaussNoise(std_range=(0.005, 0.04), p=0.3),
            # Burned-in annotations: side markers and text in white, small opaque patches.
            BurnedInText(p=0.3),
            A.CoarseDropout(
                num_holes_range=(1, 3),
                hole_height_range=(0.02, 0.06),
                hole_width_range=(0.02, 0.06),
                fill=1.0,
                fill_mask=None,
                p=0.15,
            ),
        ]
    )


class BurnedInText(A.ImageOnlyTransform):
    """Draw one to three short white labels ("L", "R", "PA", "AP PORTABLE", a date...) near the
    top or bottom edge, as hospitals burn side markers and text into exported films.

    The mask is unchanged: a label over a lung hides it, the lung is still there.
    """

    WORDS = ("L", "R", "PA", "AP", "AP PORTABLE", "SUPINE", "ERECT", "12/03", "CHEST", "LT")

    def apply(self, img: np.ndarray, **params: object) -> np.ndarray:
        rng = self.py_random
        height, width = img.shape[:2]
        # OpenCV draws text on 8-bit images only: draw a layer, then lay it over the float image.
        layer = np.zeros((height, width), dtype=np.uint8)
        for _ in range(rng.randint(1, 3)):
            text = rng.choice(self.WORDS)
            scale = rng.uniform(0.3, 0.8) * height / 256
            thickness = max(1, round(scale * 2))
            (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            y = rng.randint(text_h + 2, max(text_h + 3, height // 6))
            if rng.random() < 0.5:  # near the bottom edge instead
                y = height - y + text_h
            x = rng.randint(2, max(3, width - text_w - 2))
            brightness = rng.randint(200, 255)
            cv2.putText(
                layer,
                text,
                (x, y),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                brightness,
                thickness,
                cv2.LINE_AA,
            )
        return np.maximum(img, layer.astype(img.dtype) / 255).astype(img.dtype)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()
