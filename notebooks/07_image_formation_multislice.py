# %% [markdown]
# # 07 — Image formation: the forward model, and multislice against the projection approximation
#
# Study-group sessions **28 Jan 2021 (blur)** "Image Formation (Forward Model)" (pre-reading:
# Sigworth, NCCAT SPA short course 2020, lecture 4) and **11 Feb 2021 (sharpen)** "Image
# Formation (Forward Model), Multislice" (pre-reading: Koeck & Karshikoff 2015; Vulović et al.
# 2013; Kirkland 2020, ch. 6.2 and 6.4). Every question is quoted and answered by a computation;
# every section ends in assertions (`tests/test_notebooks.py` runs this file). Figures go to
# `$CRYOLAB_NOTEBOOK_OUT`.
#
# Notebook 05 covered the phase-contrast physics itself: why an in-focus phase object is
# invisible, the terms of χ, envelopes, Thon rings, delocalisation out of a box, phase flipping
# and Wiener filtering. Here the pieces are chained into the **forward model of a particle
# image**, one library call per step, each step checked against an independent route:
#
# | step | library | checked against |
# |---|---|---|
# | 1. Coulomb potential of the atoms (V) | `cryolab.atoms.atoms_to_potential` | its analytic integral |
# | 2. projection (V·Å) | `cryolab.projection.project_fourier` / `project_real` | `cryolab.atoms.project_atoms` (analytic) |
# | 3. CTF on a padded canvas | `cryolab.simulate.apply_ctf_padded`, `cryolab.ctf.ctf_2d` | a much larger canvas |
# | 4. envelope / B-factor | `CTFParams.bfactor_A2` | spectral SNR per shell |
# | 5. shift (`rlnOriginX/YAngst`) | `apply_ctf_padded(shifts_A=…)` | analytic shifted projection; `cryolab.simulate.simulate_images` |
# | 6. noise at an SNR / counts at a dose | `cryolab.simulate` (`GaussianNoise`, `PoissonNoise`, …) | measured SNR, Poisson statistics |
#
# and then, for the sharpen session, `cryolab.physics` follows the wave through a thick
# specimen (`multislice_image`) to measure where the **projection approximation** and the
# **weak-phase approximation** stop describing the image — separately, since they are two
# different assumptions (question 5 of the sharpen session).
#
# Sample: adenylate kinase (ADK, 214 residues, 23.6 kDa with hydrogens) in a 96 Å box at 1 Å per
# pixel, 300 kV, Cs 2.7 mm, 1.5 µm underfocus, Q0 = 0.07 unless stated. Errors "per band" are
# `‖F(x − ref)‖ / ‖F(ref)‖` over the Fourier samples of a resolution band.

# %%
import dataclasses
import math
import time

import numpy as np
import torch

import cryolab.fourier as cf
import cryolab.physics as ph
from cryolab.atoms import (POTENTIAL_PER_SCATTERING_V_A2, AtomicModel, atomic_masses, atoms_to_potential,
                           builtin_model, center_of_mass, peng_coefficients, project_atoms)
from cryolab.ctf import CTFParams, ctf_2d, electron_wavelength_A
from cryolab.interpolate import sample_grid_2d
from cryolab.lab import best_time, notebook_output_dir
from cryolab.masks import spherical_mask
from cryolab.plot import add_resolution_axis, centred_extent, image_grid
from cryolab.projection import extract_central_slices_rfft, prepare_volume_for_projection, project_fourier, project_real
from cryolab.report import plt, save_figure
from cryolab.rotations import random_rotations, relion_euler_to_matrix
from cryolab.simulate import (GaussianNoise, ParticleParameters, PoissonNoise, add_gaussian_noise, apply_ctf_padded,
                              apply_mtf, detector_mtf, gaussian_noise_sigma, measured_snr, poisson_noise, signal_mask,
                              simulate_images)
from cryolab.validate import fsc, fsc_resolution

OUT = notebook_output_dir()
torch.manual_seed(0)
torch.set_num_threads(1)  # small images: threads only add synchronisation on a shared machine
gen = torch.Generator().manual_seed(0)
T_START = time.perf_counter()

N, PIX, DF = 96, 1.0, 15000.0  # box (pixels), pixel size (Å), defocus (Å, underfocus)
LAM = float(electron_wavelength_A(300.0))  # Å
SIGMA = float(ph.interaction_constant_per_V_A(300.0))  # rad / (V·Å)
BANDS = {"50–10 Å": (1 / 50, 1 / 10), "10–6 Å": (1 / 10, 1 / 6), "6–4 Å": (1 / 6, 1 / 4), "4–3 Å": (1 / 4, 1 / 3)}


def ctf(defocus_A, **kw):
    """A round CTF at 300 kV, Cs 2.7 mm, Q0 0.07 unless overridden."""
    kw.setdefault("amplitude_contrast", 0.07)
    return CTFParams(defocus_u_A=defocus_A, defocus_v_A=defocus_A, defocus_angle_deg=0.0, **kw)


def band_errors(image, reference, pixel_A=PIX):
    """Relative error ‖F(image − reference)‖ / ‖F(reference)‖ in each of BANDS (dict); square images."""
    n = image.shape[-1]
    shell_freq = cf.shell_index((n, n), rfft=True) / (n * pixel_A)  # 1/Å of every rfft sample (its shell)
    diff = torch.fft.rfft2(image - reference).abs() ** 2
    ref = torch.fft.rfft2(reference).abs() ** 2
    out = {}
    for name, (lo, hi) in BANDS.items():
        sel = (shell_freq >= lo) & (shell_freq < hi)
        out[name] = float(diff[..., sel].sum() / ref[..., sel].sum()) ** 0.5
    return out


def fmt(errors):
    return "  ".join(f"{k}: {100 * v:6.2f} %" for k, v in errors.items())


def corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def neighbour_correlation(noise):
    """Correlation of horizontally adjacent pixels, averaged over a stack: 0 for independent pixels."""
    x = noise - noise.mean(dim=(-2, -1), keepdim=True)
    return float((x[..., :, 1:] * x[..., :, :-1]).mean() / (x**2).mean())


def build_atoms(coords_A, element, name):
    """An AtomicModel of one element at the given coordinates (a support film, a gold cluster)."""
    n = len(coords_A)
    return AtomicModel(coords_A=np.asarray(coords_A, dtype=np.float64), elements=np.full(n, element),
                       bfactors_A2=np.zeros(n), occupancies=np.ones(n), atom_names=np.full(n, element),
                       residue_names=np.full(n, name), residue_ids=np.zeros(n, dtype=np.int64),
                       chain_ids=np.full(n, "Z"))


# %% [markdown]
# ## 1. Step 1 — the Coulomb potential of the atoms
#
# > *[blur] Sigworth's lecture: the image is "the projection of the Coulomb potential, modulated
# > by the CTF, plus noise".*
#
# `atoms_to_potential` places, for every atom, the Fourier transform of its electron scattering
# factor (Peng et al. 1996: five Gaussians, broadened by the atom's B-factor) on the grid — the
# **isolated-atom** model (neutral atoms, no bonding or charge redistribution: the first Born
# approximation per atom). Each voxel holds the potential *averaged* over the voxel. Checks: the
# volume integral is `47.878 V·Å² × Σ f_e(0)`; the mean inner potential over the protein's volume
# (0.73 cm³/g, i.e. 1.212 Å³/Da) lands at ~8 V, about twice vitreous ice's (~4 V);
# the summed map equals the analytic projection `project_atoms`. The largest phase shift through
# ADK is `σ·max V_z` ≈ 0.3 rad. The built-in model carries the deposited B-factors of the heavy
# atoms (5–120 Å², median ~35) and B = 0 on the added hydrogens, whose potential is then sharper
# than a 1 Å voxel (this matters in sections 2 and 5).
#
# The library builds the specimen *in vacuum*: there is no solvent or ice model in `cryolab.atoms`.
# In vitreous ice the particle's contrast is `V − V_ice` over the protein (the ice's own mean inner
# potential is roughly half the protein's), and the ice adds structural noise (section 8 uses a
# carbon film to show what that does).

# %%
model = builtin_model("adk_open")
com = center_of_mass(model)
potential = atoms_to_potential(model, N, PIX)  # (z, y, x) volts
vz = potential.sum(0) * PIX  # projection along z, V·Å
a_coef, _ = peng_coefficients(model.elements)
expected_integral = POTENTIAL_PER_SCATTERING_V_A2 * float((a_coef.sum(1) * model.occupancies).sum())
integral = float(potential.double().sum()) * PIX**3
mass_Da = float(atomic_masses(model.elements).sum())
mean_inner_potential = integral / (1.212 * mass_Da)
analytic_vz = project_atoms(model, torch.eye(3), N, PIX)
radius_max_A = float(np.sqrt(((model.coords_A - com.numpy()) ** 2).sum(1)).max())
print(f"∫V dV = {integral:.0f} V·Å³ (47.878 Σ f_e(0) = {expected_integral:.0f}); mass {mass_Da / 1e3:.1f} kDa")
print(f"mean inner potential over the protein volume: {mean_inner_potential:.2f} V; largest phase σ·V_z = {SIGMA * float(vz.max()):.3f} rad")
print(f"Σ_z V · p against project_atoms: {float((vz - analytic_vz).norm() / analytic_vz.norm()):.1e}; atoms reach {radius_max_A:.1f} Å from the centre")

