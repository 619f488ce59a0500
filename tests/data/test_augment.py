"""Batched augmentation: crop windows, flips, jitter, grayscale, normalisation, determinism."""

from __future__ import annotations

import pytest
import torch

from hybridlt.data.augment import BatchAugment, color_jitter, random_crop, random_flip, random_grayscale

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(b=16, c=3, h=8, w=8, seed=0):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=_gen(seed))


def _plain(**kwargs):
    """No randomness at all: only normalisation."""
    base = dict(crop_padding=0, flip=False, grayscale_p=0.0, jitter=(0, 0, 0, 0), jitter_p=0.0)
    return BatchAugment(MEAN, STD, **{**base, **kwargs})


def _luma(x):
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def test_random_crop_is_a_window_of_the_zero_padded_input():
    x = torch.rand(12, 3, 6, 7, generator=_gen(1)) + 0.1  # no zeros inside the image
    p = 2
    out = random_crop(x, p, _gen(2))
    assert out.shape == x.shape
    offsets = set()
    for i in range(len(x)):
        padded = torch.zeros(3, 6 + 2 * p, 7 + 2 * p)
        padded[:, p:p + 6, p:p + 7] = x[i]
        hits = [(oy, ox) for oy in range(2 * p + 1) for ox in range(2 * p + 1)
                if torch.equal(padded[:, oy:oy + 6, ox:ox + 7], out[i])]
        assert len(hits) == 1, i
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets vary across images


def test_random_crop_offsets_cover_the_full_range():
    x = torch.ones(400, 1, 5, 5)
    out = random_crop(x, 2, _gen(3))
    # zero rows at the top mean a downward shift: oy = 0 gives 2 zero rows, oy = 4 gives 2 at the bottom
    top_zero_rows = (out[:, 0, :, 2] == 0).int().cumprod(1).sum(1)
    bottom_zero_rows = (out[:, 0, :, 2].flip(1) == 0).int().cumprod(1).sum(1)
    assert set(top_zero_rows.tolist()) == {0, 1, 2} and set(bottom_zero_rows.tolist()) == {0, 1, 2}
    assert ((top_zero_rows > 0) & (bottom_zero_rows > 0)).sum() == 0
    assert (out.sum((1, 2, 3)) >= 9).all()  # at least a 3x3 block of the image remains


def test_flip_is_identity_or_mirror_and_both_happen():
    x = torch.rand(64, 3, 5, 6, generator=_gen(4))
    out = random_flip(x, _gen(5))
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    mirrored = [torch.equal(o, i[:, :, torch.arange(5, -1, -1)]) for o, i in zip(out, x, strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True))  # exactly one of the two
    assert 10 < sum(mirrored) < 54


def test_jitter_zero_strength_or_zero_p_is_identity():
    x = torch.rand(8, 3, 6, 6, generator=_gen(6))
    assert torch.equal(color_jitter(x, (0, 0, 0, 0), 1.0, _gen(0)), x)
    assert torch.equal(color_jitter(x, (0.4, 0.4, 0.4, 0.1), 0.0, _gen(0)), x)
    assert not torch.allclose(color_jitter(x, (0.4, 0.4, 0.4, 0.1), 1.0, _gen(0)), x)
    # through BatchAugment: jitter=True equals jitter=False when the jitter cannot act
    imgs = _images()
    for aug in (BatchAugment(MEAN, STD, jitter=(0, 0, 0, 0)), BatchAugment(MEAN, STD, jitter_p=0.0)):
        assert torch.equal(aug(imgs, _gen(7), jitter=True), aug(imgs, _gen(7), jitter=False))


def test_jitter_p_applies_to_some_images_only():
    x = torch.rand(200, 3, 4, 4, generator=_gen(8)) * 0.5 + 0.25
    out = color_jitter(x, (0.4, 0.0, 0.0, 0.0), 0.3, _gen(9))
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


def test_brightness_scales_pixels():
    x = torch.full((300, 3, 2, 2), 0.5)
    out = color_jitter(x, (0.4, 0, 0, 0), 1.0, _gen(10))
    factors = out[:, 0, 0, 0] / 0.5
    assert torch.allclose(out, factors.view(-1, 1, 1, 1) * x)  # one factor per image, all pixels
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert factors.min() < 0.65 and factors.max() > 1.35


def test_hue_and_saturation_keep_luma_and_gray():
    x = torch.rand(32, 3, 4, 4, generator=_gen(11)) * 0.2 + 0.4  # mid-range: no clamping
    x[:, :, 0, 0] = 0.5  # one gray pixel per image
    for strength in ((0, 0, 0, 0.1), (0, 0, 0.4, 0)):
        out = color_jitter(x, strength, 1.0, _gen(12))
        assert not torch.allclose(out, x, atol=1e-3)
        torch.testing.assert_close(_luma(out), _luma(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, :, 0, 0], x[:, :, 0, 0], atol=1e-5, rtol=0)


