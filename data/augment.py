"""Batched augmentation for in-memory datasets, as tensor work on the batch's own device.

``BatchAugment(...)(images uint8 [B, C, H, W], generator, jitter)`` -> float ``[B, C, H, W]``,
normalised. Random crop with zero padding, horizontal flip, colour jitter (brightness,
contrast, saturation, hue; applied in that fixed order, decision), random grayscale. Hue is
a rotation of the chroma plane in YIQ space (decision: a linear, batched stand-in for
torchvision's HSV shift). Every random draw comes from the given ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LUMA = (0.299, 0.587, 0.114)
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass
class BatchAugment:
    mean: list[float]
    std: list[float]
    crop_padding: int = 4
    flip: bool = True
    grayscale_p: float = 0.2
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or 0..1 float ``[B, C, H, W]`` -> normalised float."""
        x = images.float().div(255) if images.dtype == torch.uint8 else images
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, generator: torch.Generator, jitter: bool = False) -> torch.Tensor:
        x = images.float().div(255)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        if jitter and self.jitter_p > 0 and any(self.jitter):
            x = color_jitter(x, self.jitter, self.jitter_p, generator)
        if self.grayscale_p > 0 and x.shape[1] == 3:
            x = random_grayscale(x, self.grayscale_p, generator)
        return self.normalize(x)

    def two_views(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The contrastive branch's views ``[B, 2, C, H, W]``: one with colour jitter, one without."""
        return torch.stack([self(images, generator, jitter=True), self(images, generator, jitter=False)], 1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to H x W at a random offset per image."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue factors drawn per image; applied with probability p."""
    b, dev = x.shape[0], x.device
    bright, contrast, sat, hue = strength
    out = x
    if bright:
        out = out * _uniform(b, 1 - bright, 1 + bright, generator, dev).view(b, 1, 1, 1)
    if contrast:
        mean = _gray(out).mean((1, 2, 3), keepdim=True)
        f = _uniform(b, 1 - contrast, 1 + contrast, generator, dev).view(b, 1, 1, 1)
        out = (out - mean) * f + mean
    if x.shape[1] == 3 and sat:
        g = _gray(out)
        out = (out - g) * _uniform(b, 1 - sat, 1 + sat, generator, dev).view(b, 1, 1, 1) + g
    if x.shape[1] == 3 and hue:
        theta = _uniform(b, -hue, hue, generator, dev) * 2 * math.pi
        cos, sin = theta.cos(), theta.sin()
        rot = torch.zeros(b, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        to_yiq = _RGB2YIQ.to(dev)
        mat = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # [B, 3, 3]
        out = torch.einsum("bij,bjhw->bihw", mat, out)
    out = out.clamp(0, 1)
    apply = torch.rand(b, generator=generator, device=dev) < p
    return torch.where(apply[:, None, None, None], out, x)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    gray = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(gray[:, None, None, None], _gray(x).expand_as(x), x)
