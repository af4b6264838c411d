# %% [markdown]
# # 11 — 3D reconstruction by direct Fourier inversion, and its artefacts
#
# Study-group sessions **25 Mar 2021 (blur)**, guest lecture by David Dynerman, and **1 Apr 2021
# (sharpen)**, "3D Reconstruction via Direct Fourier Inversion". Questions are quoted and answered
# by computation; every section ends in assertions (`tests/test_notebooks.py` runs this file).
# Figures go to `$CRYOLAB_NOTEBOOK_OUT`.
#
# This is the *artefact lab*: a student reconstructs ADK from simulated particles with few
# particles, with pose errors, with a preferred orientation and with a tilted stage, sees what each
# does to the map, and measures it — with the half-map (gold-standard) FSC, with the FSC against
# the known truth and with the directional FSC.
#
# 1. The central-slice theorem, numerically; one particle in 3D (real and Fourier space).
# 2. Why weights and a gridding correction: back-projection without and with them.
# 3. Nearest-neighbour against trilinear insertion, and padding.
# 4. Few particles: gaps in Fourier space, and resolution against the number of particles.
# 5. Wiener regularisation and the SSNR.
# 6. Pose errors.
# 7. Preferred orientation, the missing cone and the directional FSC.
# 8. Tilting the stage; the missing wedge of a tilt series.
# 9. Half maps, the gold-standard FSC and the FSC against the truth.
# 10. Tracking down an artefact with a synthetic example (a diagnosis table).
#
# Library: `cryolab.reconstruct` (`backproject_chunk` → `reconstruct_halves` / `finalize`, the
# map-and-reduce steps of RELION's reconstruction), `cryolab.projection`, `cryolab.simulate`,
# `cryolab.validate`. Conventions: docs/conventions.md (poses `A` map → view, shells `round(|k| N)`).

# %%
import math
import time

import numpy as np
import torch

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.fourier import apply_filter, lowpass_filter, radial_average, rfft_centered, shell_index
from cryolab.lab import notebook_output_dir
from cryolab.plot import add_resolution_axis
from cryolab.projection import (extract_central_slices_rfft, gridding_correction, prepare_volume_for_projection,
                                project_fourier, project_real)
from cryolab.reconstruct import (backproject_chunk, filtered_backprojection, finalize, ramp_filter_rfft,
                                 reconstruct_halves)
from cryolab.report import plt, save_figure
from cryolab.rotations import relion_euler_to_matrix, rotvec_to_matrix
from cryolab.simulate import (GaussianNoise, ParticleParameters, calibrate_gaussian_sigma, prepare_maps,
                              preferred_orientation_poses, sample_ctf_params, sample_micrograph_positions,
                              simulate_images, tilted_stage_poses, uniform_poses, with_defocus_offset)
from cryolab.validate import directional_fsc, fsc, fsc_resolution_A, fsc_shell_frequencies, fsc_to_truth_from_half

OUT = notebook_output_dir()
torch.set_num_threads(1)  # the back-projection is a serial scatter; threads only add synchronisation
T_START = time.perf_counter()
gen = torch.Generator().manual_seed(11)

