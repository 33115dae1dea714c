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

__all__ = ["best_pair", "crop_window", "near_pair"]


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
    ``hot_ratio`` times brighter than all their valid neighbours (never the 3 x 3 centre), and
    at or above ``saturation`` (None: a negative value). Invalid pixels are 0."""
    offset = 1.0 if unsigned else 0.0
    height, width = image.shape
    first_r, first_c = row - span // 2, col - span // 2
    window = np.zeros((span, span), np.float32)
    valid = np.zeros((span, span), np.bool_)
    for i in range(span):
        r = first_r + i
        for j in range(span):
            c = first_c + j
            if r < 0 or r >= height or c < 0 or c >= width:
                continue  # past the edge: invalid, 0
            v = _value(image, bad, has_mask, unsigned, top, r, c)
            ok = v >= 0.0
            if unsigned:
                ok = ok and v != 0.0
            elif has_mask:
                ok = ok and not bad[r, c]
            valid[i, j] = ok
            window[i, j] = max(v - offset, 0.0)
    centre = span // 2
    hot = np.zeros((span, span), np.bool_)
    for i in range(span):
        for j in range(span):
            if not valid[i, j] or (abs(i - centre) <= 1 and abs(j - centre) <= 1):
                continue
            around = 0.0
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    a, b = i + di, j + dj
                    if (di or dj) and 0 <= a < span and 0 <= b < span and valid[a, b]:
                        around = max(around, window[a, b])
            hot[i, j] = window[i, j] > hot_ratio * max(around, 1.0)
    saturated = 0
    for i in range(span):
        for j in range(span):
            if hot[i, j]:
                valid[i, j] = False
            elif valid[i, j] and saturation >= 0.0 and window[i, j] >= saturation:
                valid[i, j] = False
                saturated += 1
            if not valid[i, j]:
                window[i, j] = 0.0
    return window, valid, saturated
