"""Physics shared by training, the simulated detector, the service and the tests: objects,
the forward model, chi2, ambiguity-invariant comparison and iterative phase retrieval."""

from .compare import Comparison, align, compare
from .forward import (
    centre,
    centre_of_mass,
    chi2,
    diffraction_magnitudes,
    fourier_shift,
    poisson_magnitudes,
    predicted_intensity,
    twin,
)
from .iterative import autocorrelation_support, phase_retrieval
from .objects import ObjectRecipe, random_object, random_objects, strain_phase

__all__ = [
    "Comparison",
    "ObjectRecipe",
    "align",
    "autocorrelation_support",
    "centre",
    "centre_of_mass",
    "chi2",
    "compare",
    "diffraction_magnitudes",
    "fourier_shift",
    "phase_retrieval",
    "poisson_magnitudes",
    "predicted_intensity",
    "random_object",
    "random_objects",
    "strain_phase",
    "twin",
]