# %%
assert abs(integral / expected_integral - 1) < 1e-4, "the potential integrates to Σ f_e(0)"
assert 6.0 < mean_inner_potential < 10.0, "protein mean inner potential ~8 V"
assert float((vz - analytic_vz).norm() / analytic_vz.norm()) < 1e-4
assert 0.2 < SIGMA * float(vz.max()) < 0.4

# %% [markdown]
# ## 2. Step 2 — projection: Fourier-slice against real space
#
# `project_fourier` (RELION's projector: the 2D transform of a projection is a central slice of
# the 3D transform) against `project_real` (rotate, sample along each ray with trilinear
# interpolation, sum), both against the **analytic** projection of the atoms (`project_atoms`:
# a Gaussian integrates along z to a Gaussian). For the axis-aligned view the slice theorem is
# exact on the grid (the kz = 0 plane of the 3D DFT is the 2D DFT of the z-sum). For an oblique
# view (rot, tilt, psi) = (30°, 60°, 10°):
#
# * the **real-space** projector blurs: trilinear interpolation is a low-pass (sinc² per axis),
#   20–25 % error at 4–3 Å whatever the map; it is also the slow one;
# * the **Fourier-slice** projector (cubic interpolation, pad 2) is limited by the *map*, not by
#   the slice: hydrogen and heavy-atom cores are narrower than a 1 Å voxel, so the voxel map is
#   not band-limited and aliases. Adding B = 20 Å² to every atom (a positive B-factor, i.e. the
#   thermal / conformational blur real particles have anyway) makes the map band-limited and the
#   projection agrees with the analytic one to ~1 % to 3 Å. Sampling the potential at voxel
#   centres (`method="sampled"`, as crystallographic programs do) instead of averaging it over
#   each voxel aliases far more.

# %%
oblique = relion_euler_to_matrix(torch.tensor([30.0, 60.0, 10.0]))
slice_exact = float((torch.fft.rfft2(potential.double().sum(0)) - torch.fft.rfftn(potential.double())[0]).abs().max()
                    / torch.fft.rfft2(potential.double().sum(0)).abs().max())
real_axis = project_real(potential, torch.eye(3)) * PIX
projection_errors = {}
for b_extra in (0.0, 20.0):
    for method in ("integrated", "sampled"):
        volume = potential if (b_extra, method) == (0.0, "integrated") else atoms_to_potential(model, N, PIX, bfactor_A2=b_extra, method=method)
        truth = project_atoms(model, oblique, N, PIX, bfactor_A2=b_extra, method=method)
        projection_errors[("fourier cubic", b_extra, method)] = band_errors(project_fourier(volume, oblique, interpolation="cubic") * PIX, truth)
        if method == "integrated":
            projection_errors[("fourier linear", b_extra, method)] = band_errors(project_fourier(volume, oblique) * PIX, truth)
            t0 = time.perf_counter()
            projection_errors[("real space", b_extra, method)] = band_errors(project_real(volume, oblique) * PIX, truth)
            t_real = time.perf_counter() - t0
for key, errs in projection_errors.items():
    print(f"{key[0]:15s} B+{key[1]:4.0f} {key[2]:10s} | {fmt(errs)}")
rots64 = random_rotations(64, generator=gen)
table = prepare_volume_for_projection(potential)
extract_central_slices_rfft(table, rots64[:2], (N, N))  # warm-up (compiled kernel)
t_slice = best_time(lambda: extract_central_slices_rfft(table, rots64, (N, N)), repeat=2) / 64
print(f"slice theorem on the grid, axis view: max |Δ| / max |F| = {slice_exact:.1e}; real-space z-sum error {float((real_axis - vz).norm() / vz.norm()):.1e}")
print(f"time per image: central slice {1e3 * t_slice:.2f} ms, real-space projection {1e3 * t_real:.0f} ms")

# %%
assert slice_exact < 1e-10, "the central slice of the 3D DFT is the DFT of the z-sum"
assert float((real_axis - vz).norm() / vz.norm()) < 1e-5
bl = projection_errors[("fourier cubic", 20.0, "integrated")]
assert max(bl.values()) < 0.03, "band-limited map: Fourier-slice projection within 3 % to 3 Å"
assert projection_errors[("fourier cubic", 0.0, "integrated")]["4–3 Å"] > 3 * bl["4–3 Å"], "B = 0: the voxel map aliases"
assert projection_errors[("real space", 20.0, "integrated")]["4–3 Å"] > 0.2, "trilinear ray sums blur"
assert projection_errors[("fourier cubic", 0.0, "sampled")]["6–4 Å"] > 3 * projection_errors[("fourier cubic", 0.0, "integrated")]["6–4 Å"]
assert t_real > 20 * t_slice

# %% [markdown]
# ## 3. Step 3 — the CTF on a padded canvas, and the wrap-around without it
#
# > *[blur, 14 Jan — 05 §8 measured how much signal leaves the box] "When collecting data on a
# > real micrograph (versus computationally applying the CTF to a synthetic image the size of a
# > particle), what issues would you have?"* — here the other side: what a simulator gets wrong.
#
# Multiplying the DFT of an N × N image by the CTF is a **circular** convolution with the CTF's
# point-spread function: the part of the signal delocalised beyond the box edge (by
# `R(k) = λΔf k − Cs λ³k³`, up to 270 Å at 3 µm) re-enters from the opposite edge. RELION's
# projector applies the CTF on the unpadded grid (`project_fourier(ctf=…)`, identical to
# `apply_ctf_padded(pad_factor=1)`); `apply_ctf_padded` pads to `M = pad_factor · N`, filters,
# and crops. Against a canvas of 8N: a signal point at radius r inside the particle, moved by R,
# wraps into the crop only if `r + R > M − N/2`, so the canvas needs
# `M > N/2 + r_particle + R(k_max)`. The measured errors confirm the rule.

# %%
canvas_errors, rule = {}, {}
for defocus in (5000.0, 15000.0, 30000.0):
    reference = apply_ctf_padded(vz, ctf(defocus), PIX, pad_factor=8)
    reach = LAM * defocus * 0.5 - 2.7e7 * LAM**3 * 0.5**3  # R at Nyquist, Å
    rule[defocus] = (N / 2 + radius_max_A + reach) / (N * PIX)
    for pad in (1, 1.5, 2, 3, 4):
        canvas_errors[defocus, pad] = float((apply_ctf_padded(vz, ctf(defocus), PIX, pad_factor=pad) - reference).norm() / reference.norm())
    print(f"Δf {defocus / 1e4:.1f} µm: R(Nyquist) {reach:5.0f} Å, rule pad > {rule[defocus]:.2f}; error for pad 1, 1.5, 2, 3, 4: "
          + ", ".join(f"{100 * canvas_errors[defocus, p]:.2f} %" for p in (1, 1.5, 2, 3, 4)))
relion_style = project_fourier(potential, torch.eye(3), ctf=ctf(DF), pixel_size_A=PIX) * PIX
unpadded = apply_ctf_padded(project_fourier(potential, torch.eye(3)) * PIX, ctf(DF), PIX, pad_factor=1)
relion_vs_pad1 = float((relion_style - unpadded).norm() / unpadded.norm())
print(f"project_fourier(ctf=…) against apply_ctf_padded(pad_factor=1): {relion_vs_pad1:.1e}")

reference = apply_ctf_padded(vz, ctf(30000.0), PIX, pad_factor=8)
wrapped = apply_ctf_padded(vz, ctf(30000.0), PIX, pad_factor=1)
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
ext = centred_extent(N, PIX)
for ax, (img, title) in zip(axes, [(reference, "CTF 3 µm on an 8N canvas, cropped"), (wrapped, "CTF on the N × N box"), (wrapped - reference, "difference: wrapped-around signal")]):
    ax.imshow(img, cmap="gray", origin="lower", extent=ext)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (Å)")
axes[0].set_ylabel("y (Å)")
fig.tight_layout()
save_figure(fig, OUT / "07_ctf_wraparound.png")

# %%
assert relion_vs_pad1 < 1e-5, "RELION's CTF on the unpadded grid = pad factor 1"
assert all(canvas_errors[d, p] < 0.01 for (d, p) in canvas_errors if p > rule[d]), "a canvas beyond the rule is accurate to 1 %"
assert canvas_errors[15000.0, 1] > 0.2 and canvas_errors[30000.0, 1] > canvas_errors[5000.0, 1]
assert all(canvas_errors[d, 1] > canvas_errors[d, 2] > canvas_errors[d, 4] for d in (15000.0, 30000.0))