PX, N = 1.5, 64  # Å per voxel, box: Nyquist 3 Å, a 96 Å box around ADK (~75 Å across)
volume = atoms_to_potential(builtin_model("adk_open"), N, PX)  # volts
# Projections keep the frequencies inside the sphere |k| <= 1/2 cycle/voxel (every direction
# alike), so no reconstruction can hold the cube's corners: the truth to compare with is the map
# band-limited to that sphere.
truth = apply_filter(volume, lowpass_filter((N,) * 3, (N // 2) / N), ndim=3)
FREQ = fsc_shell_frequencies(N, PX)  # 1/Å of each FSC shell
# Real-space error over the shells 1 .. N/2 - 1: the mean (shell 0) of a reconstruction is poorly
# determined (finalize's docstring) and the Nyquist shell is only half inside the band.
INNER_SHELLS = lowpass_filter((N,) * 3, (N // 2 - 1) / N)
INNER_SHELLS[0, 0, 0] = 0


def rel_error(v):
    """||v - truth|| / ||truth|| over shells 1 .. N/2 - 1."""
    return float(apply_filter(v - truth, INNER_SHELLS, ndim=3).norm() / apply_filter(truth, INNER_SHELLS, ndim=3).norm())


def res(curve, threshold):
    """Interpolated crossing (Å): smoother than RELION's last-shell rule for comparing runs."""
    return float(fsc_resolution_A(curve, N, PX, threshold, method="interpolated"))


def halves(images, rotations, ctf=None, **options):
    """Back-projected grids of the two half sets (alternate particles: gold standard)."""
    return [backproject_chunk(images[h::2], rotations[h::2], None, None if ctf is None else ctf[h::2],
                              pixel_size_A=PX, **options) for h in (0, 1)]


def reconstruct(images, rotations, ctf=None, **options):
    """The half sets' grids and the reconstruction (by default regularised with the half maps' SSNR)."""
    parts = halves(images, rotations, ctf)
    return parts, reconstruct_halves(*parts, pixel_size_A=PX, **options)


NOISE = GaussianNoise(snr=0.05, mask_radius_A=40.0)  # signal variance over the particle's disc


def noisy_particles(euler, ctf, seed):
    """Noisy images in the map's units (V·Å): the simulator scales them to unit noise variance."""
    particles = ParticleParameters(euler, None, ctf)
    sigma, _ = calibrate_gaussian_sigma(prepare_maps(volume), particles, NOISE, N, PX)
    return simulate_images(volume, particles, PX, noise=NOISE, seed=seed)[1] * sigma


def central_sections(v):
    """xy, xz, yz central sections of a map (numpy), for figures."""
    c = N // 2
    return [np.asarray(v[c]), np.asarray(v[:, c]), np.asarray(v[:, :, c])]


# %% [markdown]
# ## 1. The central-slice theorem, numerically
#
# > *[sharpen, 1 Apr] pre-reading: the Fourier slice theorem (Bouman lectures; ASTRA toolbox).*
#
# The transform of a projection is the central slice of the map's transform perpendicular to the
# viewing direction: `F_P(kx, ky) = F_V(Aᵀ(kx, ky, 0))`. For the view along z the discrete
# statement is exact — summing the map over z and taking the 2D DFT gives the `kz = 0` plane of
# the 3D DFT, to rounding. For any other view the slice falls between the grid samples of the 3D
# transform and must be interpolated (cryolab's projector pads the map 2× and interpolates
# trilinearly, as RELION); rotating and summing in real space (`project_real`) interpolates too,
# but in real space. The two routes agree to the extent that both interpolations are accurate.

# %%
v64 = volume.double()
along_z = rfft_centered(v64.sum(0), 2)  # transform of the projection along z
kz0_plane = rfft_centered(v64, 3)[0]    # the kz = 0 plane of the 3D transform (unshifted layout)
exact_gap = float((along_z - kz0_plane).abs().max() / kz0_plane.abs().max())
print(f"view along z: |2D DFT of the projection − kz=0 plane of the 3D DFT| / max = {exact_gap:.1e}")

views = relion_euler_to_matrix(torch.tensor([[30.0, 70.0, -20.0], [-120.0, 35.0, 80.0], [75.0, 110.0, 10.0]]))
real_route = project_real(volume, views)        # rotate the map, sum along z
fourier_route = project_fourier(volume, views)  # interpolate the central slice, inverse 2D FFT
frc = fsc(real_route, fourier_route, ndim=2)    # (3, N/2 + 1) ring correlations
slices = extract_central_slices_rfft(prepare_volume_for_projection(volume), views, (N, N))
print("FRC(real-space projection, central slice) at 20, 6, 4, 3.2 Å:",
      [[round(float(f[round(N * PX / d)]), 4) for d in (20, 6, 4, 3.2)] for f in frc])

fig, ax = plt.subplots(1, 4, figsize=(13, 3.2))
ax[0].imshow(np.asarray(real_route[0]), cmap="gray", origin="lower")
ax[0].set_title("rotate + sum in real space")
ax[1].imshow(np.log1p(np.abs(np.fft.fftshift(np.asarray(rfft_centered(real_route[0], 2)), axes=0))), origin="lower")
ax[1].set_title("log |2D FT| of that projection")
ax[2].imshow(np.log1p(np.abs(np.fft.fftshift(np.asarray(slices[0]), axes=0))), origin="lower")
ax[2].set_title("log |central slice of 3D FT|")
for f in frc:
    ax[3].plot(FREQ, f)
ax[3].set(xlabel="spatial frequency (1/Å)", ylabel="FRC", title="agreement of the two routes", ylim=(0.9, 1.001))
add_resolution_axis(ax[3])
for a in ax[:3]:
    a.axis("off")
save_figure(fig, OUT / "11_central_slice.png")

# %%
assert exact_gap < 1e-10, "along z the discrete projection-slice theorem is exact"
assert float(frc[:, 1:round(N * PX / 4)].min()) > 0.99, "the routes agree to 4 Å for any view"
assert float(frc[:, -1].max()) < float(frc[:, round(N * PX / 6)].min()), \
    "they part near Nyquist, where trilinear interpolation in real space blurs"

# %% [markdown]
# > *[blur, 25 Mar] "How could we visualize a single particle slice in a 3D map either in real
# > space or reciprocal space? How would this type of visualization help you?"*
#
# Back-project a single image. In Fourier space it fills one plane through the origin,
# perpendicular to the viewing direction (for this view exactly the grid plane `kz = 0`, and on it
# every second voxel: the image has N samples across, the 2× padded grid 2N; a tilted plane
# touches the voxels within one step of it, the trilinear kernel); in real space
# the same information is the image smeared evenly along the viewing direction — a map that is
# constant along z for the view along z. Many such planes through the origin, at many angles, fill
# the 3D transform; where they crowd (the origin) and where they leave gaps (high frequency, few
# views, missing directions) is what the rest of this notebook is about. The picture to keep in
# mind when a map looks streaky: streaks run along the viewing directions that dominate.

# %%
one_image = project_fourier(volume, torch.eye(3)[None])  # (1, N, N)
single = backproject_chunk(one_image, torch.eye(3)[None])
single_map = finalize(single, mask_corners=False)
_, single_weight = single.folded()
pad = single.pad_size
kz_index = torch.arange(pad) - pad // 2
touched_kz = kz_index[(single_weight > 0).any(dim=(1, 2))]
c = N // 2
inside = (slice(c - 20, c + 20),) * 2
z_profile_corr = float(torch.corrcoef(torch.stack([single_map[c - 15][inside].flatten(), single_map[c + 15][inside].flatten()]))[0, 1])
print(f"weight grid of one view along z: non-zero only for kz (padded voxels) in {touched_kz.tolist()}")
print(f"correlation of the back-projected map's sections z = −15 and z = +15 voxels: {z_profile_corr:.4f}")

fig, ax = plt.subplots(1, 3, figsize=(10, 3.3))
ax[0].imshow(np.asarray(one_image[0]), cmap="gray", origin="lower")
ax[0].set_title("one projection (view along z)")
ax[1].imshow(np.asarray(single_map[:, c]), cmap="gray", origin="lower")
ax[1].set_title("its back-projection, xz section")
ax[2].imshow(np.asarray(single_weight[:, pad // 2] > 0), cmap="gray", origin="lower")
ax[2].set_title("weight > 0, kx–kz plane")
for a in ax:
    a.axis("off")
save_figure(fig, OUT / "11_single_particle.png")

# %%
assert touched_kz.tolist() == [0], "one view along z fills exactly the plane kz = 0"
assert z_profile_corr > 0.98, "in real space the single view is smeared along its viewing direction"

# %% [markdown]
# ## 2. Why weights, and why a gridding correction
#
# > *[sharpen, 1 Apr] learning objective: "understand implementation details of 2D → 3D Fourier
# > inversion".*
#
# **Weights.** Every central slice passes through the origin, so low frequencies are sampled by
# every image and high frequencies by few: for `n` evenly spread views the sample density at
# radius `r` falls as `1/r`. Summing the slices (plain back-projection) therefore weights the map's
# transform by `1/|k|` — a blurred map. Direct Fourier inversion accumulates, next to the data
# `Σ CTF·F[image]`, a *weight* grid `Σ CTF²` spread with the same kernel, and divides. Filtered
# (weighted) back-projection, the method of X-ray CT, instead multiplies each image by the
# analytic inverse density, a ramp `∝ |k|`, which is right only for evenly spread views.
#
# **Gridding correction.** Spreading each sample onto the 8 neighbouring voxels is a convolution of
# the 3D transform with the trilinear kernel; in real space that multiplies the map by the kernel's
# transform, `sinc²(x/P)` per axis for a padded box of `P` voxels. Dividing by it afterwards
# (`cryolab.projection.gridding_correction`) undoes the fall-off towards the box edge.
#
# We reconstruct noise-free projections from 1 500 uniform views four ways. (cryolab has no
# unweighted back-projection as such; it is `filtered_backprojection` of images whose ramp was
# divided out first.)

# %%
uniform_rot = relion_euler_to_matrix(uniform_poses(1500, generator=gen))
clean = project_fourier(volume, uniform_rot)
partial = backproject_chunk(clean, uniform_rot)
direct = finalize(partial)
ramp = ramp_filter_rfft(N, len(uniform_rot), pad_size=partial.pad_size)
plain_bp = filtered_backprojection(apply_filter(clean, 1 / ramp, ndim=2), uniform_rot)
plain_bp = plain_bp * float((plain_bp * truth).sum() / (plain_bp * plain_bp).sum())  # best scale, to compare shapes
fbp = filtered_backprojection(clean, uniform_rot)
no_correction = direct * gridding_correction((N,) * 3, partial.pad_size).float()

_, weight = partial.folded()
density = radial_average(weight, (partial.pad_size,) * 3, rfft=True, fftshift=True)[: partial.pad_size // 2]
r_pad = torch.arange(len(density), dtype=torch.float64)
density_slope = float(np.polyfit(np.log(r_pad[8:56].numpy()), np.log(density[8:56].double().numpy()), 1)[0])
errors = {"plain back-projection": rel_error(plain_bp), "filtered back-projection (ramp)": rel_error(fbp),
          "direct inversion, no gridding correction": rel_error(no_correction), "direct inversion": rel_error(direct)}
for name, e in errors.items():
    print(f"{name:42s} relative error {e:.3f}")
print(f"sample density against radius: slope of log-log {density_slope:.2f} (−1 for 1/r)")


def density_ratio(v):
    """Σ v·truth / Σ truth² over real-space shells of radius r voxels: the density kept at r."""
    return radial_average(v * truth, (N,) * 3, rfft=False, fftshift=True) / radial_average(truth * truth, (N,) * 3, rfft=False, fftshift=True)


# The envelope is strongest without padding (P = N): rebuild with pad_factor=1 to see it.
partial_p1 = backproject_chunk(clean, uniform_rot, pad_factor=1)
direct_p1 = finalize(partial_p1)
no_correction_p1 = direct_p1 * gridding_correction((N,) * 3, partial_p1.pad_size).float()
ratios = {"P = 2N, corrected": density_ratio(direct), "P = 2N, not corrected": density_ratio(no_correction),
          "P = N, corrected": density_ratio(direct_p1), "P = N, not corrected": density_ratio(no_correction_p1)}
R_IN, R_OUT = 5, 24  # voxels from the centre: the core and the rim of ADK
print("density kept at r = 5 and r = 24 voxels:", {k: (round(float(v[R_IN]), 3), round(float(v[R_OUT]), 3)) for k, v in ratios.items()})

fig, ax = plt.subplot_mosaic([["density", "density", "kept", "kept"], ["truth", "plain", "fbp", "direct"]], figsize=(13, 7), layout="constrained")
ax["density"].loglog(r_pad[1:], density[1:], label="mean weight per shell (zig-zag: see section 1)")
ax["density"].loglog(r_pad[4:], float(density[16] * 16) / r_pad[4:], "--", label="∝ 1/r")
ax["density"].set(xlabel="radius (padded Fourier voxels)", ylabel="weight (samples)", title="sample density of 1 500 views")
ax["density"].legend(fontsize=8)
for k, v in ratios.items():
    ax["kept"].plot(v[:26], label=k)
ax["kept"].set(xlabel="radius (voxels; ADK reaches ~25)", ylabel="Σ v·t / Σ t²", title="density kept against radius")
ax["kept"].legend(fontsize=8)
for key, (title, m) in {"truth": ("truth (band-limited)", truth), "plain": ("plain back-projection", plain_bp),
                        "fbp": ("filtered back-projection", fbp), "direct": ("direct Fourier inversion", direct)}.items():
    ax[key].imshow(central_sections(m)[1], cmap="gray", origin="lower")
    ax[key].set_title(f"xz: {title}", fontsize=9)
    ax[key].axis("off")
save_figure(fig, OUT / "11_weights_gridding.png")

# %%
assert -1.15 < density_slope < -0.85, "central slices crowd the origin: density ∝ 1/r"
assert errors["plain back-projection"] > 5 * errors["direct inversion"], "without weights the map is blurred"
assert errors["filtered back-projection (ramp)"] > errors["direct inversion"], "the analytic ramp is only an average density"
assert errors["direct inversion, no gridding correction"] > errors["direct inversion"]
assert float(ratios["P = N, not corrected"][R_OUT]) < 0.8 < float(ratios["P = N, corrected"][R_OUT]), \
    "without the correction the rim of the map fades (sinc² envelope)"
assert abs(float(ratios["P = 2N, corrected"][R_OUT]) - float(ratios["P = 2N, corrected"][R_IN])) < 0.08

# %% [markdown]
# ## 3. Nearest-neighbour against trilinear insertion, and padding
#
# > *[blur, 25 Mar] learning objective: "understand the basics of two key technical aspects of
# > Fourier inversion: Fourier interpolation and back projection".*
#
# Nearest-neighbour insertion puts each Fourier sample on one voxel; trilinear spreads it over
# eight with weights. Padding (`pad_factor`) samples the 3D transform more finely: the gridding
# envelope flattens (`sinc²(x/P)` with a larger `P`), and the aliased copies of the map, `P` voxels
# apart, move away — but each voxel of a finer grid is hit by fewer samples, and for nearest
# neighbour some are hit by none.

# %%
insertion = {}
for method in ("nearest", "linear"):
    for pad_factor in (1, 2, 3):
        p = partial if (method, pad_factor) == ("linear", 2) else backproject_chunk(clean, uniform_rot, pad_factor=pad_factor, interpolation=method)
        _, w = p.folded()
        in_band = shell_index((p.pad_size,) * 3, rfft=True, fftshift=True) <= p.pad_size // 2
        insertion[method, pad_factor] = (rel_error(finalize(p)), float((w[in_band] == 0).float().mean()))
        print(f"{method:8s} pad {pad_factor}: relative error {insertion[method, pad_factor][0]:.3f}, "
              f"empty voxels in the band {100 * insertion[method, pad_factor][1]:.1f} %")

# %%
assert insertion["linear", 2][0] < insertion["nearest", 2][0], "trilinear insertion is more accurate"
assert insertion["linear", 2][0] < insertion["linear", 1][0], "padding helps: no aliasing, flatter envelope"
assert insertion["linear", 3][0] < insertion["linear", 2][0] * 1.2, "beyond 2× padding little is gained"
assert insertion["nearest", 3][1] > 10 * insertion["linear", 3][1] and insertion["nearest", 3][0] > insertion["nearest", 2][0], \
    "a fine grid filled by nearest neighbour has holes"
assert insertion["linear", 2][0] < 0.06

# %% [markdown]
# ## 4. Few particles
#
# > *[sharpen, 1 Apr] "Are there any artefacts in the reconstruction? What happens where there are
# > less particles, errors in the alignments?"*
#
# **Noise-free, few views: gaps.** Each view fills a plane ~2 padded voxels thick; at radius `r`
# (padded voxels) `n` random planes cover a fraction `1 − exp(−n·w/(2r))` of the shell with
# `w ≈ 2`, so the outer shells stay patchy long after the inner ones are full. Empty voxels become
# zero after the division, and the map rings.
#
# **With noise: SNR.** Real data have enough views long before they have enough signal: the
# resolution is then set by the SNR per shell, which grows with the number of particles. Rosenthal
# and Henderson (2003): `ln N = (B/2)·(1/d²) + const` — plotting `1/d²` against `ln N` gives a
# straight line whose slope is `2/B`, the overall B-factor of the data (notebook 12).

# %%
coverage = {}
for n_views in (10, 30, 100, 300):
    p = backproject_chunk(clean[:n_views], uniform_rot[:n_views])
    _, w = p.folded()
    shells = shell_index((p.pad_size,) * 3, rfft=True, fftshift=True)
    band = shells <= p.pad_size // 2
    empty = torch.zeros(p.pad_size // 2 + 1).index_add_(0, shells[band], (w[band] == 0).float())
    coverage[n_views] = empty / torch.bincount(shells[band], minlength=p.pad_size // 2 + 1)
    estimate = math.exp(-n_views * 2 / (2 * 48))
    print(f"{n_views:4d} views: empty fraction at radius 48 padded voxels (4 Å) {float(coverage[n_views][48]):.3f} "
          f"(estimate {estimate:.3f}); relative error {rel_error(finalize(p)):.3f}")

uniform_euler = uniform_poses(4000, generator=gen)
uniform_ctf = sample_ctf_params(4000, defocus_min_A=8000.0, defocus_max_A=20000.0, generator=gen)
noisy = noisy_particles(uniform_euler, uniform_ctf, seed=1)
noisy_rot = relion_euler_to_matrix(uniform_euler)
by_count, parts_by_count = {}, {}
for n_particles in (250, 500, 1000, 2000, 4000):
    parts_by_count[n_particles], by_count[n_particles] = reconstruct(noisy[:n_particles], noisy_rot[:n_particles], uniform_ctf[:n_particles])
    rec = by_count[n_particles]
    print(f"{n_particles:5d} particles: gold-standard {res(rec.fsc, 0.143):5.2f} Å, against the truth {res(fsc(rec.volume, truth), 0.5):5.2f} Å")
counts_n = np.array(list(by_count))
inv_d2 = np.array([1 / res(r.fsc, 0.143) ** 2 for r in by_count.values()])
rh_slope, rh_intercept = np.polyfit(np.log(counts_n), inv_d2, 1)
b_overall = 2 / rh_slope
print(f"Rosenthal–Henderson plot: 1/d² = {rh_slope:.4f}·ln N {rh_intercept:+.4f} → B = 2/slope = {b_overall:.0f} Å²")

fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
for n_views, e in coverage.items():
    ax[0].plot(torch.arange(len(e)) / 2, e, label=f"{n_views} views")
ax[0].set(xlabel="shell (map voxels)", ylabel="fraction of empty voxels", title="noise-free: Fourier coverage")
ax[0].legend()
for n_particles, rec in by_count.items():
    ax[1].plot(FREQ, rec.fsc, label=f"{n_particles}")
ax[1].axhline(0.143, color="k", lw=0.5)
ax[1].set(xlabel="spatial frequency (1/Å)", ylabel="half-map FSC", title="noisy: more particles, higher resolution")
ax[1].legend(title="particles", fontsize=8)
add_resolution_axis(ax[1])
ax[2].plot(np.log(counts_n), inv_d2, "o")
ax[2].plot(np.log(counts_n), rh_slope * np.log(counts_n) + rh_intercept, "--", label=f"B = {b_overall:.0f} Å²")
ax[2].set(xlabel="ln (number of particles)", ylabel="1/d² (1/Å²)", title="Rosenthal–Henderson plot")
ax[2].legend()
save_figure(fig, OUT / "11_few_particles.png")

# %%
assert float(coverage[10][48]) > 0.5 > float(coverage[300][48]), "few views leave the outer shells patchy"
assert all(float(coverage[n][8]) < float(coverage[n][48]) for n in coverage), "inner shells fill first"
assert abs(float(coverage[100][48]) - math.exp(-100 / 48)) < 0.1, "the random-plane estimate holds"
resolutions = [res(r.fsc, 0.143) for r in by_count.values()]
assert all(a > b for a, b in zip(resolutions, resolutions[1:])), "resolution improves with every doubling"
assert resolutions[0] > 8.0 and resolutions[-1] < 6.0
assert 50 < b_overall < 600, "a plausible overall B-factor"

# %% [markdown]
# ## 5. Wiener regularisation and the SSNR
#
# Dividing by the weight alone amplifies noise wherever the weight is small: at high frequency,
# near CTF zeros, in sparsely sampled directions. `finalize` divides by `weight + τ⁻²` instead,
# with `τ⁻² = W̄(s)/SSNR(s)` per shell: a Wiener filter, the MAP estimate of Scheres (2012). The
# SSNR comes from a constant guess (`wiener_constant = 1/SSNR`) or, as RELION does during
# refinement, from the half maps themselves: `SSNR = FSC/(1 − FSC)`. A constant too small leaves
# the noise of every poorly sampled voxel; too large, it damps the signal too. The same 2 000
# particles, regularised with five constants and with the half maps' SSNR, judged against the
# truth (real-space error over shells 1 to N/2 − 1; the FSC with the truth barely moves, since it
# ignores a scale per shell):

# %%
parts_2000 = parts_by_count[2000]
constants = (1e-6, 1e-3, 1e-1, 1.0, 10.0)
by_constant = {c: reconstruct_halves(*parts_2000, pixel_size_A=PX, regularisation="wiener", wiener_constant=c) for c in constants}
constant_error = {c: rel_error(r.volume) for c, r in by_constant.items()}
ssnr_error = rel_error(by_count[2000].volume)
for c, e in constant_error.items():
    print(f"1/SSNR = {c:6g} for every shell: relative error {e:.3f}, FSC to truth 0.5 at {res(fsc(by_constant[c].volume, truth), 0.5):.2f} Å")
print(f"SSNR from the half maps:        relative error {ssnr_error:.3f}, FSC to truth 0.5 at {res(fsc(by_count[2000].volume, truth), 0.5):.2f} Å")
ssnr = by_count[2000].ssnr

fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
ax[0].semilogx(constants, list(constant_error.values()), "o-", label="constant 1/SSNR")
ax[0].axhline(ssnr_error, color="C1", label="SSNR from the half maps")
ax[0].set(xlabel="1/SSNR (wiener_constant)", ylabel="relative error vs truth", title="2 000 particles")
ax[0].legend(fontsize=8)
ax[1].semilogy(FREQ, ssnr)
ax[1].set(xlabel="spatial frequency (1/Å)", ylabel="SSNR of the full map", title="SSNR = F′/(1 − F′), F′ = √(2F/(1+F))")
add_resolution_axis(ax[1])
ax[2].imshow(np.concatenate([central_sections(m)[0] for m in (truth, by_constant[1e-3].volume, by_count[2000].volume)], axis=1),
             cmap="gray", origin="lower")
ax[2].set_title("xy: truth | 1/SSNR = 1e-3 | SSNR from halves", fontsize=9)
ax[2].axis("off")
save_figure(fig, OUT / "11_wiener.png")

# %%
assert ssnr_error < 0.8 * min(constant_error.values()), "a per-shell SSNR from the data beats any constant"
assert constant_error[1.0] < constant_error[1e-3] and constant_error[10.0] > constant_error[1.0], \
    "too little regularisation keeps the noise, too much damps the signal"
assert abs(constant_error[1e-6] - constant_error[1e-3]) < 0.02, "the default constant only guards empty voxels"
assert float(ssnr[2]) > 10 * float(ssnr[-2]), "the SSNR falls steeply with frequency"

# %% [markdown]
# ## 6. Pose errors
#
# Each particle's orientation is perturbed by a random rotation of RMS angle σ before
# back-projection (the images stay as they are): the same 2 000 particles, reconstructed with
# wrong poses. A point at distance `r` from the centre is misplaced by about `r·σ`, so the rim of
# the particle blurs first, and the blur acts like an extra B-factor — both half maps lose the same
# high-resolution signal, so the gold-standard FSC reports it honestly.
#
# From here on every run is summarised by `measure`: the gold-standard resolution (0.143), the
# full map's resolution against the truth (0.5), the directional FSC of the half maps and the full
# map's resolution against the truth along a few directions.

# %%
# Directions to read the full map against the truth: the beam (z), 55° from it (inside the missing
# cone of the top views of section 7, outside that of the 40° tilt of section 8) and across it (x).
PROBES = {"z": [0.0, 0.0, 1.0], "55° from z": [math.sin(math.radians(55)), 0.0, math.cos(math.radians(55))], "x": [1.0, 0.0, 0.0]}
RESULTS = {}


def measure(name, parts, rec):
    """Resolutions of a run: gold standard, against the truth, directional (section 7 explains the
    plain half maps used for the directional FSC)."""
    plain = [finalize(p) for p in parts]
    along = directional_fsc(rec.volume, truth, PX, directions=torch.tensor(list(PROBES.values())), threshold=0.5).resolution_A
    result = {"claimed": res(rec.fsc, 0.143), "true": res(fsc(rec.volume, truth), 0.5),
              "directional": directional_fsc(*plain, PX), "along": dict(zip(PROBES, along.tolist()))}
    RESULTS[name] = result
    d = result["directional"]
    print(f"{name:24s} gold-standard {result['claimed']:5.2f} Å, truth {result['true']:5.2f} Å; directional "
          f"{float(d.resolution_A.min()):.1f}–{float(d.resolution_A.max()):.1f} Å, sphericity {d.sphericity:.2f}; vs truth "
          + ", ".join(f"{k} {v:.1f} Å" for k, v in result["along"].items()))
    return result


measure("2 000 particles", parts_2000, by_count[2000])
pose_runs = {0.0: by_count[2000]}
for sigma_deg in (3.0, 6.0, 12.0):
    perturb = rotvec_to_matrix(torch.randn(2000, 3, generator=gen) * math.radians(sigma_deg) / math.sqrt(3))
    parts, pose_runs[sigma_deg] = reconstruct(noisy[:2000], perturb @ noisy_rot[:2000], uniform_ctf[:2000])
    if sigma_deg == 12.0:
        measure("pose error 12°", parts, pose_runs[sigma_deg])
for s, rec in pose_runs.items():
    print(f"pose error {s:4.1f}° RMS: gold-standard {res(rec.fsc, 0.143):5.2f} Å, against the truth {res(fsc(rec.volume, truth), 0.5):5.2f} Å")

fig, ax = plt.subplots(figsize=(5, 3.6))
for s, rec in pose_runs.items():
    ax.plot(FREQ, rec.fsc, label=f"σ = {s:g}°")
ax.axhline(0.143, color="k", lw=0.5)
ax.set(xlabel="spatial frequency (1/Å)", ylabel="half-map FSC", title="2 000 particles with pose errors")
ax.legend()
add_resolution_axis(ax)
save_figure(fig, OUT / "11_pose_errors.png")

# %%
pose_res = [res(r.fsc, 0.143) for r in pose_runs.values()]
assert pose_res[1] < pose_res[2] < pose_res[3], "larger pose errors, lower resolution"
assert pose_res[3] > pose_res[0] + 1.0
truth_res = [res(fsc(r.volume, truth), 0.5) for r in pose_runs.values()]
assert all(abs(a - b) < 0.25 * b for a, b in zip(pose_res, truth_res)), "independent halves report pose errors honestly"
assert RESULTS["pose error 12°"]["directional"].sphericity > 0.75, "pose errors blur every direction alike"

# %% [markdown]
# ## 7. Preferred orientation, the missing cone and the directional FSC
#
# Particles that lie on the grid one way up give nearly the same view: here all 2 000 look down
# z, spread by 10°, with random in-plane rotations. Their central slices all lie near the `kx–ky`
# plane, and a **cone** of directions around `kz` is never sampled. The global FSC is a shell
# average and hides this; the **directional (conical) FSC** (Tan et al. 2017) sums only within
# cones around many directions and gives a resolution per direction, and the **sphericity** of the
# surface they trace (1 for an isotropic map) summarises the anisotropy.
#
# A trap: compute the directional FSC on half maps divided by the weights with a *small constant*
# regulariser (`finalize(partial)`), not on the SSNR-regularised half maps. In the missing cone the
# SSNR term suppresses the few noisy samples, and what remains there is signal spread in from the
# sampled directions by the real-space crop and mask (convolutions in Fourier space) — the same in
# both halves, so the cone's FSC looks excellent. `measure` therefore uses the plain half maps; the
# cell below shows both.

# %%
preferred_euler = preferred_orientation_poses(2000, [[0.0, 0.0]], spread_deg=10.0, generator=gen)
preferred_ctf = sample_ctf_params(2000, defocus_min_A=8000.0, defocus_max_A=20000.0, generator=gen)
preferred_images = noisy_particles(preferred_euler, preferred_ctf, seed=2)
preferred_parts, preferred = reconstruct(preferred_images, relion_euler_to_matrix(preferred_euler), preferred_ctf)
measure("preferred orientation", preferred_parts, preferred)
cone_axes = torch.tensor([PROBES["z"], PROBES["x"]])
along_regularised = directional_fsc(preferred.half1, preferred.half2, PX, directions=cone_axes).resolution_A
along_plain = directional_fsc(*[finalize(p) for p in preferred_parts], PX, directions=cone_axes).resolution_A
print(f"half-map directional FSC along z, x: SSNR-regularised half maps {[round(float(r), 1) for r in along_regularised]} Å, "
      f"plain half maps {[round(float(r), 1) for r in along_plain]} Å")

# %%
d_uni, d_pref = RESULTS["2 000 particles"]["directional"], RESULTS["preferred orientation"]["directional"]
pref_along, uni_along = RESULTS["preferred orientation"]["along"], RESULTS["2 000 particles"]["along"]
assert d_pref.sphericity < 0.7 < d_uni.sphericity, "preferred orientation: an anisotropic map"
assert pref_along["z"] > 2 * pref_along["x"], "against the truth, along the beam (z) the map is far worse than across it"
assert uni_along["z"] < 1.3 * uni_along["x"]
assert float(along_plain[0]) > 2 * float(along_plain[1]), "the plain half maps' directional FSC finds the cone"
assert float(along_regularised[0]) < 0.5 * pref_along["z"], "the SSNR-regularised half maps hide it"
assert RESULTS["preferred orientation"]["true"] > 1.5 * RESULTS["preferred orientation"]["claimed"], \
    "the global half-map FSC overstates the resolution of an anisotropic map"

# %% [markdown]
# ## 8. Tilting the stage, and the missing wedge
#
# > *[blur/sharpen, 13 May] guest lecture by Yong Zi Tan, "Becoming a power user: Tilting".*
#
# Tilting the stage by α turns every view by α about the tilt axis (`tilted_stage_poses`:
# `A = R_u(α)·A_ice`). Because the particles' in-plane angles are random, their viewing directions
# spread over a cone of half-angle α around the beam, and the slices now reach into the missing
# cone, which shrinks to a half-angle of about 90° − α − spread. The price: particles across the
# tilted grid sit at different heights, so defocus varies over the micrograph by
# `(r·w)·tan α` (`w` perpendicular to the tilt axis), which the CTF must follow (here added to
# each particle's defocus).
#
# An electron-tomography tilt series is the other classic geometry: one object, tilted about a
# single axis from −60° to +60°. Its slices all contain the tilt axis, so a **wedge** (not a cone)
# of the transform is missing. Below, the Fourier coverage of the four geometries — the voxels any
# slice reaches, within 20° of three directions, and in the `kx–kz` plane — and their maps.
# (Reached is not well sampled: a few stray views in the tail of the preferred distribution reach
# voxels they add little signal to.)

# %%
positions = sample_micrograph_positions(2000, micrograph_size_A=4000.0, generator=gen)
tilted_euler, defocus_offset = tilted_stage_poses(preferred_euler, positions, stage_tilt_deg=40.0)
tilted_ctf = with_defocus_offset(preferred_ctf, defocus_offset)
tilted_images = noisy_particles(tilted_euler, tilted_ctf, seed=3)
tilted_parts, tilted = reconstruct(tilted_images, relion_euler_to_matrix(tilted_euler), tilted_ctf)
measure("tilted 40°", tilted_parts, tilted)
print(f"defocus offsets on the tilted micrographs: up to {float(defocus_offset.abs().max()):.0f} Å")

# tilt series: rot = 0, psi = 0, tilt −60° … +60°: views turn about the y axis
series_euler = torch.stack([torch.zeros(121), torch.linspace(-60.0, 60.0, 121), torch.zeros(121)], dim=-1)
series_rot = relion_euler_to_matrix(series_euler)
series = finalize(backproject_chunk(project_fourier(volume, series_rot), series_rot))
series_res = directional_fsc(series, truth, PX, directions=torch.tensor([PROBES["z"], PROBES["x"], [0.0, 1.0, 0.0]]),
                             threshold=0.5).resolution_A
print(f"tilt series ±60° (noise-free) against the truth along z, x, y (the tilt axis): {[round(float(r), 1) for r in series_res]} Å")


def coverage_by_direction(rotations, half_angle_deg=20.0):
    """Fraction of the in-band voxels of the map's Fourier grid within a cone around each of PROBES
    that any slice reaches, and the kx–kz section of that coverage."""
    _, w = backproject_chunk(torch.zeros(len(rotations), N, N), rotations).folded()
    # every second padded voxel: the map's own Fourier grid (along an axis all slices share, the
    # images' samples fall on every second padded voxel and the voxels between are never reached)
    w = w[::2, ::2, ::2]
    p = w.shape[0]
    kz, ky, kx = torch.meshgrid(torch.arange(p) - p // 2, torch.arange(p) - p // 2, torch.arange(p // 2 + 1), indexing="ij")
    k = torch.stack([kx, ky, kz], dim=-1).float()
    radius = k.norm(dim=-1)
    fractions = {}
    for name, axis in PROBES.items():
        in_cone = ((k @ torch.tensor(axis)).abs() >= math.cos(math.radians(half_angle_deg)) * radius) & (radius > 4) & (radius <= p // 2)
        fractions[name] = float((w[in_cone] > 0).float().mean())
    return fractions, np.asarray(w[:, p // 2] > 0)


geometries = {"uniform": noisy_rot[:2000], "preferred": relion_euler_to_matrix(preferred_euler),
              "tilted 40°": relion_euler_to_matrix(tilted_euler), "tilt series ±60°": series_rot}
cover, cover_sections = {}, {}
for name, r in geometries.items():
    cover[name], cover_sections[name] = coverage_by_direction(r)
    print(f"{name:18s} Fourier voxels reached within 20° of " + ", ".join(f"{k}: {100 * v:5.1f} %" for k, v in cover[name].items()))

fig, ax = plt.subplots(2, 4, figsize=(13, 6.4))
for a, (name, section) in zip(ax[0], cover_sections.items()):
    a.imshow(section, cmap="gray", origin="lower", aspect="equal")
    a.set_title(f"{name}: weight > 0\n(kx → from 0, kz ↑)", fontsize=9)
for a, (name, v) in zip(ax[1], (("truth", truth), ("preferred", preferred.volume), ("tilted 40°", tilted.volume),
                                 ("tilt series ±60° (no noise)", series))):
    a.imshow(central_sections(v)[1], cmap="gray", origin="lower")
    a.set_title(f"xz section: {name}", fontsize=9)
for a in ax.flat:
    a.set_xticks([])
    a.set_yticks([])
save_figure(fig, OUT / "11_missing_cone_wedge.png")

fig, ax = plt.subplots(figsize=(6, 4))
for name in ("2 000 particles", "preferred orientation", "tilted 40°"):
    d = RESULTS[name]["directional"]
    ax.plot(torch.rad2deg(torch.acos(d.directions[:, 2].abs())), d.resolution_A, ".", label=f"{name} (sphericity {d.sphericity:.2f})")
ax.set(xlabel="angle of the direction from the beam, z (°)", ylabel="directional resolution (Å)",
       title="directional FSC of the half maps (0.143)")
ax.legend(fontsize=8)
save_figure(fig, OUT / "11_directional_fsc.png")

# %%
d_tilt, tilt_along = RESULTS["tilted 40°"]["directional"], RESULTS["tilted 40°"]["along"]
assert d_tilt.sphericity > d_pref.sphericity + 0.1, "tilting restores isotropy"
assert tilt_along["55° from z"] < 0.6 * pref_along["55° from z"], "the cone shrinks: 55° from the beam recovers"
assert tilt_along["z"] > 1.5 * tilt_along["x"], "but a 40° tilt leaves the beam direction itself in the cone"
assert cover["preferred"]["z"] < 0.2 and cover["preferred"]["55° from z"] < 0.8 and cover["preferred"]["x"] > 0.95, \
    "preferred views: a wide missing cone around kz"
assert cover["tilted 40°"]["55° from z"] > 0.95 and cover["tilted 40°"]["z"] < 0.5, "tilting narrows the cone"
assert min(cover["uniform"].values()) > 0.95
assert cover["tilt series ±60°"]["z"] < 0.1 and cover["tilt series ±60°"]["x"] > 0.9, "a tilt series misses a wedge around kz"
assert float(series_res[0]) > 1.5 * float(series_res[2]), "the tilt-series map is elongated along z"

# %% [markdown]
# ## 9. Half maps, the gold-standard FSC, and the FSC against the truth
#
# Two half maps from disjoint halves of the particles share the signal but not the noise, so
# their FSC measures the signal-to-noise ratio per shell, `FSC = SNR/(1 + SNR)`; the full map has
# twice the SNR, and its correlation with the (unknown) truth follows as `√(2F/(1 + F))`
# (Rosenthal & Henderson 2003; `fsc_to_truth_from_half`). The 0.143 threshold on the half maps is
# the 0.5 threshold against the truth. Here we *know* the truth and can check it — and check what
# happens when the halves are **not** independent (a particle in both halves, as when half sets
# are mixed during refinement): shared noise correlates, and the FSC claims more than is there —
# in shells without signal it settles at the fraction of the noise the halves share.

# %%
gold = by_count[4000]
predicted = fsc_to_truth_from_half(gold.fsc)
measured = fsc(gold.volume, truth)
band = slice(1, N // 2)
prediction_gap = float((predicted[band] - measured[band]).abs().mean())
print(f"4 000 particles: half maps {res(gold.fsc, 0.143):.2f} Å at 0.143; full map vs truth {res(measured, 0.5):.2f} Å at 0.5; "
      f"mean |predicted − measured| FSC to truth {prediction_gap:.3f}")
measure("4 000 particles", parts_by_count[4000], gold)

# halves of 1 000 particles each that share 500: rows 0–999 and 500–1 499
shared_parts = [backproject_chunk(noisy[a:a + 1000], noisy_rot[a:a + 1000], None, uniform_ctf[a:a + 1000], pixel_size_A=PX)
                for a in (0, 500)]
shared = reconstruct_halves(*shared_parts, pixel_size_A=PX)
measure("shared particles", shared_parts, shared)
independent = by_count[2000]  # also halves of 1 000

fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
ax[0].plot(FREQ, gold.fsc, label="half maps (gold standard)")
ax[0].plot(FREQ, predicted, label="√(2F/(1+F)): predicted vs truth")
ax[0].plot(FREQ, measured, "--", label="full map vs truth (measured)")
ax[0].axhline(0.143, color="k", lw=0.5)
ax[0].axhline(0.5, color="k", lw=0.5, ls=":")
ax[0].set(xlabel="spatial frequency (1/Å)", ylabel="FSC", title="4 000 particles")
ax[0].legend(fontsize=8)
add_resolution_axis(ax[0])
ax[1].plot(FREQ, independent.fsc, label="independent halves")
ax[1].plot(FREQ, shared.fsc, label="halves sharing half their particles")
ax[1].axhline(0.143, color="k", lw=0.5)
ax[1].set(xlabel="spatial frequency (1/Å)", ylabel="half-map FSC", title="independence matters (2 × 1 000 particles)")
ax[1].legend(fontsize=8)
add_resolution_axis(ax[1])
save_figure(fig, OUT / "11_gold_standard.png")

# %%
assert prediction_gap < 0.08, "√(2F/(1+F)) of the half-map FSC predicts the full map's FSC with the truth"
assert abs(res(gold.fsc, 0.143) - res(measured, 0.5)) < 0.15 * res(measured, 0.5), "0.143 on half maps ≈ 0.5 against the truth"
assert float(shared.fsc[-2]) > 0.2 > float(independent.fsc[-2]), "shared particles correlate at every shell"
assert 0.35 < float(shared.fsc[-8:].mean()) < 0.65, "beyond the signal, the FSC is the shared fraction, 1/2"
assert RESULTS["shared particles"]["claimed"] < RESULTS["shared particles"]["true"] - 1.0, "and the claimed resolution is inflated"

# %% [markdown]
# ## 10. Tracking down an artefact with a synthetic example
#
# > *[sharpen, 1 Apr] "Let's say you are trying to do a reconstruction, and you see some artefacts
# > that are difficult to interpret, but that might be caused by angular estimates, preferred
# > orientations, contrast/SNR is not good enough or a combination of all of those causal factors.
# > How could you play around with a synthetic example to track down what is causing artefacts in
# > your reconstruction?"*
#
# Simulate each cause alone, from a map like yours, with your particle count, box and SNR, and
# note its *signature* in measurements you can also make on real data; then compare the signature
# of your reconstruction. The runs above give this table:
#
# | cause | global half-map FSC | directional FSC (plain half maps) | half maps vs truth |
# |---|---|---|---|
# | few particles / low SNR | lower, smooth fall | isotropic | agree |
# | pose errors | lower (acts like a B-factor) | isotropic | agree |
# | preferred orientation | can look *fine* | anisotropic: low sphericity, worst along the beam | half maps overstate |
# | tilted collection | slightly lower | nearly isotropic again | agree |
# | halves not independent | too good, never falls to 0 | uniformly "perfect" | half maps overstate |
#
# On real data there is no truth, but the two middle columns are measurable: a global FSC that
# looks good with a directional FSC that is poor along some directions means orientations; an FSC
# that stays high at Nyquist means the halves share something (noise, a mask, a reference);
# resolution that stops improving as particles are added means alignment, not SNR.

# %%
print(f"{'run':24s} {'half maps (Å)':>14s} {'vs truth (Å)':>13s} {'claimed/true':>13s} {'sphericity':>11s}")
for name, r in RESULTS.items():
    print(f"{name:24s} {r['claimed']:14.2f} {r['true']:13.2f} {r['claimed'] / r['true']:13.2f} {r['directional'].sphericity:11.2f}")

# %%
ratio = {name: r["claimed"] / r["true"] for name, r in RESULTS.items()}
honest = ("2 000 particles", "4 000 particles", "pose error 12°", "tilted 40°")
assert all(0.8 < ratio[k] < 1.2 for k in honest), "independent halves, isotropic sampling: the FSC tells the truth"
assert ratio["preferred orientation"] < 0.7 and ratio["shared particles"] < 0.8, "these two overstate"
assert min(RESULTS, key=lambda k: RESULTS[k]["directional"].sphericity) == "preferred orientation", \
    "only preferred orientation shows as anisotropy"
assert all(RESULTS[k]["directional"].sphericity > 0.72 for k in honest)

# %% [markdown]
# ## Discussion questions of the blur session
#
# > *[blur, 25 Mar] "How does understanding Fourier interpolation and back projection help use data
# > processing software, refine high quality maps, and solve structures?"*
#
# It turns menu options into predictions. Padding and the interpolation kernel (section 3) set the
# accuracy floor and memory; the weight grid (section 2) is why a particle's CTF² and the view
# distribution matter; the Wiener term (section 5) is why the half maps' FSC steers the map during
# refinement, and why anisotropy must be measured on plainly divided half maps (section 7); the
# missing cone (sections 7–8) tells you when to tilt rather than collect more.
#
# > *"Do you think Fourier inversion will always be used in cryoEM data processing, or will other
# > methods eventually replace it? What other research fields also use similar techniques?"*
#
# Direct Fourier inversion is the closed-form, linear least-squares (Wiener) step for *given*
# poses, and it is cheap: one pass over the data plus a few FFTs (here a second or two for 2 000
# particles of 64²). Methods that change the model — iterative real-space solvers (ART/SIRT in tomography),
# gradient descent on the map (ab-initio), neural decoders of heterogeneous maps (cryoDRGN,
# notebook 08/09) — still use the same slice geometry, and the linear inversion remains the
# workhorse inside EM refinement. The same mathematics is filtered back-projection in X-ray CT
# (the ramp of section 2), gridding of non-Cartesian k-space in MRI (Pipe & Menon's density
# compensation is RELION's iterative weighting), and aperture synthesis in radio astronomy, where
# Bracewell stated the projection-slice theorem in 1956.

# %%
print(f"notebook ran in {time.perf_counter() - T_START:.1f} s")
assert time.perf_counter() - T_START < 180
