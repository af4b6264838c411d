# %% [markdown]
# # 01 — The Fourier transform
#
# Study-group sessions **3 Dec 2020 (blur)** and **10 Dec 2020 (sharpen)**, "Fourier Transform".
#
# Every question of those sessions is answered here by a computation, and every section ends in
# assertions, so this notebook is also a test (`tests/test_notebooks.py` runs it).
# Run it with `python notebooks/01_fourier_transform.py`; figures go to `$CRYOLAB_NOTEBOOK_OUT`
# (default: the current folder).
#
# cryolab's conventions (docs/conventions.md) that matter here:
#
# * forward transforms are **unnormalised**, `X[k] = Σ_n x[n] exp(-2πi k n / N)`; the inverse
#   divides by N (numpy/torch "backward" norm);
# * real-space data are **centred at index N//2**; `rfft_centered` applies `ifftshift` first, so
#   an object symmetric about N//2 has a real transform;
# * frequencies: "fftfreq" is cycles/pixel in [-0.5, 0.5); in physical units `k = fftfreq / pixel_size_A`
#   (1/Å) and **resolution in Å = pixel_size_A / fftfreq**. Fourier shell `s` of an N-pixel box
#   is the frequency `s / (N · pixel_size_A)` 1/Å.
#
# Streams: paragraphs marked **[blur]** build intuition; **[sharpen]** ones go into numerics.

# %%
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cryolab.fourier as cf
from cryolab.atoms import builtin_model, project_atoms
from cryolab.io import read_mrc, write_mrc
from cryolab.interpolate import sample_grid_3d
from cryolab.plot import add_resolution_axis, centred_extent
from cryolab.report import plt, save_figure
from cryolab.rotations import relion_euler_to_matrix
from cryolab.lab import best_time, notebook_output_dir

OUT = notebook_output_dir()
torch.manual_seed(0)
# One thread: the timings below then compare algorithms, not thread scheduling on a busy machine.
torch.set_num_threads(1)
T_START = time.perf_counter()


# %% [markdown]
# ## 1. The DFT by hand, the DFT as a matrix, and the FFT
#
# > *[sharpen] "Sample a simple function … use some library to compute the FFT. Then compute the
# > DFT in your own implementation. How close is the error?"*
#
# The DFT is just a sum: `X[k] = Σ_n x[n] exp(-2πi k n / N)`. Below it is written out as two
# Python loops, then as the matrix product of `cryolab.fourier.dft_1d` (`X = W x` with
# `W[k, n] = exp(-2πi k n / N)`, built in float64), and compared with `torch.fft.fft`.

# %%
def dft_by_hand(x):
    """The definition, literally: O(N²) complex multiply-adds in pure Python (teaching only)."""
    n_samples = len(x)
    out = []
    for k in range(n_samples):
        total = 0.0 + 0.0j
        for n in range(n_samples):
            total += x[n] * complex(math.cos(-2 * math.pi * k * n / n_samples), math.sin(-2 * math.pi * k * n / n_samples))
        out.append(total)
    return np.array(out)


N = 64
x_axis = np.arange(N) - N // 2  # pixel coordinates, origin at N//2 (cryolab convention)
signal = np.exp(-np.pi * (x_axis / 6.0) ** 2) + 0.3 * np.cos(2 * np.pi * 5 * x_axis / N)

by_hand = dft_by_hand(signal)
by_matrix = cf.dft_1d(torch.tensor(signal)).numpy()  # float64 inside, complex64 out
by_fft64 = torch.fft.fft(torch.tensor(signal, dtype=torch.float64)).numpy()
by_fft32 = torch.fft.fft(torch.tensor(signal, dtype=torch.float32)).numpy()

scale = np.abs(by_fft64).max()
err_hand = np.abs(by_hand - by_fft64).max() / scale
err_matrix = np.abs(by_matrix - by_fft64).max() / scale
err_fft32 = np.abs(by_fft32 - by_fft64).max() / scale
print(f"max |DFT_by_hand - FFT64| / max|X| = {err_hand:.1e}   (float64 sums: ~1e-15)")
print(f"max |dft_1d      - FFT64| / max|X| = {err_matrix:.1e}   (complex64 output: ~1e-7)")
print(f"max |FFT32       - FFT64| / max|X| = {err_fft32:.1e}   (float32 eps = {np.finfo(np.float32).eps:.1e})")