# %% [markdown]
# ## 4. Step 4 — envelopes and B-factor: what B > 0 and B < 0 do to the data
#
# > *[blur] "What happens when the B factor is negative versus positive?"* (05 §5 answered it for
# > a filter: B > 0 blurs, B < 0 sharpens and amplifies noise alike.)
#
# In the forward model the CTF's B stands for every envelope (partial coherence, drift, detector)
# and physically `B ≥ 0`: an envelope never exceeds 1. What B does to a simulated data set shows
# in the **spectral SNR** per shell, `SSNR(k) = S(k)/N(k)` (signal power of the clean image over
# noise power, white noise set to SNR 0.1 over a 30 Å-radius disc). B moves the signal's power
# between shells: `SSNR_B(k) ∝ exp(−B k²/2)`. Averaging M aligned images multiplies the SSNR by
# M, so the **number of particles** to reach SSNR 1 at frequency k grows like `exp(B k²/2)` — the
# Rosenthal–Henderson relation. A negative B in a simulation creates high-resolution SNR that no
# microscope delivers; as a processing step it only rescales signal and noise together.
#
# One more consequence of defining the SNR over the image: the noise level is set by the *total*
# signal variance. With B < 0 much of that variance moves to high frequencies, the calibrated
# noise rises, and the **low-resolution** SSNR — what alignment relies on — drops several-fold;
# B > 0 leaves it almost unchanged (the variance sits at low k anyway).