def test_contrast_keeps_mean_luma():
    x = torch.rand(32, 3, 4, 4, generator=_gen(13)) * 0.2 + 0.4
    out = color_jitter(x, (0, 0.4, 0, 0), 1.0, _gen(14))
    torch.testing.assert_close(_luma(out).mean((1, 2)), _luma(x).mean((1, 2)), atol=1e-5, rtol=0)
    assert not torch.allclose(out, x, atol=1e-3)


def test_grayscale_makes_channels_equal_to_luma():
    x = torch.rand(50, 3, 4, 4, generator=_gen(15))
    out = random_grayscale(x, 1.0, _gen(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out[:, 0], _luma(x), atol=1e-6, rtol=0)
    assert torch.equal(random_grayscale(x, 0.0, _gen(0)), x)
    some = random_grayscale(x, 0.5, _gen(16))
    gray = (some[:, 0] == some[:, 1]).flatten(1).all(1) & (some[:, 1] == some[:, 2]).flatten(1).all(1)
    assert 10 < gray.sum().item() < 40


def test_output_is_normalised_with_given_mean_std():
    imgs = _images()
    out = _plain()(imgs, _gen(0))
    x = imgs.double() / 255
    for c in range(3):
        torch.testing.assert_close(out[:, c].double(), (x[:, c] - MEAN[c]) / STD[c], atol=1e-5, rtol=0)
    assert out.dtype == torch.float32
    # normalize() takes uint8 (scaled by 1/255) or 0..1 floats (as they are)
    torch.testing.assert_close(_plain().normalize(imgs), out)
    torch.testing.assert_close(_plain().normalize(imgs.float() / 255), out)


def test_full_pipeline_stays_in_normalised_range():
    out = BatchAugment(MEAN, STD)(_images(64), _gen(0), jitter=True)
    lo = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD, strict=True)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD, strict=True)]).view(1, 3, 1, 1)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


def test_same_seed_same_output_different_seed_different():
    aug, imgs = BatchAugment(MEAN, STD), _images(32)
    a = aug.two_views(imgs, _gen(21))
    assert torch.equal(a, aug.two_views(imgs, _gen(21)))
    assert not torch.equal(a, aug.two_views(imgs, _gen(22)))
    # the generator advances: two calls on one generator differ
    g = _gen(21)
    assert not torch.equal(aug(imgs, g), aug(imgs, g))


def test_one_channel_colour_ops_are_no_ops():
    imgs = _images(16, c=1)
    aug = BatchAugment([0.5], [0.25], crop_padding=0, flip=False, grayscale_p=1.0, jitter=(0, 0, 0.4, 0.1),
                       jitter_p=1.0)
    expected = (imgs.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(aug(imgs, _gen(0), jitter=True), expected)
    x = imgs.float() / 255
    assert torch.equal(random_grayscale(x, 1.0, _gen(0)), x)
    assert torch.equal(color_jitter(x, (0, 0, 0.4, 0.1), 1.0, _gen(0)), x)
    # brightness is not a colour op: it still acts on one channel
    assert not torch.equal(color_jitter(x, (0.4, 0, 0, 0), 1.0, _gen(0)), x)


def test_two_views_shape_and_views():
    imgs = _images(5, c=3, h=8, w=8)
    views = BatchAugment(MEAN, STD).two_views(imgs, _gen(0))
    assert views.shape == (5, 2, 3, 8, 8) and views.dtype == torch.float32
    # with nothing random but the jitter: view 1 (no jitter) is just the normalised image
    aug = _plain(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=1.0)
    views = aug.two_views(imgs, _gen(1))
    torch.testing.assert_close(views[:, 1], aug.normalize(imgs))
    assert not torch.allclose(views[:, 0], views[:, 1], atol=1e-3)
    one = BatchAugment([0.5], [0.5]).two_views(_images(4, c=1), _gen(0))
    assert one.shape == (4, 2, 1, 8, 8)


@pytest.mark.parametrize("padding", [1, 4])
def test_pipeline_crop_preserves_shape(padding):
    out = BatchAugment(MEAN, STD, crop_padding=padding)(_images(4, h=10, w=12), _gen(0))
    assert out.shape == (4, 3, 10, 12)


def test_crop_and_flip_is_a_window_of_the_padded_input_possibly_mirrored():
    from hybridlt.data.augment import crop_and_flip

    x = torch.randint(0, 256, (24, 3, 6, 7), dtype=torch.uint8, generator=_gen(21))
    p = 2
    out = crop_and_flip(x, p, True, _gen(22))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p,) * 4)
    mirrored = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 7] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 0 < mirrored < len(x)
    assert torch.equal(crop_and_flip(x, 0, False, _gen(0)), x)