# %% [markdown]
# The three agree to the **working precision**: ~1e-15 relative in float64, ~1e-7 in float32
# (float32's machine epsilon is 1.2e-7). The FFT is not an approximation of the DFT — it is
# the same sum, reorganised. Its rounding error grows only like `ε · log N` (each output passes
# through log₂N butterfly stages), which is why float32 FFTs are fine for cryo-EM images.
#
# > *"What was the speedup of the FFT, and how does this compare to the theoretical limit?"*
#
# The DFT as a matrix product costs N² complex multiply-adds per transform, the FFT about
# `(N/2) log₂N` butterflies (5 N log₂N flops): the theoretical ratio is of order `N / log₂N`.

# %%
sizes = [128, 256, 512, 1024, 2048]
batch = torch.randn(32, sizes[-1], dtype=torch.float64)
t_dft, t_fft = [], []
for n in sizes:
    w = cf.dft_matrix(n, dtype=torch.complex128)  # build once; time only the O(N²) product
    xb = batch[:, :n].to(torch.complex128)
    t_dft.append(best_time(lambda: xb @ w.T, repeat=3))
    t_fft.append(best_time(lambda: torch.fft.fft(xb), repeat=5))
speedup = np.array(t_dft) / np.array(t_fft)
for n, a, b, s in zip(sizes, t_dft, t_fft, speedup):
    print(f"N = {n:5d}: DFT (matrix) {a * 1e3:8.2f} ms   FFT {b * 1e3:6.3f} ms   speed-up {s:7.1f}   N/log2N = {n / math.log2(n):6.1f}")

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.loglog(sizes, np.array(t_dft) * 1e3, "o-", label="DFT as matrix product, O(N²)")
ax.loglog(sizes, np.array(t_fft) * 1e3, "s-", label="torch.fft.fft, O(N log N)")
ax.minorticks_off()
ax.set_xticks(sizes, [str(n) for n in sizes])
ax.set_xlabel("transform length N (samples)")
ax.set_ylabel("time for 32 transforms (ms)")
ax.set_title("DFT vs FFT (float64, 32 signals)")
ax.legend(fontsize=8)
save_figure(fig, OUT / "01_dft_vs_fft_timing.png")

# %% [markdown]
# The measured speed-up grows like `N / log₂N` (it doubles each time N doubles) but stays a
# factor ~2 below it: the constants differ — an optimised BLAS matrix product runs near peak
# flops, while the FFT does ~5 N log₂N flops with strided memory access — and the DFT here
# even excludes building the matrix. Asymptotics predict the *trend*, not the constant.

# %%
assert err_hand < 1e-12, "a float64 DFT must equal the float64 FFT to rounding"
assert err_matrix < 1e-6 and err_fft32 < 1e-6, "float32/complex64 results agree to ~1e-7"
assert speedup[-1] > 5 and speedup[-1] > speedup[0], "the FFT wins, and wins more for larger N"

# %% [markdown]
# ## 2. Continuous vs discrete: a Gaussian transforms into a Gaussian
#
# > *"Work out the solution analytically for the continuous case. What should the answer be at
# > some discrete points according to the continuous case, and how is it different from what the
# > FFT gave?"* — and [blur] *"a narrower function of x transforms into a broader function of u.
# > Examples? What happens when you change magnification?"*
#
# With the convention `F(u) = ∫ f(x) exp(-2πi u x) dx`,
#
# `f(x) = exp(-π x² / s²)  ⟶  F(u) = s · exp(-π s² u²)`:
#
# a Gaussian of width `s` Å becomes a Gaussian of width `1/s` Å⁻¹ (the **scale theorem**,
# `f(x/a) ⟶ |a| F(a u)`). Sampling `f` every Δ Å turns the integral into a Riemann sum, so at
# the DFT frequencies `u_k = k / (N Δ)` we expect `F(u_k) ≈ Δ · X[k]` where `X = rfft_centered(f)`
# (the centring puts x = 0 on pixel N//2, so there is no phase ramp and X is real).
# Two things break the equality: **aliasing** (Poisson summation: the DFT sees
# `Σ_m F(u + m/Δ)`, harmless only if F has died out by Nyquist, `1/(2Δ)`) and **truncation**
# (the box cuts f off at ±NΔ/2).

