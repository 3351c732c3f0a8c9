"""Grow/feather morphology and the two selection masks, against brute-force references."""

import numpy as np
import pytest

from easel.server.imaging.masks import blur, composite_mask, denoise_mask, dilate, erode


def brute_dilate(mask, r):
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            out[y, x] = mask[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1].max()
    return out


def brute_box_mean(a, r, axis):
    """Rounded box mean along one axis with edge repetition, the slow way."""
    a = np.moveaxis(a.astype(np.int64), axis, -1)
    p = np.pad(a, [(0, 0), (r, r)], mode="edge")
    k = 2 * r + 1
    out = np.stack([(p[:, i: i + k].sum(axis=1) + k // 2) // k for i in range(a.shape[1])], axis=1)
    return np.moveaxis(out, -1, axis)


def chebyshev_distance(mask):
    """Distance (square metric) from every pixel to the nearest non-zero pixel."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.maximum(np.abs(yy[..., None] - ys), np.abs(xx[..., None] - xs))
    return d.min(axis=-1)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("r", [0, 1, 2, 5, 13])
def test_dilate_matches_brute_force(rng, r):
    mask = (rng.random((23, 31)) > 0.93).astype(np.uint8) * rng.integers(1, 256, (23, 31)).astype(np.uint8)
    assert np.array_equal(dilate(mask, r), brute_dilate(mask, r))


def test_dilate_single_pixel_is_a_square_and_erode_is_its_dual():
    mask = np.zeros((21, 21), np.uint8)
    mask[10, 10] = 200
    grown = dilate(mask, 3)
    assert (grown == 200).sum() == 49 and grown[7:14, 7:14].min() == 200
    block = np.zeros((21, 21), np.uint8)
    block[5:16, 5:16] = 255
    assert np.array_equal(erode(block, 2) > 0, np.pad(np.ones((7, 7), bool), 7))
    assert erode(np.full((5, 5), 255, np.uint8), 3).min() == 255  # outside counts as selected


def test_masks_reject_wrong_input():
    with pytest.raises(ValueError):
        dilate(np.zeros((4, 4), np.float32), 1)
    with pytest.raises(ValueError):
        blur(np.zeros((4, 4, 1), np.uint8), 1)


@pytest.mark.parametrize("r", [1, 2, 3, 4, 7])
def test_blur_is_three_rounded_box_filters(rng, r):
    mask = rng.integers(0, 256, (17, 19)).astype(np.uint8)
    radii = [x for x in (r // 3 + (1 if i < r % 3 else 0) for i in range(3)) if x]
    acc = mask
    for k in radii:
        acc = brute_box_mean(brute_box_mean(acc, k, 1), k, 0)
    assert np.array_equal(blur(mask, r), acc.astype(np.uint8))


def test_blur_support_is_exactly_its_radius():
    mask = np.zeros((60, 60), np.uint8)
    mask[20:40, 15:45] = 255
    out = blur(mask, 9)
    dist = chebyshev_distance(mask)
    assert out[dist > 9].max() == 0
    assert out[30, 45:54].min() > 0  # distances 1..9 along the middle row get some of it
    assert out[30, 30] == 255  # its whole 9-window is selected
    assert np.array_equal(blur(np.full((9, 9), 77, np.uint8), 4), np.full((9, 9), 77, np.uint8))


def test_blur_large_radius_stays_exact_at_the_extremes():
    mask = np.zeros((400, 400), np.uint8)
    mask[:, :200] = 255
    out = blur(mask, 1024)
    assert out.dtype == np.uint8 and out[:, 0].min() > 0 and out[:, -1].max() < 255
    out = blur(mask, 90)
    assert out[:, :110].min() == 255 and out[:, 291:].max() == 0
    assert np.all(np.diff(out[0].astype(int)) <= 0)  # monotone falloff


def test_denoise_mask_grows_and_fades():
    sel = np.zeros((80, 80), np.uint8)
    sel[30:50, 30:50] = 255
    sel[40, 40] = 3  # soft values inside still count as selected support
    d = denoise_mask(sel, grow=6, feather=10)
    dist = chebyshev_distance(sel)
    assert d[dist <= 6].min() == 255
    assert d[dist > 16].max() == 0
    ring = d[40, 50 + 6: 50 + 17]  # to the right, from the grown border outward
    assert np.all(np.diff(ring.astype(int)) <= 0) and 0 < ring[5] < 255
    soft = np.zeros((40, 40), np.uint8)
    soft[10:30, 10:30] = 40
    assert denoise_mask(soft, 2, 4)[10:30, 10:30].min() == 255  # softness is for blending, not denoising


def test_composite_mask_keeps_inside_and_blends_outside():
    sel = np.zeros((80, 80), np.uint8)
    sel[30:50, 30:50] = 255
    c = composite_mask(sel, feather=12)
    dist = chebyshev_distance(sel)
    assert c[sel == 255].min() == 255  # the inside stays fully opaque
    assert c[dist > 12].max() == 0  # nothing beyond the band changes
    band = c[40, 50:63].astype(int)
    assert band[0] > 200 and band[-1] == 0 and np.all(np.diff(band) <= 0)
    assert np.array_equal(composite_mask(sel, 0), sel)


def test_composite_mask_scales_soft_selections():
    sel = np.zeros((60, 60), np.uint8)
    sel[20:40, 20:40] = 128
    c = composite_mask(sel, 8)
    assert np.array_equal(c[20:40, 20:40], sel[20:40, 20:40])
    assert c.max() == 128 and c[30, 41] <= 128 and c[30, 49] == 0
    grad = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (60, 1))
    c = composite_mask(grad, 6)
    assert np.all(c >= grad) and np.all(c[:, 1:].astype(int) - grad[:, 1:] <= 30)


@pytest.mark.parametrize("corner", [(0, 0), (0, -1), (-1, 0), (-1, -1)])
def test_masks_at_the_image_edge(corner):
    sel = np.zeros((40, 50), np.uint8)
    ys = slice(0, 12) if corner[0] == 0 else slice(28, 40)
    xs = slice(0, 12) if corner[1] == 0 else slice(38, 50)
    sel[ys, xs] = 255
    assert composite_mask(sel, 10)[ys, xs].min() == 255
    assert denoise_mask(sel, 4, 10)[ys, xs].min() == 255  # no darkening where the selection meets the edge
