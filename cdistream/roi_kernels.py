"""The ROI's per-frame loops on small regions, compiled with numba: the Bragg-peak search in the
window a tracked peak allows, the refinement around the brightest pair, and the crop. As numpy
they were some forty array calls per frame whose Python overhead, not their arithmetic, set the
ingest rate. (A whole-frame search stays vectorised numpy in :mod:`cdistream.roi`: there SIMD
beats a scalar loop.) :mod:`cdistream.roi` composes them; the conventions are documented there.

Pixel values seen by both: unsigned data + 1, so the all-ones invalid value wraps round to 0;
masked pixels 0; other data as it is."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["best_pair", "crop_window", "near_pair", "window_crop"]


@njit(cache=True, inline="always")
def _value(image, bad, has_mask, unsigned, top, r, c):
    if has_mask and bad[r, c]:
        return 0.0
    v = image[r, c]
    if unsigned:
        return 0.0 if v == top else float(v) + 1.0
    return float(v)


@njit(cache=True, nogil=True)
def best_pair(image, bad, has_mask, unsigned, top, r0, r1, c0, c1):
    """(row, col, value) of the brightest pair of horizontally adjacent pixels within rows
    r0:r1, cols c0:c1, by its dimmer pixel (a hot pixel stands alone, so it cannot win); the
    pair is (row, col) and (row, col + 1), the value carries the unsigned offset."""
    best, row, col = -np.inf, r0, c0
    for r in range(r0, r1):
        prev = _value(image, bad, has_mask, unsigned, top, r, c0)
        for c in range(c0 + 1, c1):
            cur = _value(image, bad, has_mask, unsigned, top, r, c)
            pair = min(prev, cur)
            if pair > best:
                best, row, col = pair, r, c - 1
            prev = cur
    return row, col, best


@njit(cache=True, nogil=True)
def near_pair(image, bad, has_mask, unsigned, top, row, col, r0, r1, c0, c1):
    """The brightest pixel within 3 pixels of the pair at (row, col) (and within the region
    r0:r1, c0:c1) that is not 4 times brighter than all its neighbours."""
    offset = 1.0 if unsigned else 0.0
    wr0, wc0 = max(row - 3, r0), max(col - 3, c0)
    wr1, wc1 = min(row + 5, r1), min(col + 6, c1)
    h, w = wr1 - wr0, wc1 - wc0
    window = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            window[i, j] = max(_value(image, bad, has_mask, unsigned, top, wr0 + i, wc0 + j)
                               - offset, 0.0)
    pick, pr, pc = -1.0, 0, 0
    for i in range(h):
        for j in range(w):
            around = 0.0
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if (di or dj) and 0 <= i + di < h and 0 <= j + dj < w:
                        around = max(around, window[i + di, j + dj])
            v = 0.0 if window[i, j] > 4.0 * around else window[i, j]
            if v > pick:
                pick, pr, pc = v, i, j
    return wr0 + pr, wc0 + pc


@njit(cache=True, nogil=True)
def crop_window(image, bad, has_mask, unsigned, top, row, col, span, hot_ratio, saturation):
    """The span x span counts around (row, col), their validity and how many pixels were
    saturated: invalid past the detector's edge, where masked or all-ones, isolated pixels
    ``hot_ratio`` times brighter than all their neighbours (never the 3 x 3 centre), and at or
    above ``saturation`` (None: a negative value). Invalid pixels are 0."""
    height, width = image.shape
    first_r, first_c = row - span // 2, col - span // 2
    # the valid counts with a border of zeros, so that every pixel has eight neighbours; a
    # pixel not valid counts 0, so the brightest neighbour is the brightest valid one
    padded = np.zeros((span + 2, span + 2), np.float32)
    valid = np.zeros((span, span), np.bool_)
    j0, j1 = max(-first_c, 0), min(width - first_c, span)  # the columns on the detector
    for i in range(max(-first_r, 0), min(height - first_r, span)):
        source = image[first_r + i, first_c + j0 : first_c + j1]
        masked = bad[first_r + i, first_c + j0 : first_c + j1] if has_mask else bad[0, :1]
        counts, ok = padded[i + 1, 1 + j0 : 1 + j1], valid[i, j0:j1]
        for j in range(j1 - j0):
            raw = source[j]
            if (has_mask and masked[j]) or (raw == top if unsigned else raw < 0):
                continue
            ok[j] = True
            counts[j] = raw
    centre = span // 2
    window = np.zeros((span, span), np.float32)
    saturated = 0
    for i in range(span):
        up, mid, down = padded[i], padded[i + 1], padded[i + 2]
        for j in range(span):
            if not valid[i, j]:
                continue
            v = mid[j + 1]
            # hot: brighter than hot_ratio times its brightest neighbour and than hot_ratio
            if v > hot_ratio and (abs(i - centre) > 1 or abs(j - centre) > 1):
                around = max(max(up[j], up[j + 1]), max(up[j + 2], mid[j]))
                around = max(around, max(max(mid[j + 2], down[j]), max(down[j + 1], down[j + 2])))
                if v > hot_ratio * max(around, 1.0):
                    valid[i, j] = False
                    continue
            if saturation >= 0.0 and v >= saturation:
                valid[i, j] = False
                saturated += 1
                continue
            window[i, j] = v
    return window, valid, saturated


@njit(cache=True, nogil=True)
def window_crop(
    image, bad, has_mask, unsigned, top, last_row, last_col, reach, floor, span, hot_ratio,
    saturation,
):
    """A tracked frame in one call: the peak within ``reach`` pixels of the last one (the
    brightest pair, then the brightest pixel near it) and the crop around it; (row, col,
    height, window, valid, saturated, found). Not found (and nothing cropped) when the window
    is cut to under 8 pixels by the detector's edge, when the peak lies within 4 pixels of a
    window edge that is not the detector's (it is moving out), or when its height (the pair's
    dimmer count) is under ``floor`` (it left the window, or faded)."""
    height, width = image.shape
    r0, c0 = max(last_row - reach, 0), max(last_col - reach, 0)
    r1, c1 = min(last_row + reach + 1, height), min(last_col + reach + 1, width)
    window = np.zeros((0, 0), np.float32)
    valid = np.zeros((0, 0), np.bool_)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return 0, 0, 0.0, window, valid, 0, False
    row, col, value = best_pair(image, bad, has_mask, unsigned, top, r0, r1, c0, c1)
    peak = value - 1.0 if unsigned else value
    row, col = near_pair(image, bad, has_mask, unsigned, top, row, col, r0, r1, c0, c1)
    edge = 4
    at_edge = (
        (row < r0 + edge and r0 > 0) or (row >= r1 - edge and r1 < height)
        or (col < c0 + edge and c0 > 0) or (col >= c1 - edge and c1 < width)
    )
    if at_edge or peak < floor:
        return row, col, peak, window, valid, 0, False
    window, valid, saturated = crop_window(
        image, bad, has_mask, unsigned, top, row, col, span, hot_ratio, saturation
    )
    return row, col, peak, window, valid, saturated, True
