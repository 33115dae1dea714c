"""Physics shared by training, the simulated detector, the service and the tests: objects,
the forward model, chi2, ambiguity-invariant comparison and iterative phase retrieval."""

from .compare import Comparison, align, compare, extent, twin_distinction
from .crystals3d import Crystal3DRecipe, random_crystal_slice, random_crystal_slices
from .forward import (
    centre,
    centre_of_mass,
    chi2,
    diffraction_magnitudes,
    fourier_shift,
    intensity_chi2,
    poisson_magnitudes,
    predicted_intensity,
    twin,
)
from .iterative import autocorrelation_support, phase_retrieval
from .measurement import Measurement, MeasurementRecipe, blur_intensity, measure, peak_offsets
from .objects import ObjectRecipe, random_object, random_objects, strain_phase
from .oversampling import object_extent, oversampling
from .ramp import fit_ramp, plane_fit, ramp_plane, ramp_to_offset, remove_ramp
from .refinement import HeldOut, RefineSettings, refine_cross_validated

__all__ = [
    "Comparison",
    "HeldOut",
    "Crystal3DRecipe",
    "Measurement",
    "MeasurementRecipe",
    "ObjectRecipe",
    "RefineSettings",
    "align",
    "autocorrelation_support",
    "blur_intensity",
    "centre",
    "centre_of_mass",
    "chi2",
    "compare",
    "diffraction_magnitudes",
    "extent",
    "fit_ramp",
    "fourier_shift",
    "intensity_chi2",
    "measure",
    "object_extent",
    "oversampling",
    "peak_offsets",
    "phase_retrieval",
    "plane_fit",
    "poisson_magnitudes",
    "predicted_intensity",
    "random_crystal_slice",
    "random_crystal_slices",
    "random_object",
    "ramp_plane",
    "ramp_to_offset",
    "random_objects",
    "refine_cross_validated",
    "remove_ramp",
    "strain_phase",
    "twin",
    "twin_distinction",
]
