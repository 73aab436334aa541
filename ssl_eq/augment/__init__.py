"""On-device augmentation with Kornia that reports what it applied.

`AugmentPipeline(image_size, transforms)` takes images (N, 3, H, W) (uint8 or float in [0, 1]),
resizes them to `image_size` and applies the configured random transforms. It returns the
augmented batch, Kornia's per-sample parameters (re-applying them with `params=` reproduces the
batch exactly) and a fixed-length action vector (N, A): each transform contributes its own
columns (see `TRANSFORMS`), zeros for samples where it was not applied. `action_scale` (A,) holds each
column's known range (from the transform's configured magnitude), so `action / action_scale` is in [-1, 1].
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ActionFn = Callable[[dict[str, Tensor]], Tensor]  # Kornia param dict -> (N, width), before masking


@dataclass(frozen=True)
class TransformSpec:
    build: Callable[..., nn.Module]  # (image_size, **config kwargs) -> Kornia augmentation
    action_names: tuple[str, ...]    # one name per action column
    action: ActionFn
    scale: Callable[[dict[str, Any]], tuple[float, ...]]  # resolved kwargs -> range of each action column


def _crop_action(p: dict[str, Tensor]) -> Tensor:
    """Crop box from Kornia's source corners (N, 4, 2) pixel (x, y): [x0, y0, w, h] / input size."""
    src, size = p["src"], p["input_size"].to(p["src"].dtype)  # size (N, 2) = (H, W)
    x0, y0 = src[:, 0, 0], src[:, 0, 1]
    w, h = src[:, 2, 0] - x0 + 1, src[:, 2, 1] - y0 + 1
    return torch.stack([x0 / size[:, 1], y0 / size[:, 0], w / size[:, 1], h / size[:, 0]], -1)


def _jitter_action(p: dict[str, Tensor]) -> Tensor:
    """Colour-jitter factors as offsets from the identity: [brightness-1, contrast-1, saturation-1, hue]."""
    return torch.stack([p["brightness_factor"] - 1, p["contrast_factor"] - 1,
                        p["saturation_factor"] - 1, p["hue_factor"]], -1)


def _applied(p: dict[str, Tensor]) -> Tensor:
    return torch.ones_like(p["batch_prob"])[:, None]


TRANSFORMS: dict[str, TransformSpec] = {
    "random_resized_crop": TransformSpec(
        lambda size, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=1.0, resample="bilinear": K.RandomResizedCrop(
            (size, size), scale=tuple(scale), ratio=tuple(ratio), p=p, resample=resample.upper()),
        ("crop_x0", "crop_y0", "crop_w", "crop_h"), _crop_action, lambda kw: (1.0,) * 4),
    "color_jitter": TransformSpec(
        lambda size, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8: K.ColorJitter(
            brightness, contrast, saturation, hue, p=p),
        ("brightness", "contrast", "saturation", "hue"), _jitter_action,
        lambda kw: tuple(float(kw[k]) or 1.0 for k in ("brightness", "contrast", "saturation", "hue"))),
    "grayscale": TransformSpec(lambda size, p=0.2: K.RandomGrayscale(p=p), ("grayscale",), _applied,
                               lambda kw: (1.0,)),
    "gaussian_blur": TransformSpec(
        lambda size, kernel_size=23, sigma=(0.1, 2.0), p=0.5: K.RandomGaussianBlur(
            (kernel_size, kernel_size), tuple(sigma), p=p),
        ("blur_sigma",), lambda p: p["sigma"].reshape(-1, 1), lambda kw: (float(kw["sigma"][1]),)),
    "horizontal_flip": TransformSpec(lambda size, p=0.5: K.RandomHorizontalFlip(p=p), ("hflip",), _applied,
                                     lambda kw: (1.0,)),
    "rotation": TransformSpec(
        lambda size, degrees=30.0, p=0.5: K.RandomRotation(degrees, p=p),
        ("rotation_rad",), lambda p: (p["degrees"] * (math.pi / 180)).reshape(-1, 1),
        lambda kw: (float(kw["degrees"]) * math.pi / 180 or 1.0,)),
    # threshold 0.5 (± thresholds) on [0, 1] images; only whether it was applied is recorded
    "solarize": TransformSpec(
        lambda size, thresholds=0.0, additions=0.0, p=0.2: K.RandomSolarize(thresholds, additions, p=p),
        ("solarize",), _applied, lambda kw: (1.0,)),
}


def _resolved_kwargs(spec: TransformSpec, item: dict[str, Any]) -> dict[str, Any]:
    """The transform's keyword arguments: its build defaults updated with the configured ones."""
    params = inspect.signature(spec.build).parameters
    return {**{k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}, **item}


@dataclass
class Augmented:
    images: Tensor         # (N, 3, S, S) float in [0, 1]
    params: list[Any]      # Kornia ParamItems; `pipeline(x, params=...)` reproduces `images`
    action: Tensor         # (N, A) float


class AugmentPipeline(nn.Module):
    """Resize to `image_size`, then the configured random transforms, in order.

    transforms: list of {"name": <key of TRANSFORMS>, **kwargs}; an empty list means resize only
    (the 3DIEBench default, as in SIE).
    """

    def __init__(self, image_size: int, transforms: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.names: list[str] = []
        augs: list[nn.Module] = []
        scales: list[float] = []
        for i, item in enumerate(transforms or []):
            item = dict(item)
            name = item.pop("name", None)
            if name not in TRANSFORMS:
                raise ValueError(f"augment.transforms[{i}].name: unknown transform {name!r}; valid: {sorted(TRANSFORMS)}")
            self.names.append(name)
            augs.append(TRANSFORMS[name].build(self.image_size, **item))
            scales.extend(TRANSFORMS[name].scale(_resolved_kwargs(TRANSFORMS[name], item)))
        self.sequential = K.AugmentationSequential(*augs) if augs else None
        self.action_names = tuple(n for name in self.names for n in TRANSFORMS[name].action_names)
        self.register_buffer("action_scale", torch.tensor(scales, dtype=torch.float32), persistent=False)  # (A,)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def resize(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) uint8 or float -> (N, 3, S, S) float in [0, 1] (antialiased bilinear)."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    def forward(self, images: Tensor, params: list[Any] | None = None) -> Augmented:
        """(N, 3, H, W) -> Augmented; pass `params` from an earlier call to re-apply the same transforms."""
        x = self.resize(images)
        if self.sequential is None:
            return Augmented(x, [], x.new_zeros(x.shape[0], 0))
        out = self.sequential(x, params=params)
        params = self.sequential._params
        columns = []
        for name, item in zip(self.names, params):
            data = item.data
            applied = (data["batch_prob"] > 0.5).to(x.dtype)[:, None]
            columns.append(TRANSFORMS[name].action(data).to(x.dtype) * applied)
        return Augmented(out, params, torch.cat(columns, -1))
