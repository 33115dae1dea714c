"""``cdistream view-3d FILE``: a look at a 3D reconstruction. Three orthogonal slices through the
crystal's centre, amplitude and phase (radians on a cyclic colour map, with colour bars), and
its isosurface shaded and coloured by the phase on its surface, saved to PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdistream.volume_file import read_volume

__all__ = ["ISO_LEVEL", "plot_volume"]

ISO_LEVEL = 0.3  # of the amplitude's maximum: the surface shown


def _centre_of_mass(amplitude: np.ndarray) -> tuple[int, ...]:
    weights = amplitude / max(float(amplitude.sum()), 1e-30)
    grids = np.indices(amplitude.shape)
    return tuple(int(round(float((g * weights).sum()))) for g in grids)


def plot_volume(path: str | Path, save: str | Path, level: float = ISO_LEVEL) -> Path:
    """Write the PNG of the volume file at ``path`` to ``save``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.measure import marching_cubes

    from cdistream.plotting import PHASE_CMAP, show_amplitude, show_phase

    volume = read_volume(path)
    amp, phase, support = volume["amplitude"], volume["phase"], volume["support"].astype(bool)
    centre = _centre_of_mass(amp * support)
    axes_names = ("rocking", "row", "col")
    fig = plt.figure(figsize=(12, 7.5))
    for k in range(3):
        cut = [slice(None)] * 3
        cut[k] = centre[k]
        rest = [n for i, n in enumerate(axes_names) if i != k]
        title = f"{axes_names[k]} = {centre[k]}: {rest[0]} x {rest[1]}"
        show_amplitude(fig, fig.add_subplot(2, 4, k + 1), amp[tuple(cut)], f"amplitude, {title}")
        shown = np.where(support[tuple(cut)], phase[tuple(cut)], np.nan)
        show_phase(fig, fig.add_subplot(2, 4, k + 5), shown, "phase (rad)")
    ax = fig.add_subplot(1, 4, 4, projection="3d")
    if amp.max() > level:
        verts, faces, _, _ = marching_cubes(amp, level)
        centres = verts[faces].mean(axis=1).round().astype(int)
        for i in range(3):
            centres[:, i] = np.clip(centres[:, i], 0, amp.shape[i] - 1)
        colour = phase[centres[:, 0], centres[:, 1], centres[:, 2]]
        surface = ax.plot_trisurf(verts[:, 2], verts[:, 1], faces, verts[:, 0],
                                  cmap=PHASE_CMAP, linewidth=0, antialiased=True)
        surface.set_array(colour)
        surface.set_clim(-np.pi, np.pi)
        bar = fig.colorbar(surface, ax=ax, fraction=0.04, pad=0.1)
        bar.set_label("phase on the surface (rad)", fontsize=7)
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    ax.set_zlabel("rocking")
    ax.set_title(f"isosurface at {level:.0%} of the amplitude", fontsize=8)
    fig.suptitle(f"{Path(path).name}: chi2 {volume['chi2']:.4f}", fontsize=9)
    fig.tight_layout()
    save = Path(save)
    fig.savefig(save, dpi=100)
    plt.close(fig)
    return save
