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


def cohere_phase_retrieval(magnitudes: np.ndarray, sequence: str = COHERE_SEQUENCE) -> np.ndarray:
    """Complex objects (k, N, N), in cdistream's convention, from magnitudes (k, N, N) with zero
    frequency at N//2: one cohere-core reconstruction per pattern from a random start."""
    import cohere_core.controller.phasing as phasing

    params_base = _params(sequence, 2)
    out = []
    with tempfile.TemporaryDirectory(prefix="cdistream-cohere-") as tmp:
        path = os.path.join(tmp, "data.npy")
        for pattern in np.asarray(magnitudes, np.float32).reshape(-1, *np.shape(magnitudes)[-2:]):
            np.save(path, pattern)
            with contextlib.redirect_stdout(io.StringIO()):  # cohere prints as it goes
                rec = phasing.create_rec(dict(params_base), path, "np", -1, debug=True)
                rec.iterate()
            out.append(np.conj(np.asarray(rec.get_image())))
    return np.stack(out)


def cohere_phase_retrieval_3d(magnitudes: np.ndarray, sequence: str = COHERE_SEQUENCE,
                              seed: int | None = None) -> np.ndarray:
    """One cohere-core reconstruction (its own random start, numpy's global generator seeded
    with ``seed`` when given) of a 3D cube of magnitudes, zero frequency at its centre; the
    complex object in cdistream's convention."""
    import cohere_core.controller.phasing as phasing

    if seed is not None:
        np.random.seed(seed)
    params = _params(sequence, 3)
    with tempfile.TemporaryDirectory(prefix="cdistream-cohere-") as tmp:
        path = os.path.join(tmp, "data.npy")
        np.save(path, np.asarray(magnitudes, np.float32))
        with contextlib.redirect_stdout(io.StringIO()):
            rec = phasing.create_rec(params, path, "np", -1, debug=True)
            rec.iterate()
        return np.conj(np.asarray(rec.get_image()))
