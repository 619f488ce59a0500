"""Batched augmentation for in-memory datasets, as tensor work on the batch's own device.

``BatchAugment(...)(images uint8 [B, C, H, W], generator, jitter)`` -> float ``[B, C, H, W]``,
normalised. Random crop with zero padding and horizontal flip run on the uint8 batch; colour
jitter (brightness, contrast, saturation, hue, in that fixed order: decision) is one affine map
per image followed by one clamp to [0, 1] (decision: torchvision clamps after each op); random
grayscale and the normalisation are a second affine map. Hue is a rotation of the chroma plane
in YIQ space (decision: a linear, batched stand-in for torchvision's HSV shift). Every map is a
3x3 matrix per image applied with one batched matmul, so the float batch is touched a handful of
times in all. Every random draw comes from the given ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LUMA = (0.299, 0.587, 0.114)
_RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))

# Constants made once per (name, values, device, dtype): building them per call with
# ``torch.tensor(list, device=cuda)`` is a host-to-device copy (a sync) on every step, and keeps
# the step out of a CUDA graph. Cleared between trials of a reused process (sweep.isolation).
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(name: str, values, device, dtype) -> torch.Tensor:
    key = (name, values, torch.device(device), dtype)
    out = _CONSTANTS.get(key)
    if out is None:
        out = _CONSTANTS[key] = _build_constant(name, values).to(device=device, dtype=dtype)
    return out


def _build_constant(name: str, values) -> torch.Tensor:
    if name == "yiq_pair":  # (RGB->YIQ, its inverse), stacked [2, 3, 3]; inverted once, in float64
        to_yiq = torch.tensor(values, dtype=torch.float64)
        return torch.stack([to_yiq, torch.linalg.inv(to_yiq)])
    if name == "luma3":  # the luma row repeated: [3, 3]
        return torch.tensor(values, dtype=torch.float64).expand(3, 3).contiguous()
    if name == "eye":
        return torch.eye(int(values), dtype=torch.float64)
    return torch.tensor(values, dtype=torch.float64)


def clear_constant_cache() -> None:
    """Drop every cached constant (they are rebuilt on first use)."""
    _CONSTANTS.clear()


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
        mean = _constant("mean", tuple(self.mean), x.device, x.dtype).view(1, -1, 1, 1)
        std = _constant("std", tuple(self.std), x.device, x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, generator: torch.Generator, jitter: bool = False) -> torch.Tensor:
        x = crop_and_flip(images, self.crop_padding, self.flip, generator)
        scale = 1 / 255 if images.dtype == torch.uint8 else 1.0  # folded into the first affine map
        x = x.float()
        b, c = x.shape[:2]
        if jitter and self.jitter_p > 0 and any(self.jitter):
            mat, bias, _ = _jitter_affine(x, self.jitter, self.jitter_p, generator, scale)
            x = _affine(x, mat, bias).clamp_(0, 1)
            scale = 1.0
        std = _constant("std", tuple(self.std), x.device, x.dtype)
        mean = _constant("mean", tuple(self.mean), x.device, x.dtype)
        if c == 3:  # grayscale and normalisation as one map: diag(scale / std) @ G, bias -mean / std
            gray_p = self.grayscale_p if self.grayscale_p > 0 else 0.0
            mat = _grayscale_matrices(b, gray_p, generator, x.device, x.dtype) * (scale / std).view(1, 3, 1)
            return _affine(x, mat, (-mean / std).view(1, 3, 1, 1))
        return (x * scale - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def two_views(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The contrastive branch's views ``[B, 2, C, H, W]``: one with colour jitter, one without."""
        return torch.stack([self(images, generator, jitter=True), self(images, generator, jitter=False)], 1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def _affine(x: torch.Tensor, mat: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``mat [B, C, C] @ x[b] + bias`` per image (``bias`` broadcast from ``[B or 1, C or 1, 1, 1]``)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    if bias is None:
        return torch.bmm(mat, flat).view(b, c, h, w)
    return torch.baddbmm(bias.reshape(bias.shape[0], bias.shape[1], 1), mat, flat).view(b, c, h, w)


def crop_and_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip as one gather, in ``x``'s own dtype."""
    b, c, h, w = x.shape
    if not padding and not flip:
        return x
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = torch.nn.functional.pad(x, (padding,) * 4) if padding else x
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:
        mirrored = (torch.rand(b, generator=generator, device=dev) < 0.5)[:, None]
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows = oy[:, None] + torch.arange(h, device=dev)
    index = (rows[:, :, None] * wp + (ox[:, None] + cols)[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to H x W at a random offset per image (any dtype)."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * padding)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = _constant("luma", _LUMA, x.device, x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _grayscale_matrices(b: int, p: float, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """``[B, 3, 3]``: the luma projection for the images drawn with probability p, else identity."""
    gray = (torch.rand(b, generator=generator, device=device) < p).to(dtype).view(b, 1, 1)
    luma = _constant("luma3", _LUMA, device, dtype)
    return gray * luma + (1 - gray) * _constant("eye", 3, device, dtype)


def _jitter_affine(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                   generator: torch.Generator, scale: float = 1.0):
    """The per-image affine map ``(mat [B, C, C], bias [B, 1, 1, 1])`` of colour jitter on ``x * scale``,
    and the mask ``[B]`` of the images drawn.

    Brightness f_b and contrast f_c: ``f_c * f_b * x + (1 - f_c) * mean_luma(f_b * x)``; saturation
    blends with the luma, hue rotates the YIQ chroma plane; both are 3x3 maps that keep gray.
    Images not drawn (probability 1 - p) get the identity (up to rounding).
    """
    b, c, dev, dtype = x.shape[0], x.shape[1], x.device, x.dtype
    bright, contrast, sat, hue = strength
    ones = torch.ones(b, device=dev, dtype=dtype)
    f_b = _uniform(b, 1 - bright, 1 + bright, generator, dev).to(dtype) if bright else ones
    f_c = _uniform(b, 1 - contrast, 1 + contrast, generator, dev).to(dtype) if contrast else ones
    apply = (torch.rand(b, generator=generator, device=dev) < p).to(dtype)
    f_b, f_c = apply * f_b + (1 - apply), apply * f_c + (1 - apply)
    mean_luma = _gray(x).mean((1, 2, 3)) * (f_b * scale)  # the contrast pivot, after brightness
    bias = ((1 - f_c) * mean_luma).view(b, 1, 1, 1)
    eye = _constant("eye", c, dev, dtype).expand(b, c, c)
    mat = eye * (f_c * f_b * scale).view(b, 1, 1)
    if c == 3 and sat:
        s = (apply * _uniform(b, 1 - sat, 1 + sat, generator, dev) + (1 - apply)).to(dtype).view(b, 1, 1)
        mat = (s * eye + (1 - s) * _constant("luma3", _LUMA, dev, dtype)) @ mat
    if c == 3 and hue:
        theta = apply * _uniform(b, -hue, hue, generator, dev) * 2 * math.pi
        cos, sin = theta.cos(), theta.sin()
        one, zero = torch.ones_like(cos), torch.zeros_like(cos)
        rot = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1).view(b, 3, 3)
        to_yiq, from_yiq = _constant("yiq_pair", _RGB2YIQ, dev, cos.dtype).unbind(0)
        mat = (from_yiq @ rot @ to_yiq).to(dtype) @ mat
    return mat, bias, apply.bool()


def color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue factors drawn per image, applied with probability p,
    as one affine map per image and one clamp (``_jitter_affine``). ``x``: float in [0, 1].
    Images not drawn are returned exactly as they were."""
    if p <= 0 or not any(strength):
        return x
    mat, bias, drawn = _jitter_affine(x, strength, p, generator)
    out = _affine(x, mat, bias).clamp_(0, 1)
    # the maps of untouched images are the identity only up to rounding: keep those images exact
    return out if p >= 1 else torch.where(drawn.view(-1, 1, 1, 1), out, x)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each image turned to its luma (in every channel) with probability p; 1-channel: unchanged."""
    if x.shape[1] != 3:
        return x
    return _affine(x, _grayscale_matrices(x.shape[0], p, generator, x.device, x.dtype))