# %%
pixel_A, n_box = 1.0, 128
x_A = (torch.arange(n_box) - n_box // 2) * pixel_A
u = torch.fft.rfftfreq(n_box, d=pixel_A)  # 1/Å, the rfft frequencies of cryolab's layout
cases = {"well sampled (s = 8 Å)": 8.0, "under-sampled (s = 1 Å)": 1.0, "truncated (s = 90 Å)": 90.0}
errors_continuous, nyquist_ratio = {}, {}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for ax, (label, s) in zip(axes, cases.items()):
    f = torch.exp(-math.pi * (x_A / s) ** 2)
    discrete = pixel_A * cf.rfft_centered(f, ndim=1)  # Δ · X[k]
    analytic = s * torch.exp(-math.pi * (s * u) ** 2)
    errors_continuous[s] = float((discrete.real - analytic).abs().max() / analytic.abs().max())
    nyquist_ratio[s] = float(discrete.real[-1] / analytic[-1])
    assert float(discrete.imag.abs().max()) < 1e-4 * float(discrete.abs().max()), "centred symmetric → real"
    u_fine = torch.linspace(0, float(u[-1]), 2000)
    ax.plot(u_fine, s * torch.exp(-math.pi * (s * u_fine) ** 2), "k-", lw=2, label="continuous  s·exp(-π s² u²)")
    ax.plot(u, discrete.real, "r.", ms=4, label="Δ · rfft_centered(samples)")
    ax.set_title(f"{label}\nmax rel. error {errors_continuous[s]:.1e}", fontsize=9)
    ax.set_xlabel("spatial frequency u (1/Å)")
    if s == 90.0:
        ax.set_xlim(0, 0.05)
axes[0].set_ylabel("F(u) (Å)")
axes[0].legend(fontsize=7)
fig.tight_layout()
save_figure(fig, OUT / "01_gaussian_continuous_vs_discrete.png")
for s, e in errors_continuous.items():
    print(f"s = {s:5.1f} Å: max relative error of the DFT against the continuous transform = {e:.1e}")

# %% [markdown]
# * s = 8 Å: the error is float32 rounding (~1e-7) — the Gaussian has vanished both at Nyquist
#   (`F(0.5) ∝ exp(-π·16) ≈ 1e-22`) and at the box edge.
# * s = 1 Å: the Gaussian in Fourier space is still 46 % of its peak at Nyquist; the DFT adds its
#   aliased copies `F(u ± 1/Δ)` and is too large everywhere — at Nyquist exactly twice too large,
#   because the copy centred at 1/Δ = 1 Å⁻¹ contributes as much there as the original. This is
#   what under-sampling does: frequencies beyond Nyquist fold back onto the ones below it.
# * s = 90 Å: the box (128 Å) truncates the function; the sampled spectrum ripples around the
#   analytic one (a truncation is a multiplication by a box, i.e. convolution with a sinc).
#
# **Narrow ⟷ broad in practice [blur].** A sharp atom (small B-factor) has a broad transform
# (high-resolution signal); a blurred map (large B) has a narrow one. A particle of diameter D
# has Fourier features ~1/D wide, which is why a box of size ≳ 2D samples its transform finely
# enough. **Magnification** only sets the pixel size: the same particle imaged at twice the
# magnification covers twice as many pixels, so in *cycles/pixel* its transform shrinks by two —
# but in *1/Å* nothing changes (checked in section 4).

# %%
assert errors_continuous[8.0] < 1e-5
assert errors_continuous[1.0] > 1e-2, "under-sampling must show up as aliasing error"
assert abs(nyquist_ratio[1.0] - 2.0) < 0.01, "at Nyquist the first aliased copy doubles the value"
assert errors_continuous[90.0] > 1e-3, "truncation by the box must show up"
# scale theorem: doubling the width halves the width of the transform (1/e point of F at 1/(s√π))
for s in (4.0, 8.0):
    f = torch.exp(-math.pi * (x_A / s) ** 2)
    spectrum = cf.rfft_centered(f, ndim=1).real
    half_width = float(np.interp(np.exp(-1), spectrum.numpy()[::-1] / float(spectrum[0]), u.numpy()[::-1]))
    assert abs(half_width - 1 / (s * math.sqrt(math.pi))) < 2e-3, (s, half_width)

# %% [markdown]
# ## 3. Frequency bins in Å: the 128 Å box question
#
# > *[blur] "128 Å box, pixel 1 Å. What is the spacing between bins in Fourier space …? What
# > length ranges do the first few and last few frequency bins correspond to? How many frequency
# > bins are between 10 and 5 Å, versus 5 and 2.5 Å?"*
#
# Bin spacing = 1 / (box size in Å) = 1/128 Å⁻¹. Bin (shell) `s` is at `s/128` Å⁻¹, i.e. a
# resolution of `128/s` Å (`cryolab.fourier.shell_to_resolution_A`). The hint's intervals
# `[s/128, (s+1)/128)` correspond to the length ranges `(128/s, 128/(s+1)]` Å:

# %%
box_A, pixel_A = 128, 1.0
n_box = int(box_A / pixel_A)
spacing = float(cf.shell_to_frequency(1, n_box, pixel_A))
print(f"bin spacing = {spacing:.6f} 1/Å = 1/{1 / spacing:.0f} Å")
rows = list(range(0, 4)) + list(range(n_box // 2 - 3, n_box // 2))
for s in rows:
    hi = float(cf.shell_to_resolution_A(s, n_box, pixel_A))
    lo = float(cf.shell_to_resolution_A(s + 1, n_box, pixel_A))
    print(f"bin [{s:2d}/128, {s + 1:2d}/128) 1/Å  ↔  lengths ({hi:7.2f}, {lo:6.2f}] Å")
shells = torch.arange(n_box // 2 + 1)
res = cf.shell_to_resolution_A(shells, n_box, pixel_A)
n_10_to_5 = int(((res <= 10) & (res >= 5)).sum())
n_5_to_2p5 = int(((res <= 5) & (res >= 2.5)).sum())
print(f"shells with resolution between 10 and 5 Å: {n_10_to_5}; between 5 and 2.5 Å: {n_5_to_2p5}")
print("fractional shell of 10, 5, 2.5 Å:", cf.resolution_A_to_shell(torch.tensor([10.0, 5.0, 2.5]), n_box, pixel_A).tolist())

# %% [markdown]
# The first bin beyond DC already spans 128 → 64 Å; the last one spans 2.03 → 2.00 Å
# (Nyquist, 2 × pixel). Bins are **uniform in frequency, not in length**: 10 → 5 Å is the
# frequency range 0.1 → 0.2 Å⁻¹ (shells 12.8 → 25.6, 13 shells), and 5 → 2.5 Å is 0.2 → 0.4 Å⁻¹
# (shells 25.6 → 51.2, 26 shells) — twice as many. In 2D the number of Fourier *pixels* in a
# shell grows like 2πs, in 3D like 4πs², so high resolution is where almost all the Fourier
# coefficients (and the noise, and the computing) are. Note cryolab's shells are centred on
# `s/N` (`round(|k| N)`, RELION's FSC shells), not the half-open `[s, s+1)` of the hint.

# %%
assert spacing == 1 / 128
assert abs(float(cf.shell_to_resolution_A(1, n_box, pixel_A)) - 128) < 1e-4
assert abs(float(cf.shell_to_resolution_A(n_box // 2, n_box, pixel_A)) - 2 * pixel_A) < 1e-6, "Nyquist = 2 pixels"
assert n_10_to_5 == 13 and n_5_to_2p5 == 26

# %% [markdown]
# ## 4. Reciprocal space of a real projection, and what the centre pixel means
#
# A projection of adenylate kinase (built-in atomic model, 3341 atoms) — the projected Coulomb
# potential in V·Å, at 1 Å/pixel in a 128 Å box. We display `log |F|` of its transform centred
# with `fftshift` so that the zero frequency sits at index N//2, the same rule as real space.

# %%
model = builtin_model("adk_open")
pixel_A, n_box = 1.0, 128
views = relion_euler_to_matrix(torch.tensor([[0.0, 0.0, 0.0], [0.0, 90.0, 0.0]]))
proj = project_atoms(model, views, n_box, pixel_A)  # (2, N, N) V·Å
image = proj[0]
spectrum = cf.rfft_centered(image, ndim=2)  # unshifted rfft layout (N, N//2+1)
full = cf.fft_centered(image, ndim=2)  # full layout (N, N)
full_shifted = cf.fftshift(full, ndim=2)  # zero frequency at index N//2
extent_x = centred_extent(n_box, pixel_A)  # Å
extent_k = centred_extent(n_box, 1 / (n_box * pixel_A))  # 1/Å: fftshift puts k = 0 at N//2 too

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
axes[0].imshow(image, cmap="gray", origin="lower", extent=extent_x)
axes[0].set_title("projection of ADK (V·Å)")
axes[0].set_xlabel("x (Å)")
axes[0].set_ylabel("y (Å)")
axes[1].imshow(torch.log10(full_shifted.abs() + 1e-3), cmap="magma", origin="lower", extent=extent_k)
axes[1].set_title("log10 |F|, centred (fftshift)")
axes[1].set_xlabel("kx (1/Å)")
axes[1].set_ylabel("ky (1/Å)")
axes[2].imshow(torch.angle(full_shifted), cmap="twilight", origin="lower", extent=extent_k)
axes[2].set_title("phase of F (rad)")
axes[2].set_xlabel("kx (1/Å)")
fig.tight_layout()
save_figure(fig, OUT / "01_adk_reciprocal_space.png")

dc = spectrum[0, 0]
print(f"F(0) = {dc.real:.1f} + {dc.imag:.1e}i;  sum of all pixels = {image.sum():.1f} V·Å")
print(f"centre pixel of the fftshifted |F| (index {n_box // 2},{n_box // 2}) = {full_shifted[n_box // 2, n_box // 2].abs():.1f}")

# %% [markdown]
# * **The centre pixel** of a centred spectrum is the zero frequency: `F(0) = Σ_n x[n]`, the
#   total projected potential (times the pixel area, 1 Å², it is the integral in V·Å³). It is
#   the largest coefficient by far — which is why spectra are shown on a log scale — and it only
#   sets the image's mean: subtracting the mean sets it to 0 and changes nothing else.
# * The **amplitude** falls off with frequency (atoms are smooth blobs, B-factors damp them); the
#   **phase** looks like noise — yet, as section 6 shows, it carries most of the structure.
# * The centring rule matters: the same image transformed without `ifftshift` (plain `rfft2`)
#   is the transform of an object whose origin is at pixel 0, i.e. shifted by N/2; the shift
#   theorem (section 5) multiplies every coefficient by `exp(-iπ(kx+ky)) = (-1)^(kx+ky)`, a
#   checkerboard of signs.

# %%
blob = torch.exp(-((torch.arange(n_box) - n_box // 2) ** 2)[:, None] / 50.0 - ((torch.arange(n_box) - n_box // 2) ** 2)[None, :] / 50.0)
centred = cf.rfft_centered(blob, ndim=2)
plain = torch.fft.rfft2(blob)
ky_idx = torch.arange(n_box)[:, None]
kx_idx = torch.arange(n_box // 2 + 1)[None, :]
checkerboard = (-1.0) ** (ky_idx + kx_idx)
assert torch.allclose(dc.real, image.sum(), rtol=1e-5) and abs(float(dc.imag)) < 1e-3
assert float(full_shifted.abs().argmax()) == (n_box // 2) * n_box + n_box // 2, "DC is the largest, at index N//2"
assert float(centred.imag.abs().max()) < 1e-4 * float(centred.abs().max()), "symmetric about N//2 → real transform"
assert torch.allclose(plain, centred * checkerboard, atol=1e-3), "no ifftshift → (-1)^(kx+ky) phase"

# %% [markdown]
# ### Magnification changes cycles/pixel, not 1/Å
#
# Project the same particle at 1 Å/pixel (128-pixel box) and at 2 Å/pixel (64-pixel box), so
# both boxes are 128 Å wide, and compare their radially averaged power spectra
# (`radial_average` over the integer shells). Against shell index (cycles per box) — and
# therefore against 1/Å — the curves coincide below the coarser Nyquist; in cycles/pixel they
# differ by the factor 2 of the magnification.

# %%
coarse = project_atoms(model, views[0], 64, 2.0)
profiles = {}
for img, p in ((image, 1.0), (coarse, 2.0)):
    n = img.shape[-1]
    power = cf.rfft_centered(img, ndim=2).abs() ** 2
    # the transform of samples is a Riemann sum: (pixel area) × DFT estimates the continuous FT
    profiles[p] = cf.radial_average(power * p**4, (n, n))
fig, ax = plt.subplots(figsize=(5.5, 3.6))
for p, prof in profiles.items():
    n = len(prof)
    k_per_A = cf.shell_to_frequency(torch.arange(n), 2 * (n - 1), p)
    ax.semilogy(k_per_A[1:], prof[1:], "o-" if p == 2.0 else "-", ms=3, label=f"{p:g} Å/pixel, {2 * (n - 1)}-pixel box")
ax.set_xlabel("spatial frequency (1/Å)")
ax.set_ylabel("radial power (pixel-area scaled)")
ax.legend(fontsize=8)
add_resolution_axis(ax)
save_figure(fig, OUT / "01_same_particle_two_pixel_sizes.png")

shared = torch.arange(1, 24)  # shells up to ~5.6 Å, well below the coarse Nyquist (4 Å)
ratio = profiles[2.0][shared] / profiles[1.0][shared]
print("power(2 Å/px) / power(1 Å/px) in shells 1..23:", np.round(ratio.numpy(), 2))
# the 2 Å pixels average the potential over 2×2 Å, a box filter: sinc² damping grows with k
assert torch.all((ratio > 0.6) & (ratio < 1.15)), "same spectrum in 1/Å at both magnifications"

# %% [markdown]
# The two curves agree in 1/Å; the slow drop of the 2 Å/pixel curve towards its Nyquist (4 Å)
# is the pixel itself: `project_atoms` averages the potential over each pixel, a 2 Å box filter
# whose transform `sinc²` damps high frequencies — a detector's MTF does the same to real data.

# %% [markdown]
# ## 5. Linearity, shift and the phase ramp
#
# > *[blur] "Prove the linearity, scale, shift, convolution properties of the FT in 1D."*
#
# Proofs (one line each, for `F(u) = ∫ f(x) e^{-2πiux} dx`):
#
# * **linearity** — the integral is linear: `∫(a f + b g) e^{…} = a F + b G`;
# * **scale** — substitute `x' = x/a`: `∫ f(x/a) e^{-2πiux} dx = |a| ∫ f(x') e^{-2πi(au)x'} dx' = |a| F(au)`;
# * **shift** — substitute `x' = x - x₀`: `∫ f(x - x₀) e^{-2πiux} dx = e^{-2πiux₀} F(u)`,
#   a *phase ramp* of slope `-2π x₀` and no change of amplitude;
# * **convolution** — `∫∫ f(t) g(x-t) dt e^{-2πiux} dx`; substitute `x' = x - t`: the double
#   integral factors into `F(u) G(u)` (notebook 02 works with it).
#
# The same holds for the DFT with sums. Numerically: `fourier_shift` multiplies the rfft by
# `phase_ramp_rfft`; for an integer shift that is exactly `torch.roll`, for a fractional one it
# is band-limited (sinc) interpolation.

# %%
a_img, b_img = proj[0], proj[1]
lin_err = (cf.rfft_centered(2.0 * a_img - 0.5 * b_img, ndim=2) - (2.0 * cf.rfft_centered(a_img, ndim=2) - 0.5 * cf.rfft_centered(b_img, ndim=2))).abs().max()
assert lin_err < 1e-3 * float(cf.rfft_centered(a_img, ndim=2).abs().max()), "linearity"

shift_xy = torch.tensor([5.0, -3.0])  # pixels, (x, y) order
shifted = cf.fourier_shift(image, shift_xy)
rolled = torch.roll(image, shifts=(-3, 5), dims=(-2, -1))  # roll takes (rows=y, cols=x)
assert torch.allclose(shifted, rolled, atol=1e-3 * float(image.max())), "integer shift = roll"

frac = cf.fourier_shift(image, torch.tensor([2.5, 0.0]))
f0, f1 = cf.rfft_centered(image, ndim=2), cf.rfft_centered(frac, ndim=2)
strong = f0.abs() > 1e-3 * f0.abs().max()
strong[n_box // 2, :] = False  # Nyquist row and column: see below
strong[:, n_box // 2] = False
assert torch.allclose(f1.abs()[strong], f0.abs()[strong], rtol=1e-3), "a shift leaves every amplitude unchanged"
nyquist_factor = float((f1[0, n_box // 2] / f0[0, n_box // 2]).abs())
assert nyquist_factor < 1e-3, "half-pixel shift: the real Nyquist term cos(π s) vanishes"
# along the kx axis (ky = 0) the phase difference is the ramp -2π kx s / N
kx = torch.arange(1, 20)
dphi = torch.angle(f1[0, kx] / f0[0, kx])
expected = torch.remainder(-2 * math.pi * kx * 2.5 / n_box + math.pi, 2 * math.pi) - math.pi
assert torch.allclose(dphi, expected, atol=1e-3), "phase difference = -2π k·s / N"
print("shift theorem checked: integer shift == roll, amplitudes unchanged, phase ramp slope -2π s/N")
print(f"|F_shifted / F| at the Nyquist column for a 2.5-pixel shift: {nyquist_factor:.1e}")

# %% [markdown]
# One subtlety for even N: the Nyquist frequency +N/2 and -N/2 are the same sample, so the
# ramp `exp(∓iπ s)` cannot be applied to it and keep the image real. `phase_ramp_rfft` uses its
# real part `cos(π s)` there (shifting the real trigonometric interpolant): for a half-integer
# shift the Nyquist coefficients become exactly 0. Any sub-pixel shift of a real, even-sized
# image loses (or damps) the Nyquist term — one more reason not to trust the last Fourier shell.

# %% [markdown]
# ## 6. Amplitudes vs phases: the swap experiment
#
# Take the **amplitudes of image A** (top view of ADK) and the **phases of image B** (side
# view), and transform back. Which image do you see? We measure it with the correlation
# coefficient against A and against B.

# %%
def corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


fa, fb = cf.rfft_centered(a_img, ndim=2), cf.rfft_centered(b_img, ndim=2)
amp_a_phase_b = cf.irfft_centered(fa.abs() * torch.exp(1j * torch.angle(fb)), (n_box, n_box))
amp_b_phase_a = cf.irfft_centered(fb.abs() * torch.exp(1j * torch.angle(fa)), (n_box, n_box))
# and: keep all amplitudes, randomise phases beyond 10 Å (the FSC "noise substitution" test)
randomised = cf.randomize_phases_beyond(a_img, ndim=2, resolution_A=10.0, pixel_size_A=pixel_A, generator=1)

c_ab = (corr(amp_a_phase_b, a_img), corr(amp_a_phase_b, b_img))
c_ba = (corr(amp_b_phase_a, a_img), corr(amp_b_phase_a, b_img))
print(f"|F_A| with phase(F_B): corr with A = {c_ab[0]:.2f}, with B = {c_ab[1]:.2f}")
print(f"|F_B| with phase(F_A): corr with A = {c_ba[0]:.2f}, with B = {c_ba[1]:.2f}")
print(f"phases randomised beyond 10 Å: corr with A = {corr(randomised, a_img):.2f}")

fig, axes = plt.subplots(1, 5, figsize=(14, 3.1))
panels = [
    (a_img, "A: top view"),
    (b_img, "B: side view"),
    (amp_a_phase_b, "|F_A|, phase of F_B"),
    (amp_b_phase_a, "|F_B|, phase of F_A"),
    (randomised, "A, phases random\nbeyond 10 Å"),
]
for ax, (img, title) in zip(axes, panels):
    ax.imshow(img, cmap="gray", origin="lower", extent=extent_x)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (Å)")
axes[0].set_ylabel("y (Å)")
fig.tight_layout()
save_figure(fig, OUT / "01_amplitude_phase_swap.png")

# %% [markdown]
# The image follows its **phases**: the phases say *where* each wave's crests are, i.e. where
# the edges and densities lie; the amplitudes only say how strong each frequency is, and the
# amplitude spectra of most compact particles look alike (a smooth fall-off). This is why:
#
# * an FSC measures the agreement of phases (and amplitudes) shell by shell, and randomising
#   phases beyond a resolution destroys the detail there while keeping the power spectrum
#   (`randomize_phases_beyond`: the amplitudes above are *identical*, the image is not);
# * the CTF's sign flips (a phase error of π) must be corrected, whereas amplitude errors merely
#   weight the frequencies.

# %%
assert c_ab[1] > c_ab[0] and c_ba[0] > c_ba[1], "the swapped image looks like its phase donor"
assert torch.allclose(cf.rfft_centered(randomised, ndim=2).abs(), fa.abs(), rtol=1e-3, atol=1e-2), "amplitudes kept"
assert corr(randomised, a_img) < 0.999

# %% [markdown]
# ## 7. Real-to-complex transforms and Hermitian symmetry; Parseval
#
# A real image has a **Hermitian** transform, `F(-k) = conj F(k)`: half of the spectrum is
# redundant. `rfft` stores only `kx ≥ 0`: `N × (N//2 + 1)` complex numbers instead of `N × N`,
# half the memory and about half the work. Only the self-conjugate samples — `(0, 0)`,
# `(0, N/2)`, `(N/2, 0)`, `(N/2, N/2)` for even N — must be real.
#
# **Parseval**: with the unnormalised forward transform, `Σ|x|² = (1/N²) Σ_k |F(k)|²` over the
# *full* spectrum. On the rfft half-plane every column except `kx = 0` and `kx = N/2` stands for
# two coefficients and must be counted twice.

# %%
neg = torch.roll(torch.flip(full, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))  # F(-k) in the unshifted layout
herm_err = float((neg - full.conj()).abs().max() / full.abs().max())
self_conj = full[[0, 0, n_box // 2, n_box // 2], [0, n_box // 2, 0, n_box // 2]]
weights = torch.full((n_box // 2 + 1,), 2.0)
weights[0] = weights[-1] = 1.0
energy_real = float((image.double() ** 2).sum())
energy_full = float((full.abs().double() ** 2).sum() / n_box**2)
energy_rfft = float(((spectrum.abs().double() ** 2) * weights).sum() / n_box**2)
print(f"Hermitian: max |F(-k) - conj F(k)| / max|F| = {herm_err:.1e}")
print(f"rfft shape {tuple(spectrum.shape)} vs full {tuple(full.shape)}: {spectrum.numel() / full.numel():.3f} of the numbers")
print(f"Parseval: Σx² = {energy_real:.6e}; Σ|F|²/N² full = {energy_full:.6e}; rfft weighted = {energy_rfft:.6e}")
roundtrip = cf.irfft_centered(spectrum, (n_box, n_box))

# irfft assumes Hermitian input: an imaginary part at a self-conjugate sample is silently dropped
corrupted = spectrum.clone()
corrupted[0, 0] += 1000j
dropped = float((cf.irfft_centered(corrupted, (n_box, n_box)) - roundtrip).abs().max())
print(f"adding 1000i to F(0) changes the irfft by {dropped:.1e}: non-Hermitian input is silently projected")

# %%
assert herm_err < 1e-5
assert float(self_conj.imag.abs().max()) < 1e-3 * float(full.abs().max()), "self-conjugate samples are real"
assert spectrum.shape == (n_box, n_box // 2 + 1)
assert abs(energy_full - energy_real) < 1e-5 * energy_real and abs(energy_rfft - energy_real) < 1e-5 * energy_real
assert torch.allclose(roundtrip, image, atol=1e-4 * float(image.abs().max())), "irfft_centered inverts rfft_centered"
assert dropped < 1e-3

# %% [markdown]
# ## 8. [sharpen] How long do FFTs take, and what else costs time?
#
# > *"In practice, how long are FFTs taking (2D and 3D)? How does this compare with other
# > computational bottlenecks like disk I/O and interpolation?"* and *"What are some numerical
# > issues or bottlenecks that can arise when using an implementation of the FFT in practice?"*
#
# Timed below on this machine (CPU; numbers are indicative — rerun to see yours): a batch of
# 2D particle images, a 3D map, reading/writing the same map as an MRC file, and trilinear
# interpolation of central slices from a 3D Fourier table (what a projector does).

# %%
timings = {}
images_2d = torch.randn(256, 128, 128)
timings["rfft2 of 256 images 128²"] = best_time(lambda: torch.fft.rfft2(images_2d), repeat=3)
volume = torch.randn(128, 128, 128)
timings["rfftn of a 128³ map"] = best_time(lambda: torch.fft.rfftn(volume), repeat=3)
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "map.mrc"
    timings["write 128³ MRC (8 MB)"] = best_time(lambda: write_mrc(path, volume.numpy(), 1.0), repeat=3)
    timings["read 128³ MRC (page cache)"] = best_time(lambda: read_mrc(path), repeat=3)
table = torch.randn(128, 128, 128, dtype=torch.complex64)
slice_coords = torch.rand(64, 128 * 65, 3) * 127  # 64 slices of an rfft image, (x, y, z) table coordinates
timings["trilinear sampling, 64 slices 128×65"] = best_time(lambda: sample_grid_3d(table, slice_coords), repeat=3)
for name, t in timings.items():
    print(f"{name:40s} {t * 1e3:8.1f} ms")

# sizes with a large prime factor are slower than smooth ones (2·3·5-smooth sizes are fastest)
t_smooth = best_time(lambda: torch.fft.fft(torch.randn(64, 4096)), repeat=5)
t_prime = best_time(lambda: torch.fft.fft(torch.randn(64, 4099)), repeat=5)
print(f"FFT length 4096 = 2^12: {t_smooth * 1e3:.2f} ms; length 4099 (prime): {t_prime * 1e3:.2f} ms")

# float32 error grows slowly with N (≈ ε log N), not like N
err_by_n = {}
for n in (64, 4096, 262144):
    xs = torch.randn(n, dtype=torch.float64)
    exact = torch.fft.fft(xs)
    err_by_n[n] = float((torch.fft.fft(xs.float()).to(torch.complex128) - exact).abs().max() / exact.abs().max())
print("float32 FFT relative error by N:", {k: f"{v:.1e}" for k, v in err_by_n.items()})

# %% [markdown]
# What the numbers say (typical for a CPU; a GPU is 10–100× faster for the FFTs):
#
# * A 2D FFT of a 128² particle image takes tens of microseconds; a 3D FFT of a 128³ map
#   about ten milliseconds. In refinement the FFTs are rarely the bottleneck: **interpolation** (8 random
#   memory reads per trilinear sample, for every pixel of every projection at every pose) and
#   **disk I/O** of particle stacks (hundreds of GB read every iteration; the MRC timing above
#   is from the operating system's cache, a cold disk is 10–100× slower) dominate.
# * Numerical issues and their remedies: transform lengths with large prime factors are slower
#   (pad to a 2·3·5-smooth size, as `fft_convolve` does); the DFT is periodic, so anything that
#   leaves one edge re-enters at the other (pad before filtering or convolving, notebook 02);
#   the DC term is orders of magnitude larger than the rest (display on a log scale, subtract
#   the mean); float32 rounding grows only like `ε log N`; `irfft` silently assumes a Hermitian
#   input (section 7), so a spectrum edited carelessly is quietly changed; for huge N the
#   phase `2π k n / N` itself must be reduced modulo N in integers before going to floating
#   point (`cryolab.fourier.dft_matrix` does this).

# %%
assert timings["rfftn of a 128³ map"] < 5.0
assert all(t > 0 for t in timings.values())
assert err_by_n[262144] < 1e-5, "float32 FFT error stays near ε·log N even for 2^18 samples"
elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300, "budget: < 60 s on 2 idle cores; this guard only catches blow-ups"
