"""The networks' loss, for training and the per-sample adaptation alike: it respects the
ambiguities of the inverse problem, written in ``keras.ops`` so that it runs on any Keras
backend (TensorFlow on the CPU, JAX on a GPU):

- targets are centred (translation fixed) and each pattern is scored against whichever of the
  object and its twin image the network chose;
- the phase term ignores a global offset, a linear ramp (the ROI's centre sets the ramp) and
  whole turns (targets are wrapped; projected strain may wind round a dislocation);
- a reciprocal-space term compares |FT(prediction)| with the measured magnitudes on the valid
  pixels (AutoPhaseNN, PtychoPINN): invariant to twin and translation by construction, it ties
  the prediction to the data, ramp included;
- an optional penalty on amplitude outside the target's support (:func:`outside_support`);
- an optional amplitude L1 weighed by the crystal's area (:func:`amplitude_misfit`).
"""

from __future__ import annotations

from keras import ops

__all__ = [
    "amplitude_misfit",
    "cdi_loss",
    "intensity_misfit",
    "outside_support",
    "reciprocal_misfit",
    "twin_targets",
]

EPS = 1e-6


def _far_field_power(amp_pred, phase_pred):
    """|FT(a exp(i phi))|^2 per pattern, zero frequency at N//2."""
    n = amp_pred.shape[1]
    real, imag = ops.fft2((amp_pred * ops.cos(phase_pred), amp_pred * ops.sin(phase_pred)))
    return ops.roll(real * real + imag * imag, (n // 2, n // 2), axis=(1, 2))


def _scaled_misfit(measured, model):
    """||measured - s model||^2 / ||measured||^2 per pattern, s the least-squares scale."""
    scale = ops.sum(measured * model, axis=(1, 2)) / (ops.sum(model * model, axis=(1, 2)) + EPS)
    residual = measured - scale[:, None, None] * model
    return ops.sum(residual * residual, axis=(1, 2)) / (ops.sum(measured**2, axis=(1, 2)) + EPS)


def reciprocal_misfit(amp_pred, phase_pred, magnitudes, valid):
    """Per pattern: || m - s |FT(a exp(i phi))| ||^2 / ||m||^2 over the valid pixels, with the
    least-squares scale s (the measured scale is arbitrary); zero frequency at N//2."""
    model = ops.sqrt(_far_field_power(amp_pred, phase_pred) + EPS) * valid
    return _scaled_misfit(magnitudes * valid, model)


def intensity_misfit(amp_pred, phase_pred, magnitudes, valid):
    """Per pattern: the product's chi2 (:func:`cdistream.physics.chi2`), sum((I - s I')^2) /
    sum(I^2) over the valid pixels with the least-squares scale s: it weighs the bright centre
    of the pattern, where the crystal's size and envelope are decided, far above the fringes."""
    model = _far_field_power(amp_pred, phase_pred) * valid
    measured = magnitudes * magnitudes * valid
    # each scaled to a maximum of 1, as the product does, so that float32 sums stay exact
    model = model / (ops.max(model, axis=(1, 2), keepdims=True) + EPS)
    measured = measured / (ops.max(measured, axis=(1, 2), keepdims=True) + EPS)
    return _scaled_misfit(measured, model)


SUPPORT_LEVEL = 0.05  # a target's support: amplitude above this (of its maximum, 1)


def twin_targets(amplitude, phase):
    """Twin of centred (batch, N, N) targets: inversion about N//2, phase negated."""
    flip = ops.roll(ops.flip(amplitude, axis=(1, 2)), shift=(1, 1), axis=(1, 2))
    flip_phase = ops.roll(ops.flip(phase, axis=(1, 2)), shift=(1, 1), axis=(1, 2))
    return flip, -flip_phase


def _plane_free_mse(d, w):
    """Weighted mean of 2 (1 - cos r) per pattern, r the phase difference d (batch, N, N) less
    its best-fit plane (offset and linear ramp), all found on the unit circle: blind to 2 pi, so
    targets may be wrapped and projected strain may hold vortices. Equals the mean square of r
    for small r. The ramp's slopes are the weighted mean neighbour-to-neighbour differences."""
    n = d.shape[1]
    grid = ops.cast(ops.arange(n), "float32")
    rows, cols = grid[None, :, None], grid[None, None, :]
    wr = w[:, 1:, :] * w[:, :-1, :]
    wc = w[:, :, 1:] * w[:, :, :-1]
    dr = d[:, 1:, :] - d[:, :-1, :]
    dc = d[:, :, 1:] - d[:, :, :-1]
    a = ops.arctan2(ops.sum(wr * ops.sin(dr), (1, 2)), ops.sum(wr * ops.cos(dr), (1, 2)) + EPS)
    b = ops.arctan2(ops.sum(wc * ops.sin(dc), (1, 2)), ops.sum(wc * ops.cos(dc), (1, 2)) + EPS)
    rest = d - a[:, None, None] * rows - b[:, None, None] * cols
    c = ops.arctan2(ops.sum(w * ops.sin(rest), (1, 2)), ops.sum(w * ops.cos(rest), (1, 2)) + EPS)
    residual = rest - c[:, None, None]
    return ops.sum(w * 2 * (1 - ops.cos(residual)), (1, 2)) / (ops.sum(w, (1, 2)) + EPS)


def amplitude_misfit(amp_true, amp_pred):
    """Per pattern: sum |a_pred - a_true| over the window divided by the target's support area
    (:data:`SUPPORT_LEVEL`). The BCE, a mean over all N x N pixels, hardly sees a crystal's
    bright core of a few dozen of them: trained on it alone the networks draw the core blurred,
    twice as wide as it is, and a faint halo around the crystal (the model card's known limits)."""
    support = ops.sum(ops.cast(amp_true > SUPPORT_LEVEL, "float32"), axis=(1, 2))
    return ops.sum(ops.abs(amp_pred - amp_true), axis=(1, 2)) / (support + 1.0)


def _branch(amp_true, phase_true, amp_pred, phase_pred, phase_weight: float,
            amplitude_weight: float = 0.0):
    p = ops.clip(amp_pred, EPS, 1 - EPS)
    bce = -ops.mean(amp_true * ops.log(p) + (1 - amp_true) * ops.log(1 - p), axis=(1, 2))
    w = amp_true * ops.cast(amp_true > 0.1, "float32")  # phase is defined on the support
    phase = _plane_free_mse(phase_pred - phase_true, w)
    total = bce + phase_weight * phase
    if amplitude_weight:
        total = total + amplitude_weight * amplitude_misfit(amp_true, amp_pred)
    return total, bce, phase


def outside_support(amp_true, amp_pred, grow: int = 2):
    """Per pattern: the mean predicted amplitude outside the target's support and its twin's,
    both grown by ``grow`` pixels: amplitude the crystal cannot have. The reciprocal term alone
    taught the networks to put a faint blob in the window's corner, farthest from the centred
    crystal, whose fine fringes fill in what no compact crystal explains (background, partial
    coherence, noise): above 10% of the maximum in a quarter to two fifths of the simulated
    reconstructions and on every frame of the real scan."""
    twin, _ = twin_targets(amp_true, amp_true)
    inside = ops.cast((amp_true > SUPPORT_LEVEL) | (twin > SUPPORT_LEVEL), "float32")[..., None]
    grown = ops.max_pool(inside, 2 * grow + 1, strides=1, padding="same")[..., 0]
    return ops.mean(amp_pred * (1.0 - grown), axis=(1, 2))


def cdi_loss(
    amp_true,
    phase_true,
    amp_pred,
    phase_pred,
    magnitudes=None,
    valid=None,
    phase_weight: float = 1.0,
    reciprocal_weight: float = 0.0,
    support_weight: float = 0.0,
    intensity_weight: float = 0.0,
    amplitude_weight: float = 0.0,
    per_pattern: bool = False,
):
    """Per-batch mean of min(loss vs target, loss vs twin), the amplitude L1 counting in that
    choice, plus the reciprocal-space misfits (of magnitudes and of intensities) and the
    amplitude outside the support, each weighted.
    Returns (total, amplitude BCE, phase MSE, reciprocal misfit), each a scalar; with
    ``per_pattern`` the total alone, per pattern."""
    direct = _branch(amp_true, phase_true, amp_pred, phase_pred, phase_weight, amplitude_weight)
    amp_twin, phase_twin = twin_targets(amp_true, phase_true)
    flipped = _branch(amp_twin, phase_twin, amp_pred, phase_pred, phase_weight, amplitude_weight)
    use_twin = flipped[0] < direct[0]
    total, bce, phase = (ops.where(use_twin, f, d) for d, f in zip(direct, flipped, strict=True))
    if reciprocal_weight and magnitudes is not None:
        recip = reciprocal_misfit(amp_pred, phase_pred, magnitudes, valid)
        total = total + reciprocal_weight * recip
    else:
        recip = ops.zeros_like(total)
    if support_weight:
        total = total + support_weight * outside_support(amp_true, amp_pred)
    if intensity_weight and magnitudes is not None:
        total = total + intensity_weight * intensity_misfit(amp_pred, phase_pred, magnitudes, valid)
    if per_pattern:
        return total
    return ops.mean(total), ops.mean(bce), ops.mean(phase), ops.mean(recip)
