"""Train and test augmentation with albumentations (images are read with OpenCV as RGB uint8)."""
from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def model_input(data_cfg: dict) -> dict:
    """What a model trained on `data_cfg` expects of an image: RGB, resized to height x width (bilinear),
    scaled to [0, 1], then normalised by mean and std per channel (the test transform below)."""
    return {"height": data_cfg["height"], "width": data_cfg["width"], "color": "RGB", "resize": "bilinear",
            "scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def build_transform(data_cfg: dict, train: bool, seed: int = 0) -> A.Compose:
    """The bag-of-tricks recipe: resize, flip, pad + random crop, normalise, random erasing.

    Seeded, so that two runs with the same seed see the same augmented images.
    """
    h, w = data_cfg["height"], data_cfg["width"]
    steps: list = [A.Resize(h, w, interpolation=cv2.INTER_LINEAR)]
    if train:
        pad = data_cfg["pad"]
        steps += [A.HorizontalFlip(p=data_cfg["flip_prob"])]
        if pad > 0:
            steps += [A.PadIfNeeded(h + 2 * pad, w + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
                      A.RandomCrop(h, w)]
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    if train and data_cfg["random_erasing_prob"] > 0:
        # Zhong et al.'s random erasing: area 2-40 %, aspect 0.3-3.3, filled with random values
        steps += [A.Erasing(scale=(0.02, 0.4), ratio=(0.3, 3.3), fill="random", p=data_cfg["random_erasing_prob"])]
    steps += [ToTensorV2()]
    return A.Compose(steps, seed=seed)