# %%
mask30 = signal_mask(N, PIX, radius_A=30.0)
ssnr, particles_needed, noise_sigma = {}, {}, {}
shells = torch.arange(N // 2 + 1)
k_shell = cf.shell_to_frequency(shells, N, PIX)
for b in (-50.0, 0.0, 50.0, 100.0):
    # the CTF on the periodic N × N grid keeps every Fourier coefficient; a cropped padded canvas
    # would add the spectrum of the truncation edge, which swamps the weak 3 Å shells
    clean_b = SIGMA * cf.apply_filter(vz, ctf_2d(ctf(DF, bfactor_A2=b), (N, N), PIX), ndim=2)
    noise_sigma[b] = gaussian_noise_sigma(clean_b[None], 0.1, mask=mask30)
    signal_power = cf.radial_average(torch.fft.rfft2(clean_b).abs() ** 2, (N, N))
    ssnr[b] = signal_power / (noise_sigma[b] ** 2 * N * N)  # white noise: E|F|² = N² σ² per sample
    particles_needed[b] = 1 / float(ssnr[b][30])
print("SSNR per shell at 20, 10, 5, 3.2 Å (SNR 0.1 over a 30 Å disc):")
for b in ssnr:
    print(f"  B = {b:+5.0f} Å²: " + ", ".join(f"{float(ssnr[b][s]):.1e}" for s in (5, 10, 19, 30))
          + f"  → images to reach SSNR 1 at {N / 30:.1f} Å: {particles_needed[b]:.0f}")
predicted_ratio = math.exp(100.0 * float(k_shell[30]) ** 2 / 2) * (noise_sigma[100.0] / noise_sigma[0.0]) ** 2
print(f"B = 100 against 0 at 3.2 Å: {particles_needed[100.0] / particles_needed[0.0]:.1f}× the images (exp(B k²/2) with the SNR calibration: {predicted_ratio:.1f}×)")

# %%
assert ssnr[-50.0][30] > ssnr[0.0][30] > ssnr[50.0][30] > ssnr[100.0][30], "B redistributes SSNR towards low k"
assert abs(particles_needed[100.0] / particles_needed[0.0] / predicted_ratio - 1) < 0.1, "Rosenthal–Henderson: exp(B k²/2)"
assert abs(float(ssnr[100.0][5] / ssnr[0.0][5]) - 1) < 0.15, "B > 0: low resolution barely changes"
assert float(ssnr[-50.0][5]) < 0.5 * float(ssnr[0.0][5]), "B < 0 at a fixed image SNR: low-resolution SSNR drops"

# %% [markdown]
# ## 5. Step 5 — shifts, and the whole chain as the library runs it
#
# RELION's origin convention (docs/conventions.md): `image(x) = P(x + origin)`, so the particle
# moves to `N//2 − origin`. `apply_ctf_padded(shifts_A=…)` applies the Fourier phase ramp on the
# padded canvas, together with the CTF (the two commute: both are Fourier multipliers; on the
# padded canvas the shifted halo does not wrap). Checked against the analytic projection of the
# shifted atoms, and the chain projection → shift + CTF on a canvas against
# `cryolab.simulate.simulate_images`, which writes data sets. A sub-pixel Fourier shift is exact
# only for a band-limited image: with the hydrogens' B = 0 (as section 2 found) ADK's projection
# at 1 Å per pixel is not, and the ramp disagrees with the analytic shift by several % even at
# 10–6 Å (aliasing); with B + 20 Å² on every atom it agrees to ~1 % at 4–3 Å and far better below.

# %%
origin = torch.tensor([7.3, -4.6])  # Å
vz_b20 = project_atoms(model, torch.eye(3), N, PIX, bfactor_A2=20.0)  # band-limited at 1 Å pixels
analytic_shifted = project_atoms(model, torch.eye(3), N, PIX, shifts_A=origin, bfactor_A2=20.0)
ramp_shifted = apply_ctf_padded(vz_b20, None, PIX, shifts_A=origin)
shift_error = band_errors(ramp_shifted, analytic_shifted)
shift_error_b0 = band_errors(apply_ctf_padded(vz, None, PIX, shifts_A=origin), project_atoms(model, torch.eye(3), N, PIX, shifts_A=origin))
grid = torch.arange(N, dtype=torch.float32) - N // 2


def centroid(img):
    w = img.clamp_min(0)
    return torch.stack([(w.sum(0) * grid).sum(), (w.sum(1) * grid).sum()]) / w.sum()


moved = centroid(ramp_shifted) - centroid(vz_b20)
shift_then_ctf = apply_ctf_padded(vz_b20, ctf(DF), PIX, shifts_A=origin, pad_factor=3)
ctf_of_shifted = apply_ctf_padded(analytic_shifted, ctf(DF), PIX, pad_factor=3)
commute_error = band_errors(shift_then_ctf, ctf_of_shifted)
euler = torch.tensor([[30.0, 60.0, 10.0]])
particles = ParticleParameters(euler, origin[None], ctf(torch.tensor([DF])))
library_clean, _ = simulate_images(potential, particles, PIX)
by_hand = apply_ctf_padded(project_fourier(potential, relion_euler_to_matrix(euler)), ctf(torch.tensor([DF])), PIX, shifts_A=origin[None])
chain_error = float((library_clean - by_hand).norm() / by_hand.norm())
print(f"origin {origin.numpy().round(2).tolist()} Å: centroid moved by {moved.numpy().round(2).tolist()} Å")
print(f"Fourier ramp vs analytic shift, atoms B + 20 Å²: {fmt(shift_error)}")
print(f"Fourier ramp vs analytic shift, file B-factors: {fmt(shift_error_b0)}")
print(f"shift-then-CTF vs CTF-of-shifted (canvas 3N): {fmt(commute_error)}")
print(f"simulate_images vs the steps by hand: {chain_error:.1e}")

# %%
assert torch.allclose(moved, -origin, atol=0.05), "image(x) = P(x + origin): the particle moves by −origin"
assert max(shift_error.values()) < 0.02 and max(commute_error.values()) < 0.01, "band-limited: exact to ~1 % at 3 Å"
assert shift_error_b0["10–6 Å"] > 0.01, "not band-limited: the sub-pixel shift aliases"
assert chain_error < 1e-5, "cryolab.simulate runs exactly these steps"

# %% [markdown]
# ## 6. Step 6 — noise: Gaussian at an SNR, electrons counted at a dose
#
# > *[blur] "How is real noise different from Gaussian additive noise? What makes it different?"*
#
# The clean image here is the full phase-object image (`projection_approximation_image`), whose
# intensity is `I = 1 − 2·contrast`; counting at a dose D (e/Å²) draws `Poisson(D p² I)` per pixel
# (`poisson_noise` with contrast scale 2). Differences from additive white Gaussian noise:
#
# * **it depends on the signal**: the variance equals the mean count in every pixel, so it is
#   lower where the protein scatters electrons away (~15 % over ADK's densest parts at
#   1.5 µm) — additive noise has one variance everywhere;
# * **it is discrete and skewed at the dose of one movie frame** (~1 e/Å²): 37 % of pixels count
#   zero, skewness `1/√λ` = 1; only the sum over the movie (~40 e/Å²) looks Gaussian;
# * **its SNR is set by the physics**, not chosen: SNR ∝ dose (and ∝ the square of the contrast,
#   so ∝ mass/area). ADK at 40 e/Å², 1 Å pixels, no ice, ideal detector: SNR ≈ 0.16 over a 30 Å
#   disc; the dose for SNR 0.1 follows;
# * what the counting model here still leaves out makes real noise *coloured* and *correlated*:
#   structural noise from ice and support (section 8), the detector (section 10), and image
#   processing itself (section 11).

# %%
padded_vz = cf.pad_center(vz, 3 * N, ndim=2)
clean_contrast = cf.crop_center(ph.projection_approximation_image(padded_vz, ctf(DF), PIX), N, ndim=2)  # radians
gaussian = GaussianNoise(snr=0.1, mask_radius_A=30.0)
g_sigma = gaussian_noise_sigma(clean_contrast[None], gaussian.snr, mask=mask30)
g_noisy = add_gaussian_noise(clean_contrast.expand(64, N, N), g_sigma, generator=gen)
g_snr = measured_snr(clean_contrast.expand(64, N, N), g_noisy, mask=mask30)
counting = {}
for dose in (1.0, 40.0):
    model_noise = PoissonNoise(dose_e_per_A2=dose, contrast_scale=2.0)
    lam0 = model_noise.mean_counts(PIX)
    clean_n, noisy_n = poisson_noise(clean_contrast.expand(400, N, N), model_noise, PIX, generator=gen)
    counts = lam0 - noisy_n * math.sqrt(lam0)  # back to electrons per pixel
    background = counts[:, ~signal_mask(N, PIX, radius_A=40.0)].flatten()
    dense = clean_contrast > 0.05  # where the protein removes the most electrons (underfocus)
    counting[dose] = {
        "snr": measured_snr(clean_n, noisy_n, mask=mask30),
        "var/mean": float((counts.var(0) / counts.mean(0)).mean()),
        "var dense/background": float(counts.var(0)[dense].mean() / background.var()),
        "expected dense/background": float((1 - 2 * clean_contrast[dense]).mean()),
        "zeros": float((background == 0).float().mean()),
        "skewness": float(((background - background.mean()) ** 3).mean() / background.std() ** 3),
    }
    print(f"dose {dose:4.0f} e/Å²: " + ", ".join(f"{k} {v:.3f}" for k, v in counting[dose].items()))
dose_for_snr01 = 40.0 * 0.1 / counting[40.0]["snr"]
print(f"Gaussian at SNR 0.1 (30 Å disc): σ = {g_sigma:.4f} rad, measured SNR {g_snr:.3f}; dose for SNR 0.1 by counting: {dose_for_snr01:.0f} e/Å²")

# %%
assert abs(g_snr / 0.1 - 1) < 0.05, "GaussianNoise reaches its SNR"
for dose, c in counting.items():
    assert abs(c["var/mean"] - 1) < 0.02, "Poisson: variance = mean in every pixel"
    assert abs(c["var dense/background"] / c["expected dense/background"] - 1) < 0.03, "variance follows the signal"
    assert abs(c["skewness"] - 1 / math.sqrt(dose * PIX**2)) < 0.1
assert abs(counting[1.0]["zeros"] - math.exp(-1)) < 0.01 and counting[40.0]["zeros"] == 0.0
assert counting[1.0]["var dense/background"] < 0.9, "over the protein the counting variance is lower"
assert abs(counting[40.0]["snr"] / counting[1.0]["snr"] / 40 - 1) < 0.1, "SNR ∝ dose"

# %% [markdown]
# ## 7. The chain, and underfocus against overfocus by eye at a real dose
#
# > *[blur, 14 Jan] "Can you tell the difference between underfocus and overfocus by eye?"* —
# > 05 §6 answered it for clean images. At 40 e/Å² (and 10 e/Å², a quarter of a movie) the single
# > particle is buried in counting noise; low-passed to 10 Å — roughly what an eye does with a
# > noisy micrograph — underfocus keeps the particle's sign (white in cryolab's convention; in the
# > raw counts the protein is *dark*: fewer electrons), overfocus inverts it. The correlation of
# > the filtered noisy image with the filtered projection shows which, even at 10 e/Å².

# %%
lowpass10 = cf.lowpass_filter((N, N), 1 / 10, edge_width=0.02, pixel_size_A=PIX)
smooth_truth = cf.apply_filter(vz, lowpass10, ndim=2)
core = smooth_truth > torch.quantile(smooth_truth, 0.9)
by_eye, raw_darkness, shown = {}, {}, {}
for name, defocus in (("underfocus", DF), ("overfocus", -DF)):
    contrast = cf.crop_center(ph.projection_approximation_image(padded_vz, ctf(defocus), PIX), N, ndim=2)
    for dose in (10.0, 40.0):
        noise_model = PoissonNoise(dose_e_per_A2=dose, contrast_scale=2.0)
        _, noisy = poisson_noise(contrast.expand(16, N, N), noise_model, PIX, generator=gen)
        filtered = cf.apply_filter(noisy, lowpass10, ndim=2)
        by_eye[name, dose] = float(np.median([corr(f, smooth_truth) for f in filtered]))
        counts = noise_model.mean_counts(PIX) - noisy * math.sqrt(noise_model.mean_counts(PIX))
        raw_darkness[name, dose] = float(counts[:, core].mean() - counts[:, ~mask30].mean())
        shown[name, dose] = filtered[0]
    print(f"{name}: correlation of the 10 Å-filtered noisy image with the filtered projection: "
          f"{by_eye[name, 10.0]:+.2f} at 10 e/Å², {by_eye[name, 40.0]:+.2f} at 40 e/Å²; raw counts over the core minus background "
          f"{raw_darkness[name, 40.0]:+.2f} e/pixel")

chain = [potential[N // 2], vz, SIGMA * apply_ctf_padded(vz, ctf(DF), PIX, pad_factor=3),
         SIGMA * apply_ctf_padded(vz, ctf(DF, bfactor_A2=100.0), PIX, pad_factor=3),
         SIGMA * apply_ctf_padded(vz, ctf(DF, bfactor_A2=100.0), PIX, shifts_A=origin, pad_factor=3),
         g_noisy[0], poisson_noise(clean_contrast, PoissonNoise(40.0, 2.0), PIX, generator=gen)[1],
         shown["underfocus", 40.0], shown["overfocus", 40.0]]
titles = ["1. potential, central z-slice (V)", "2. projection V_z (V·Å)", "3. × CTF 1.5 µm (padded)", "4. × envelope B = 100 Å²",
          "5. shifted by (7.3, −4.6) Å", "6a. + Gaussian noise, SNR 0.1", "6b. electron counts, 40 e/Å²",
          "underfocus, 40 e/Å², low-pass 10 Å", "overfocus, 40 e/Å², low-pass 10 Å"]
fig = image_grid(chain, titles, ncols=5, suptitle="The forward model of one ADK image, step by step", panel_size=3.2)
fig.subplots_adjust(hspace=0.2)  # room for the second row's titles
save_figure(fig, OUT / "07_forward_model_chain.png")

# %%
assert by_eye["underfocus", 40.0] > 0.3 and by_eye["overfocus", 40.0] < -0.3, "by eye at 40 e/Å²"
assert by_eye["underfocus", 10.0] > 0.1 and by_eye["overfocus", 10.0] < -0.1, "still visible at 10 e/Å²"
assert raw_darkness["underfocus", 40.0] < 0 < raw_darkness["overfocus", 40.0], "underfocused protein is dark in raw counts"

# %% [markdown]
# ## 8. [blur] Particles on different grids
#
# > *"If particles come from different types of grids (thin continuous carbon, single layer
# > graphene) can they be combined into one large dataset to solve a structure?"*
#
# The particle's signal is the same on either grid; what differs is everything else in the
# forward model. We build both supports from atoms — a 30 Å amorphous carbon film (random carbon
# atoms at 2.0 g/cm³, 0.1 atoms/Å³) and a graphene sheet (hexagonal lattice, a = 2.46 Å) — and
# image them with the same CTF: their power relative to ADK's, per band.
#
# * **Carbon** is structural noise: a random potential, CTF-filtered like the particle. Beyond
#   10 Å it carries 10–40× the particle's power (below 10 Å the particle's compact mass still
#   dominates) — coloured noise (Thon rings) and correlated pixels that white-noise models do not
#   describe.
# * **Graphene** is a crystal: its power sits in Bragg spots at 2.13 Å (and 1.23 Å, which at 1 Å
#   pixels aliases to ~5 Å — a few % of the particle's power there), nearly nothing at the
#   resolutions used for alignment; a constant phase otherwise (invisible). Its 2.13 Å spots
#   calibrate the pixel size (section 9).
#
# So yes, combine them — as separate **groups** with their own noise spectrum (RELION's
# per-group σ²(k)), scale and amplitude contrast (adsorbed to carbon, particles also change their
# preferred orientations, which can even help). One white-noise model for the pool would over-
# weight the carbon images' noisy high frequencies.

# %%
film_A = 30.0
n_carbon = int(0.1 * N * N * film_A * PIX**2)
carbon_xyz = (torch.rand(n_carbon, 3, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([N * PIX, N * PIX, film_A], dtype=torch.float64)
carbon_vz = project_atoms(build_atoms(carbon_xyz.numpy(), "C", "CAR"), torch.eye(3), N, PIX, center=False)
cells = np.arange(-30, 31)
i_cell, j_cell = np.meshgrid(cells, cells, indexing="ij")
lattice = i_cell[..., None] * np.array([2.46, 0.0, 0.0]) + j_cell[..., None] * np.array([1.23, 2.46 * math.sqrt(3) / 2, 0.0])
sites = np.concatenate([lattice.reshape(-1, 3), lattice.reshape(-1, 3) + np.array([1.23, 2.46 / (2 * math.sqrt(3)), 0.0])])
sites = sites[(np.abs(sites[:, :2]) < N * PIX / 2).all(1)]
graphene_vz = project_atoms(build_atoms(sites, "C", "GRA"), torch.eye(3), N, PIX, center=False)

# the supports fill the field: window them (soft disc) so that the box edge, where a lattice is
# cut off, adds no spurious power; on the periodic grid |F(CTF ⊛ x)|² = CTF² |F(x)|² exactly
window = spherical_mask(N, PIX, 38.0, soft_edge_A=8.0, ndim=2)
particle_power = cf.radial_average(torch.fft.rfft2(ph.weak_phase_image(vz, ctf(DF), PIX)).abs() ** 2, (N, N))
support_ratio, support_peak = {}, {}
for name, support in (("carbon 30 Å", carbon_vz), ("graphene", graphene_vz)):
    windowed = (support - support[window > 0.5].mean()) * window
    power = cf.radial_average(torch.fft.rfft2(ph.weak_phase_image(windowed, ctf(DF), PIX)).abs() ** 2, (N, N))
    support_ratio[name] = {band: float(power[(k_shell >= lo) & (k_shell < hi)].sum() / particle_power[(k_shell >= lo) & (k_shell < hi)].sum())
                           for band, (lo, hi) in BANDS.items()}
    support_peak[name] = int(power[2:].argmax()) + 2
    print(f"{name:12s} ({len(sites) if name == 'graphene' else n_carbon} atoms): power / ADK's per band: "
          + ", ".join(f"{b} {v:.3f}" for b, v in support_ratio[name].items())
          + f"; strongest shell {support_peak[name]} ({N * PIX / support_peak[name]:.2f} Å)")
carbon_noise_correlation = neighbour_correlation(ph.weak_phase_image(carbon_vz - carbon_vz.mean(), ctf(DF), PIX))

# %%
assert all(support_ratio["carbon 30 Å"][b] > 5 for b in ("10–6 Å", "6–4 Å", "4–3 Å")), "a 30 Å carbon film outweighs a 24 kDa protein"
assert support_ratio["graphene"]["50–10 Å"] < 0.01 and support_ratio["graphene"]["10–6 Å"] < 0.01, "graphene is nearly invisible"
assert abs(N * PIX / support_peak["graphene"] - 2.13) < 0.05, "graphene's (100) spots at 2.13 Å"

# %% [markdown]
# ## 9. [blur] Why not pool every EMPIAR data set of a protein?
#
# > *"Why don't researchers pool different datasets of the same particle (e.g. from different
# > EMPIAR entries) to solve a high resolution structure with tens of millions of particles?"*
#
# Two computations. **(a) Magnification.** Each microscope's pixel size is calibrated to ~1–2 %.
# Images of the same particle at pixel sizes p and p(1 + δ), treated as one, differ by a radial
# scaling: a point at radius r moves by δr. The FRC between them (ADK, and ADK with its atoms
# spread 4× apart standing in for a 150 Å-radius complex) falls to 0.5 at `d ≈ 3 δ r_g`
# (r_g the radius of gyration): 2 % mismatch limits a large complex to ~4 Å whatever the
# particle count. **(b) Diminishing returns.** From section 4, the images needed grow like
# `exp(B k²/2)`: with B = 100 Å², going from 3 Å to 2.5 Å takes ~12× more particles, 2.5 → 2 Å
# another ~90×; tens of millions only help if they are *identical* — same state, buffer, ice,
# detector, magnification — and the heterogeneity of pooled data sets (conformations, ligands,
# orientation biases) adds more error than the particles remove.

# %%
mismatch = {}
for spread, box in ((1.0, N), (4.0, 256)):
    spread_model = dataclasses.replace(model, coords_A=(model.coords_A - com.numpy()) * spread + com.numpy())
    r_g = float(np.sqrt(((spread_model.coords_A - com.numpy()) ** 2).sum(1).mean()))
    at_p = project_atoms(spread_model, torch.eye(3), box, PIX)
    for delta in (0.01, 0.02, 0.04):
        at_other = project_atoms(spread_model, torch.eye(3), box, PIX * (1 + delta))
        d = fsc_resolution(fsc(at_p, at_other, ndim=2), box, PIX, threshold=0.5).interpolated_resolution_A
        mismatch[spread, delta] = (d, r_g)
        print(f"r_g {r_g:5.1f} Å, pixel sizes differ by {100 * delta:.0f} %: FRC = 0.5 at {d:5.2f} Å (3 δ r_g = {3 * delta * r_g:5.2f} Å)")
rh = {(d1, d2): math.exp(100.0 / 2 * (1 / d2**2 - 1 / d1**2)) for d1, d2 in ((3.0, 2.5), (2.5, 2.0))}
print("particles needed, B = 100 Å²:", {f"{a} → {b} Å": f"×{v:.0f}" for (a, b), v in rh.items()})

# %%
for delta in (0.01, 0.02, 0.04):
    d, r_g = mismatch[4.0, delta]
    assert abs(d / (3 * delta * r_g) - 1) < 0.25, "d ≈ 3 δ r_g for the large particle"
assert mismatch[4.0, 0.02][0] > 3.5 > mismatch[1.0, 0.02][0], "the same mismatch hurts a larger particle more"
assert rh[3.0, 2.5] > 10 and rh[2.5, 2.0] > 50

# %% [markdown]
# ## 10. [sharpen] Q1 — the detector's MTF/DQE in 2D or in 1D
#
# > *"Equation 7 in Vulović et al. shows the DQE/NTF being applied. In practice, the DQE/MTF/NTF
# > is often plotted in 1D in papers. What would be the difference between doing the convolution
# > of the DQE/NTF in 2D versus 1D?"*
#
# A 1D curve is a radial profile: using it in 2D assumes the detector responds the same in every
# direction. A counting detector's pixel aperture gives `MTF = sinc(kx)·sinc(ky)`
# (`detector_mtf(…, "sinc")`), which is **separable, not radial**: the exact filter is the 1D
# sinc along x and then along y (two 1D convolutions), while the radially averaged 1D curve used
# isotropically is off by up to ~2 % inside the Nyquist circle (~4 % on the DQE, ∝ MTF²) and is
# undefined in the corners beyond Nyquist (|k| up to 0.71 cycles/pixel), where the true MTF is
# ~0.4. Real detectors can be more anisotropic (readout direction, charge sharing), which only a
# 2D model captures. Vulović et al. transfer signal and noise differently (MTF for the signal,
# NTF for the counting noise, DQE = DQE(0)·MTF²/NTF²), so their noise is filtered too; the
# library's counting model
# (`poisson_noise`) blurs only the signal and keeps the counting noise white (the ideal counting
# detector of McMullan et al.) — applying the MTF to the noise as well makes adjacent pixels
# correlate (next section).

# %%
mtf_2d = detector_mtf((N, N), "sinc")
k_cycles = cf.fftfreq_magnitude((N, N), rfft=True)
mtf_radial = cf.radial_profile_to_grid(cf.radial_average(mtf_2d, (N, N)), (N, N))
inside = k_cycles <= 0.5
anisotropy = float(((mtf_2d - mtf_radial).abs() / mtf_radial)[inside].max())
separable = torch.sinc(torch.fft.fftfreq(N))[:, None] * torch.sinc(torch.fft.rfftfreq(N))[None, :]
print(f"sinc MTF: 2D vs radial 1D profile, largest deviation inside Nyquist {100 * anisotropy:.1f} % (DQE ~{200 * anisotropy:.1f} %); "
      f"corners: |k| up to {float(k_cycles.max()):.2f} cycles/pixel, MTF down to {float(mtf_2d[~inside].min()):.2f}")

# %%
assert torch.allclose(mtf_2d, separable), "the pixel-aperture MTF is separable: 1D along x, then along y"
assert 0.005 < anisotropy < 0.05
assert float(mtf_2d[~inside].min()) < 0.5

# %% [markdown]
# ## 11. [sharpen] Q3 — additive Gaussian noise and pixel independence
#
# > *"Simpler models assume additive gaussian noise and pixel independence … Is this the case in
# > Vulović et al.? If so, what sorts of models would break the pixel independence?"*
#
# Vulović et al. draw Poisson counts per pixel — independent given the expected image — but
# their detector model (eq. 7) then shapes the counting noise by the NTF: unless the NTF is flat,
# the noise is no longer white nor the pixels independent. What breaks independence, measured as
# the correlation of adjacent pixels of pure noise:
#
# * a detector **point-spread** (charge sharing; the NTF): sinc-filtered white noise;
# * **resampling**: motion correction and particle re-centring shift frames by fractions of a
#   pixel; bilinear interpolation by half a pixel averages neighbours (correlation ~0.5, variance
#   ÷4). A Fourier shift keeps the noise white;
# * **structural noise**: the support film (or ice) is a random potential seen through the CTF.
#
# Independent pixels remain true of counting itself (`poisson_noise`, MTF on the signal only).

# %%
white = torch.randn(32, N, N, generator=gen)
iy, ix = torch.meshgrid(torch.arange(N, dtype=torch.float32), torch.arange(N, dtype=torch.float32), indexing="ij")
half_pixel = torch.stack([ix + 0.5, iy + 0.5], dim=-1).reshape(-1, 2)
bilinear = sample_grid_2d(white, half_pixel, method="linear").reshape(32, N, N)[:, 2:-2, 2:-2]
counting_flat = poisson_noise(torch.zeros(32, N, N), PoissonNoise(40.0, 2.0, mtf="sinc"), PIX, generator=gen)[1]
pixel_correlation = {
    "white Gaussian": neighbour_correlation(white),
    "counting (library: MTF on the signal)": neighbour_correlation(counting_flat),
    "Fourier shift by half a pixel": neighbour_correlation(cf.fourier_shift(white, torch.tensor([0.5, 0.5]))),
    "detector NTF on the noise (sinc)": neighbour_correlation(apply_mtf(white, "sinc")),
    "bilinear shift by half a pixel": neighbour_correlation(bilinear),
    "carbon film through the CTF": carbon_noise_correlation,
}
for name, value in pixel_correlation.items():
    print(f"adjacent-pixel correlation, {name:40s}: {value:+.3f}")
print(f"variance after the bilinear half-pixel shift: {float(bilinear.var()):.3f} (white: 1)")

# %%
assert abs(pixel_correlation["white Gaussian"]) < 0.02 and abs(pixel_correlation["counting (library: MTF on the signal)"]) < 0.02
assert abs(pixel_correlation["Fourier shift by half a pixel"]) < 0.03
assert 0.1 < pixel_correlation["detector NTF on the noise (sinc)"] < 0.3
assert 0.4 < pixel_correlation["bilinear shift by half a pixel"] < 0.6 and abs(float(bilinear.var()) - 0.25) < 0.02
assert abs(pixel_correlation["carbon film through the CTF"]) > 0.1

# %% [markdown]
# ## 12. [sharpen] Multislice against the projection approximation: thickness and resolution
#
# The **projection approximation** treats the whole specimen as one thin phase screen at the
# reference plane: `ψ = exp(iσV_z)`. **Multislice** (`multislice_image`; Kirkland ch. 6.4) cuts
# the potential into slices, multiplies by each slice's transmission function and
# Fresnel-propagates the wave (`exp(−iπλΔz k²)`) to the next slice, so electrons scattered
# high in the specimen have travelled — and spread — before those scattered low.
#
# *Reduction:* with a single slice the two are the same computation (exactly, for an odd
# number of planes, whose middle plane is the reference plane); for ADK alone (~60 Å of protein)
# slice thicknesses 1–8 Å converge and multislice differs from the projection approximation by
# ≤ 5 % to 3 Å. *Thickness:* a slab of n ADK copies, each 96 Å of the beam path, rotated by
# multiples of 90° and shifted laterally at random (a crowded thick specimen: T = 96 n Å). Both
# images are compared per band and by FRC, inside multislice's 2/3-Nyquist band limit (3 Å).
#
# The difference is a **depth-dependent defocus**: material at height z is imaged at `Δf + z`.
# For a uniform slab the FRC between the two images is then `sin x / x` with `x = πλT k²/2`,
# which crosses 0.5 at `d = √(πλT / 3.79)` ≈ 0.91 √(λT). Measured: that formula holds to a few %
# wherever the crossing lies inside the band limit, and the projection approximation is 10 % off
# (per band) from T ≈ 130 Å at 4–3 Å, ≈ 170 Å at 6–4 Å and ≈ 370 Å at 10–6 Å — about
# 0.15–0.2 d²/λ. (At the often-quoted "depth of field" `2d²/λ`, x = π: the FRC is sin π/π = 0 —
# that thickness is where the projection image has lost resolution d altogether, not where it
# is still accurate.) Finally, the linear model *with* depth-dependent defocus (section 13's
# "linear + propagation") stays near multislice at every thickness: the propagation error is
# the defocus gradient, i.e. the curvature of the Ewald sphere.

# %%
odd = potential[: N - 1]  # drop an empty plane: the middle plane of 95 is z = 0
single_slice = ph.multislice_image(odd, ctf(DF), PIX, (N - 1) * PIX)
projection_2_3 = ph.projection_approximation_image(odd.sum(0) * PIX, ctf(DF), PIX, bandlimit_fraction=2 / 3)
reduction_error = float((single_slice - projection_2_3).norm() / projection_2_3.norm())
slice_convergence = {dz: band_errors(ph.multislice_image(potential, ctf(DF), PIX, dz), ph.multislice_image(potential, ctf(DF), PIX, 1.0)) for dz in (2.0, 4.0, 8.0)}
print(f"one slice vs projection approximation: {reduction_error:.1e}; empty plane dropped holds {float(potential[N - 1].abs().max()):.1e} V")
for dz, errs in slice_convergence.items():
    print(f"slices of {dz:.0f} Å against 1 Å: {fmt(errs)}")

SLICE_A = 4.0
BAND_LIMIT_SHELL = int(N * PIX / 3)  # 2/3 of Nyquist: 3 Å
copies = [potential]
for _ in range(15):
    quarter_turns = int(torch.randint(4, (1,), generator=gen))
    dy, dx = (int(v) for v in torch.randint(N, (2,), generator=gen))
    copies.append(torch.roll(torch.rot90(potential, quarter_turns, dims=(-2, -1)), (dy, dx), dims=(-2, -1)))


def born_with_defocus(volume, pixel_A=PIX, slice_A=16.0):
    """First-order (linear) image with propagation: each slice's weak-phase image at its own defocus.

    Slices of ``slice_A`` with mid-planes at height z from the reference plane as in `multislice`
    (z > 0 downstream); the slice at z is imaged at Δf + z (further from the plane an underfocused
    lens images). Linear, so slices need not be thin: ±8 Å of defocus within one changes the phase
    at 3 Å by < 0.06 rad. A sum of library calls (no such function in cryolab.physics)."""
    planes = round(slice_A / pixel_A)
    n = volume.shape[-1]
    slabs = volume.reshape(-1, planes, n, n).sum(1) * pixel_A
    z = torch.arange(slabs.shape[0]) * slice_A + (planes - 1) * pixel_A / 2 - (volume.shape[0] // 2) * pixel_A
    return ph.weak_phase_image(slabs, ctf(DF + z), pixel_A).sum(0)


thickness = {}
for n_copies in (1, 2, 3, 4, 6, 8, 12, 16):
    slab = torch.cat(copies[:n_copies])
    slab_vz = slab.sum(0) * PIX
    multi = ph.multislice_image(slab, ctf(DF), PIX, SLICE_A)
    single = ph.projection_approximation_image(slab_vz, ctf(DF), PIX, bandlimit_fraction=2 / 3)
    frc = fsc(multi, single, ndim=2)[: BAND_LIMIT_SHELL + 1]
    d_half = fsc_resolution(frc, N, PIX, threshold=0.5).interpolated_resolution_A
    t_A = n_copies * N * PIX
    thickness[n_copies] = {
        "T": t_A, "frc": frc, "d_0.5": d_half, "predicted d_0.5": math.sqrt(math.pi * LAM * t_A / 3.7910),
        "projection": band_errors(single, multi), "weak phase": band_errors(ph.weak_phase_image(slab_vz, ctf(DF), PIX), multi),
        "linear + propagation": band_errors(born_with_defocus(slab), multi),
        "phase max": SIGMA * float(slab_vz.max()), "slab": slab,
    }
    print(f"T = {t_A:5.0f} Å (max phase {thickness[n_copies]['phase max']:.2f} rad): projection approx. error {fmt(thickness[n_copies]['projection'])}")
    print(f"{'':13s}FRC(multislice, projection) = 0.5 at {d_half:5.2f} Å (slab model √(πλT/3.79) = {thickness[n_copies]['predicted d_0.5']:.2f} Å)")
band_names = list(BANDS)
thickness_at_10pc = {}
for band in band_names:
    ts = np.array([v["T"] for v in thickness.values()])
    es = np.array([v["projection"][band] for v in thickness.values()])
    above = np.nonzero(es >= 0.1)[0]
    if len(above) and above[0] > 0:
        j = above[0]
        thickness_at_10pc[band] = float(np.exp(np.interp(np.log(0.1), np.log(es[j - 1 : j + 1]), np.log(ts[j - 1 : j + 1]))))
print("thickness at which the projection approximation is 10 % off:", {b: f"{t:.0f} Å" for b, t in thickness_at_10pc.items()})

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for band in band_names:
    axes[0].plot([v["T"] for v in thickness.values()], [100 * v["projection"][band] for v in thickness.values()], "o-", label=band)
axes[0].axhline(10, color="0.5", lw=0.6, ls="--")
axes[0].set_xscale("log")
axes[0].set_yscale("log")
axes[0].set_xlabel("specimen thickness T (Å)")
axes[0].set_ylabel("‖multislice − projection‖ / ‖multislice‖ (%)")
axes[0].legend(fontsize=8, title="band")
for n_copies in (1, 2, 4, 8, 16):
    axes[1].plot(k_shell[: BAND_LIMIT_SHELL + 1], thickness[n_copies]["frc"], label=f"T = {thickness[n_copies]['T']:.0f} Å")
axes[1].axhline(0.5, color="0.5", lw=0.6, ls="--")
axes[1].set_xlabel("spatial frequency (1/Å)")
axes[1].set_ylabel("FRC(multislice, projection approx.)")
axes[1].legend(fontsize=8)
add_resolution_axis(axes[1])
fig.tight_layout()
save_figure(fig, OUT / "07_multislice_vs_projection.png")

# %%
assert reduction_error < 1e-5, "one slice = the projection approximation"
assert max(slice_convergence[4.0].values()) < 0.01, "4 Å slices are converged to 1 % at 3 Å"
thin = thickness[1]["projection"]
assert max(thin.values()) < 0.06, "a single small protein: projection approximation within 6 % to 3 Å"
assert thickness[16]["projection"]["4–3 Å"] > 1.0 and thickness[16]["projection"]["10–6 Å"] > 0.3, "1.5 µm of specimen: a different image"
errors_43 = [v["projection"]["4–3 Å"] for v in thickness.values()]
assert all(b >= a for a, b in zip(errors_43[:5], errors_43[1:6])), "error grows with thickness"
for v in thickness.values():
    if v["predicted d_0.5"] > 3.1:  # the crossing lies inside the band limit
        assert abs(v["d_0.5"] / v["predicted d_0.5"] - 1) < 0.1, "depth-dependent defocus explains it: FRC = sin x / x"
    elif v["predicted d_0.5"] < 2.6:
        assert v["d_0.5"] <= 3.0 + 1e-6 and float(v["frc"].min()) > 0.5, "thin enough: FRC > 0.5 to the band limit"
assert all(v["linear + propagation"]["4–3 Å"] < 0.35 for v in thickness.values()), "a depth-dependent defocus captures it"
assert thickness_at_10pc["4–3 Å"] < thickness_at_10pc["6–4 Å"] < thickness_at_10pc["10–6 Å"], "finer detail breaks first"

# %% [markdown]
# ## 13. [sharpen] Q5 — weak-phase approximation against projection assumption
#
# > *"What is the difference between the 'weak approximation' and the 'projection assumption'?
# > … point out where precisely the assumptions are made."*
#
# Two independent steps of Koeck & Karshikoff's derivation: (i) **projection assumption** —
# the wave is not allowed to propagate *inside* the specimen, so the exit wave is
# `exp(iσ∫V dz)` (the line integral is taken before anything else happens; Kirkland's multislice
# keeps the propagator between slices instead); (ii) **weak-phase (linear, single scattering)
# approximation** — `exp(iφ) ≈ 1 + iφ`, dropping `φ²/2` and beyond, which is what makes the image
# a *linear* function of the potential and gives the CTF its `sin χ` form. Either can fail
# without the other. Four models against multislice (the truth here), error in the 6–4 and 4–3 Å
# bands:
#
# | | projection | propagation (per-slice defocus) |
# |---|---|---|
# | **linear** | `weak_phase_image(V_z)` — the standard CTF model | Σ slices `weak_phase_image(V_slice, Δf + z)` |
# | **all orders** | `projection_approximation_image(V_z)` | `multislice_image` |
#
# Specimens: ADK alone (thin, φ ≤ 0.3 rad); ADK's potential × 4 (thin and strong: a particle of
# the same shape four times denser in projection, φ ≤ 1.2 rad); ADK's two halves 800 Å apart
# (thick but weak: the same projection as ADK); the 16-copy slab of section 12 (thick, φ ≈ 0.8
# rad). Measured: thin specimens keep the projection (≤ 7 %) whatever their strength, while the
# linear model fails ∝ φ (~14 % for ADK, ~50 % at × 4); thick specimens break the projection
# (≥ 100 % at 6–4 Å) while linear theory *with* propagation stays near its thin-specimen error.
#
# Note how the weak-phase error of plain ADK, 7–14 %, is far above its high-resolution phase:
# the second-order term mixes the particle's *low-resolution* phase (~0.1–0.3 rad over the
# particle) into every band; in ice, where only `V − V_ice` counts, it is roughly halved.
#
# A **heavy-atom label** breaks both. A 79-atom gold cluster (fcc, 1.4 nm: a Nanogold label) on
# ADK, computed at 0.5 Å per pixel — at 1 Å the gold atoms are sharper than the sampling and
# multislice's 2/3 band limit (3 Å) would cut real scattering — with slices converged: although
# only 14 Å thick, its atom columns scatter strongly to high angles, where propagation through
# even 14 Å matters (πλz k² ≈ 0.4 rad at 1 Å⁻¹), and the projection approximation is 7–19 % off
# in every band, the weak-phase model 18–29 %.

# %%
fcc = np.arange(-3, 4)
cube = np.stack(np.meshgrid(fcc, fcc, fcc, indexing="ij"), -1).reshape(-1, 3) * 4.08  # gold: a = 4.08 Å
gold_sites = np.concatenate([cube, cube + [2.04, 2.04, 0], cube + [2.04, 0, 2.04], cube + [0, 2.04, 2.04]])
gold_sites = gold_sites[np.linalg.norm(gold_sites, axis=1) <= 7.0] + com.numpy() + np.array([25.0, 0.0, 0.0])
gold = build_atoms(gold_sites, "Au", "AU")
FINE = 0.5  # Å per pixel for the gold label (box 192: the same 96 Å field)
adk_fine = atoms_to_potential(model, 2 * N, FINE)
halves_apart = torch.cat([potential[: N // 2], torch.zeros(800, N, N), potential[N // 2 :]])
specimens = {"ADK (thin, weak)": (potential, PIX), "ADK × 4 (thin, strong)": (4 * potential, PIX),
             "ADK halves 800 Å apart (thick, weak)": (halves_apart, PIX), "16-copy slab, 1536 Å (thick)": (thickness[16]["slab"], PIX),
             "ADK at 0.5 Å sampling": (adk_fine, FINE),
             f"ADK + Au{len(gold)} at 0.5 Å (thin, heavy)": (adk_fine + atoms_to_potential(gold, 2 * N, FINE, center=com), FINE)}
four_models = {}
for name, (volume, pixel_A) in specimens.items():
    volume_vz = volume.sum(0) * pixel_A
    truth = ph.multislice_image(volume, ctf(DF), pixel_A, SLICE_A)
    four_models[name] = {
        "linear, projection": band_errors(ph.weak_phase_image(volume_vz, ctf(DF), pixel_A), truth, pixel_A),
        "all orders, projection": band_errors(ph.projection_approximation_image(volume_vz, ctf(DF), pixel_A, bandlimit_fraction=2 / 3), truth, pixel_A),
        "linear, propagation": band_errors(born_with_defocus(volume, pixel_A), truth, pixel_A),
    }
    print(f"{name} — max phase {SIGMA * float(volume_vz.max()):.2f} rad")
    for model_name, errs in four_models[name].items():
        print(f"    {model_name:24s}: {fmt(errs)}")
gold_volume = specimens[f"ADK + Au{len(gold)} at 0.5 Å (thin, heavy)"][0]
gold_slices = band_errors(ph.multislice_image(gold_volume, ctf(DF), FINE, SLICE_A), ph.multislice_image(gold_volume, ctf(DF), FINE, SLICE_A / 2), FINE)
print(f"gold label, multislice with {SLICE_A:.0f} Å against {SLICE_A / 2:.0f} Å slices: {fmt(gold_slices)}")

in_register = {}
for n_stack in (1, 2, 4, 8):  # the projected potential × n: a denser (or heavier) particle of the same shape
    full = ph.projection_approximation_image(n_stack * vz, ctf(DF), PIX)
    in_register[n_stack] = band_errors(ph.weak_phase_image(n_stack * vz, ctf(DF), PIX), full)["4–3 Å"]
print("weak-phase error at 4–3 Å for ADK's projected potential × n (φ_max = n × 0.29 rad):", {n: f"{100 * e:.0f} %" for n, e in in_register.items()})

# %%
adk, strong, apart, slab16, adk_05, au = (four_models[name] for name in specimens)
assert max(adk["all orders, projection"].values()) < 0.06 and adk["linear, projection"]["4–3 Å"] > 0.1
assert max(strong["all orders, projection"].values()) < 0.08 and min(strong["linear, projection"].values()) > 0.25, "thin & strong: linearity fails, projection holds"
assert apart["all orders, projection"]["6–4 Å"] > 0.5 and max(apart["linear, propagation"].values()) < 0.2, "thick & weak: propagation, not linearity"
assert slab16["linear, propagation"]["4–3 Å"] < 0.4 < 1.0 < slab16["all orders, projection"]["4–3 Å"]
assert all(abs(adk_05[m][b] - adk[m][b]) < 0.01 for m in adk for b in BANDS), "ADK is converged in sampling at 1 Å"
assert au["all orders, projection"]["10–6 Å"] > 5 * adk_05["all orders, projection"]["10–6 Å"], "a heavy label is not a thin phase screen"
assert au["linear, projection"]["4–3 Å"] > 1.5 * adk_05["linear, projection"]["4–3 Å"], "…nor a weak one"
assert max(gold_slices.values()) < 0.015, "slices converged for the gold label"
assert all(abs(in_register[n] / (n * in_register[1]) - 1) < 0.2 for n in (2, 4)), "weak-phase error grows ∝ phase"
assert in_register[8] > 0.8

# %% [markdown]
# ## 14. [sharpen] Q2 — the complex CTF against the sin CTF
#
# > *"Equation 5 in Vulović et al. shows the 'complex CTF'. What is the difference between this
# > and the sin CTF that is often used? When is it appropriate to use one versus the other?"*
#
# The lens acts on the **wave**: `ψ_image(k) = exp(iχ(k)) ψ_exit(k)` — the complex CTF (Vulović's
# eq. 5, `objective_lens_transfer` here). Write the scattered wave `s = ψ_exit − 1` as
# `s = iφ_eff + a_eff` with real maps φ_eff ("phase-like") and a_eff ("amplitude-like"); to first
# order the image contrast is `sin χ · Φ_eff(k) + cos χ · A_eff(k)`. The sin CTF is the case
# `a_eff = 0`, plus `Q0 cos χ` for a fixed amplitude fraction. We split the scattered wave of the
# multislice exit wave by Friedel symmetry — `A_eff(k) = (S(k) + S*(−k))/2` — and give
# ‖A_eff‖/‖Φ_eff‖ per band:
#
# * thin and weak (ADK's potential × 0.02): ≤ 6 %, all of it from ADK's own ~60 Å depth — the
#   sin CTF holds;
# * thin and strong (ADK as it is): 10–16 % in every band — `−φ²/2` is real, i.e. amplitude-like;
# * thick: propagation by ±z turns phase into amplitude by `tan(πλ z k²)` and differently for k
#   and −k (the **Ewald sphere**): the Friedel mates of one image no longer carry the same
#   information, which a sin CTF cannot express. Ewald-sphere correction (DeRosier 2000; Russo &
#   Henderson 2018) uses the complex CTF `sin χ ± i cos χ` to separate them.
#
# So: sin CTF for thin, weak specimens at moderate resolution; the complex CTF on the exit wave
# whenever the specimen is strong (heavy atoms, crystals, thick ice), or thick relative to
# `d²/λ` (large particles at high resolution, tomography, lamellae).

# %%
k_full = torch.sqrt(torch.fft.fftfreq(N)[:, None] ** 2 + torch.fft.fftfreq(N)[None, :] ** 2) / PIX


def amplitude_to_phase_ratio(exit_wave):
    """‖A_eff‖/‖Φ_eff‖ per band of the scattered wave s = ψ − 1, split by Friedel symmetry."""
    spectrum = torch.fft.fft2(exit_wave - 1)
    mirrored = torch.roll(torch.flip(spectrum, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # S(−k)
    amplitude_like, phase_like = (spectrum + mirrored.conj()) / 2, (spectrum - mirrored.conj()) / 2
    return {band: float(amplitude_like[(k_full >= lo) & (k_full < hi)].norm() / phase_like[(k_full >= lo) & (k_full < hi)].norm())
            for band, (lo, hi) in BANDS.items()}


ratios = {
    "thin, weak": amplitude_to_phase_ratio(ph.multislice(0.02 * potential.double(), PIX, SLICE_A, 300.0)),
    "thin, ADK as it is": amplitude_to_phase_ratio(ph.multislice(potential.double(), PIX, SLICE_A, 300.0)),
    "800 Å apart, weak": amplitude_to_phase_ratio(ph.multislice(0.02 * halves_apart.double(), PIX, SLICE_A, 300.0)),
}
half_separation = (800 + N / 2) / 2
ewald_prediction = {band: math.tan(math.pi * LAM * half_separation * ((lo + hi) / 2) ** 2) for band, (lo, hi) in BANDS.items()}
for name, r in ratios.items():
    print(f"‖A_eff‖/‖Φ_eff‖, {name:20s}: " + ", ".join(f"{b} {v:.3f}" for b, v in r.items()))
print("tan(πλ z k²) at z = ±424 Å, band centres:", {b: round(v, 2) for b, v in list(ewald_prediction.items())[:2]})

# %%
assert max(ratios["thin, weak"].values()) < 0.07, "thin, weak: the sin CTF suffices"
assert min(ratios["thin, ADK as it is"].values()) > 0.07, "the second-order term is amplitude-like"
assert abs(ratios["800 Å apart, weak"]["10–6 Å"] / ewald_prediction["10–6 Å"] - 1) < 0.15, "propagation rotates phase into amplitude"
assert ratios["800 Å apart, weak"]["6–4 Å"] > 1.0

# %% [markdown]
# ## 15. [sharpen] Q4 — reconstructing with a multislice forward model
#
# > *"For the sake of argument, let's say that our goal is to use more accurate forward models
# > (multislice based, …) instead of projection. In practice, how would one go about doing 3D
# > reconstruction with these more accurate forward models? What would be the computational
# > bottlenecks in doing so?"*
#
# Projection makes reconstruction *linear*: by the slice theorem each image fills a central
# slice of the 3D transform, and back-projection plus a weight division (RELION's M-step) solves
# it in closed form. Multislice is neither linear nor a slice, so the map must be fitted by
# **gradient descent** on `Σ_i ‖image_i − multislice(R_i V)‖²` (autograd through the slices —
# `cryolab.physics` is differentiable), starting from a projection-based map; or the cheaper
# middle way, keeping linearity but not the projection (section 13's "linear + propagation":
# Ewald-sphere correction, which inserts each image's two Friedel halves on curved shells).
# Costs per image, measured here (96³ map, 4 Å slices):
#
# * a **central slice**: a fraction of a millisecond (2D sample of the 3D transform);
# * a **multislice** image: one 2D FFT pair per slice plus band-limiting — ~24 slices here, N/Δz
#   in general;
# * its **gradient**: about twice the forward pass, and memory for every slice's wave (autograd);
# * and first the map must be **rotated** into each view in real space (no Fourier shortcut): a
#   3D resampling, here timed as `project_real`, which samples as many points — the dominant cost.
#
# Per pose and per iteration that is 10²–10³ × the projection cost, over millions of images and
# many poses each (the E-step's search): why practical methods keep projection plus corrections.

# %%
thin_volume = potential.clone().requires_grad_(True)
t_multi = best_time(lambda: ph.multislice_image(potential, ctf(DF), PIX, SLICE_A), repeat=3)


def forward_backward():
    thin_volume.grad = None
    (ph.multislice_image(thin_volume, ctf(DF), PIX, SLICE_A) ** 2).sum().backward()


t_grad = best_time(forward_backward, repeat=2)
n_slices = N // int(SLICE_A / PIX)
wave_memory_MB = n_slices * N * N * 16 / 2**20
print(f"per image: central slice {1e3 * t_slice:.2f} ms | multislice ({n_slices} slices) {1e3 * t_multi:.1f} ms | "
      f"forward + gradient {1e3 * t_grad:.1f} ms | rotating the map (≈ project_real) {1e3 * t_real:.0f} ms")
print(f"multislice / slice: ×{t_multi / t_slice:.0f}; with the rotation: ×{(t_real + t_grad) / t_slice:.0f}; "
      f"waves kept for the gradient: {wave_memory_MB:.1f} MB per image (256³ map, 1 Å slices: {256 * 256 * 256 * 16 / 2**20:.0f} MB)")

# %%
assert thin_volume.grad is not None and float(thin_volume.grad.abs().sum()) > 0, "multislice is differentiable"
assert t_multi > 5 * t_slice, "multislice costs far more than a central slice"
assert t_grad > t_multi and t_real > t_multi

# %%
elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300, "budget: < 60 s on 2 idle cores; this guard only catches blow-ups"
