"""The field's own iterative engine as a peer: cohere-core (APS), 620 iterations
"3*(20*ER+180*HIO)+20*ER" with Gaussian shrink-wrap every 20, on the same 32 x 32 inputs.
An optional extra (``pip install cdistream[compare]``): the service never needs it.

cohere takes magnitudes with zero frequency centred and goes to reciprocal space with an
inverse FFT, so its image is the complex conjugate of ours; it reads its data from a file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile

import numpy as np

__all__ = [
    "COHERE_SEQUENCE",
    "cohere_available",
    "cohere_phase_retrieval",
    "cohere_phase_retrieval_3d",
]

log = logging.getLogger(__name__)

COHERE_SEQUENCE = "3*(20*ER+180*HIO)+20*ER"


def cohere_available() -> bool:
    """True when cohere-core is installed."""
    try:
        import cohere_core.controller.phasing  # noqa: F401
    except ImportError:
        return False
    return True


def _params(sequence: str, dims: int) -> dict:
    """The reconstruction APS runs: Gaussian shrink-wrap every 20 iterations, sigma 1, threshold
    0.1, from a support of half the window along each of ``dims`` axes."""
    return {
        "algorithm_sequence": sequence,
        "shrink_wrap_trigger": [1, 20],
        "shrink_wrap_type": "GAUSS",
        "shrink_wrap_threshold": 0.1,
        "shrink_wrap_gauss_sigma": 1.0,
        "initial_support_area": (0.5,) * dims,
    }


def _seeded_start(data: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """The start cohere draws (uniform real and imaginary parts, scaled by their power and the
    data's maximum, zero outside its initial support), but from ``rng``: cohere reseeds numpy's
    generator from the clock, so its own starts can never be repeated."""
    start = rng.random(data.shape) + 1j * rng.random(data.shape)
    start *= np.sum(np.abs(start) ** 2) * data.max()
    box = tuple(
        slice((n - int(share * n)) // 2, (n - int(share * n)) // 2 + int(share * n))
        for n, share in zip(data.shape, params["initial_support_area"], strict=True)
    )
    support = np.zeros(data.shape, bool)
    support[box] = True
    return (start * support).astype(np.complex64)


def _phase_one(data: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """One cohere-core reconstruction of ``data`` (zero frequency centred) from a seeded start;
    cohere reads the data and the start from files."""
    import cohere_core.controller.phasing as phasing

    with tempfile.TemporaryDirectory(prefix="cdistream-cohere-") as tmp:
        path = os.path.join(tmp, "data.npy")
        np.save(path, data)
        np.save(os.path.join(tmp, "image.npy"), _seeded_start(data, params, rng))
        with contextlib.redirect_stdout(io.StringIO()):  # cohere prints as it goes
            rec = phasing.create_rec(dict(params, continue_dir=tmp), path, "np", -1, debug=True)
            rec.iterate()
        return np.conj(np.asarray(rec.get_image()))


def cohere_phase_retrieval(
    magnitudes: np.ndarray, sequence: str = COHERE_SEQUENCE, seed: int | None = None
) -> np.ndarray:
    """Complex objects (k, N, N), in cdistream's convention, from magnitudes (k, N, N) with zero
    frequency at N//2: one cohere-core reconstruction per pattern, each from a random start
    drawn from one generator seeded with ``seed``."""
    params, rng = _params(sequence, 2), np.random.default_rng(seed)
    patterns = np.asarray(magnitudes, np.float32).reshape(-1, *np.shape(magnitudes)[-2:])
    return np.stack([_phase_one(pattern, params, rng) for pattern in patterns])


def cohere_phase_retrieval_3d(magnitudes: np.ndarray, sequence: str = COHERE_SEQUENCE,
                              seed: int | None = None) -> np.ndarray:
    """One cohere-core reconstruction of a 3D cube of magnitudes, zero frequency at its centre,
    from a random start seeded with ``seed``; the complex object in cdistream's convention."""
    data = np.asarray(magnitudes, np.float32)
    return _phase_one(data, _params(sequence, 3), np.random.default_rng(seed))
