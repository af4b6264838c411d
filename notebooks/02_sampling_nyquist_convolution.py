# %% [markdown]
# # 02 — Convolution, sampling, Nyquist
#
# Study-group sessions **17 Dec 2020 (blur)** and **7 Jan 2021 (sharpen)**, "Convolution,
# Sampling, Nyquist". Each question is quoted, then answered by computing; each section ends in
# assertions that check what the text claims (`tests/test_notebooks.py` runs this file).
#
# Conventions (docs/conventions.md): images `(y, x)` centred at index N//2; forward FFTs
# unnormalised; frequencies in 1/Å, **resolution = pixel_size_A / fftfreq**, Nyquist =
# 1/(2 · pixel_size_A); Fourier shell `s` of an N-pixel box ↔ `N · pixel_size_A / s` Å.
# Library pieces used: `cryolab.fourier` (`fft_convolve`, `apply_filter`, filters,
# `fourier_crop`, `pad_center`/`crop_center`, shells), `cryolab.ctf.ctf_2d`,
# `cryolab.atoms.project_atoms`.

# %%
import dataclasses
import math
import time

import numpy as np
import torch

import cryolab.fourier as cf
from cryolab.atoms import builtin_model, project_atoms
from cryolab.ctf import CTFParams, ctf_2d, electron_wavelength_A
from cryolab.plot import add_resolution_axis, centred_extent
from cryolab.report import plt, save_figure
from cryolab.lab import best_time, notebook_output_dir

OUT = notebook_output_dir()
torch.manual_seed(0)
torch.set_num_threads(1)  # timings compare algorithms, not thread scheduling
T_START = time.perf_counter()


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


# %% [markdown]
# ## 1. The homework problem, commutativity and associativity (1D)
#
# > *[blur] "If g(x) = e^{-π(x-2)²} e^{-π(x+2)²}, what is G(u)?"*
#
# As written it is a **product**. Complete the square: `(x-2)² + (x+2)² = 2x² + 8`, so
# `g(x) = e^{-8π} e^{-2πx²}`, a Gaussian of width `1/√2`, and by the scale theorem
# (`e^{-πx²} ⟷ e^{-πu²}`, `f(ax) ⟷ F(u/a)/|a|`)
#
# `G(u) = e^{-8π} / √2 · e^{-πu²/2}` — tiny (e^{-8π} ≈ 1.2e-11: the two Gaussians barely overlap).
#
# Read as a **convolution** `g = f₁ * f₂` (the lecture's context), the shift theorem gives
# `F₁(u) = e^{-πu²} e^{-4πiu}` and `F₂(u) = e^{-πu²} e^{+4πiu}`: the phase ramps cancel and
# `G(u) = e^{-2πu²}`, i.e. `g(x) = e^{-πx²/2} / √2` centred at 0 — shifts add under convolution.
#
# We check both numerically, sampling at Δ = 0.05 in a box of 1024 samples.

# %%
dx, n = 0.05, 1024
x = (torch.arange(n) - n // 2) * dx
u = torch.fft.rfftfreq(n, d=dx)
f1 = torch.exp(-math.pi * (x - 2) ** 2)
f2 = torch.exp(-math.pi * (x + 2) ** 2)

product = f1 * f2
G_product = dx * cf.rfft_centered(product, ndim=1).real
G_product_analytic = math.exp(-8 * math.pi) / math.sqrt(2) * torch.exp(-math.pi * u**2 / 2)

conv = dx * cf.fft_convolve(f1, f2, mode="same")  # Riemann sum of ∫ f1(t) f2(x - t) dt
conv_analytic = torch.exp(-math.pi * x**2 / 2) / math.sqrt(2)

err_product = float((G_product - G_product_analytic).abs().max() / G_product_analytic.max())
err_conv = float((conv - conv_analytic).abs().max() / conv_analytic.max())
print(f"product:     max rel. error of G(u) against e^(-8π)/√2 · e^(-πu²/2) = {err_product:.1e}")
print(f"convolution: max rel. error of f1*f2 against e^(-πx²/2)/√2         = {err_conv:.1e}")

# %% [markdown]
# > *[blur] "Show explicitly the commutativity of the convolution operator."*
#
# Substitute `s = x - t` in `∫ g(t) h(x-t) dt`: `dt = -ds` and the limits swap, so it equals
# `∫ h(s) g(x-s) ds`. In Fourier space it is just `G·H = H·G`.
#
# > *[sharpen] "Let f_a = e^{-ax²}. Show that f₁ * (f₂ * f₃) = (f₁ * f₂) * f₃."*
#
# Completing the square, `f_a * f_b = √(π/(a+b)) · f_{ab/(a+b)}`: convolving Gaussians adds
# their variances (`1/(2a)`), an associative operation. Both bracketings give
# `(π/√(ab+bc+ca)) · f_{abc/(ab+bc+ca)}`; in Fourier space this is again just
# `F₁(F₂F₃) = (F₁F₂)F₃`.
#
# > *[blur] "Write down the mathematical object that is being visualized [in the animation]."*
#
# `(f * g)(x) = ∫_{-∞}^{+∞} f(t) g(x - t) dt`. One snapshot is one value of x: the kernel
# flipped and slid to x, multiplied point by point with f — the **area** under that product is
# the single output sample at x. Below, that sum is written out by hand for one x.

# %%
def gauss(a):
    return torch.exp(-a * x**2)


a, b, c = 1.0, 2.0, 3.0
left = dx * cf.fft_convolve(gauss(a), dx * cf.fft_convolve(gauss(b), gauss(c), mode="same"), mode="same")
right = dx * cf.fft_convolve(dx * cf.fft_convolve(gauss(a), gauss(b), mode="same"), gauss(c), mode="same")
s = a * b + b * c + c * a
assoc_analytic = math.pi / math.sqrt(s) * torch.exp(-(a * b * c / s) * x**2)

commute = float((cf.fft_convolve(f1, f2) - cf.fft_convolve(f2, f1)).abs().max())
x_index = n // 2 + 20  # one output sample, x = 1.0
snapshot = f1 * f2.flip(0).roll(x_index - n // 2 + 1)  # f1(t) · f2(x - t) on the grid of t (the animation frame)
by_hand = dx * float(snapshot.sum())
print(f"commutativity: max |f1*f2 - f2*f1| = {commute:.1e}")
print(f"associativity: max |left - right| = {float((left - right).abs().max()):.1e}, vs analytic {rel_err(left, assoc_analytic):.1e}")
print(f"one animation frame summed by hand at x = {float(x[x_index]):.2f}: {by_hand:.6f}; fft_convolve: {float(conv[x_index]):.6f}")

# %%
assert err_product < 1e-4 and err_conv < 1e-5
assert commute < 1e-6
assert rel_err(left, right) < 1e-5 and rel_err(left, assoc_analytic) < 1e-4
assert abs(by_hand - float(conv[x_index])) < 1e-5

# %% [markdown]
# ## 2. The convolution theorem on a projection; speed; truncated kernels
#
# > *[sharpen] "Code up a simple example illustrating the convolution theorem, where you also
# > actually do the convolution in real space. How close is it …? What was the speedup? Now try
# > … making the convolution kernel smaller. How good of an approximation is this? Use a 2D
# > projection of a 3D density map and a meaningful kernel (e.g. low pass filter)."*
#
# Image: a projection of adenylate kinase (1 Å/pixel, 128² pixels, V·Å). Kernel: a normalised
# Gaussian of σ = 3 Å — a low-pass filter. By the convolution theorem it multiplies the
# spectrum by `exp(-k²/(2σ_k²))` with `σ_k = 1/(2πσ)` = 0.053 Å⁻¹: **a broad Gaussian in real
# space is a narrow filter in Fourier space** (the blur question "what happens in Fourier space
# when we convolve with a broad Gaussian?"); its half-amplitude point is at `σ_k √(2 ln 2)` = 1/16.0 Å⁻¹, a 16 Å
# low-pass. `cryolab.fourier.gaussian_lowpass_filter` is exactly that filter.
#
# The real-space convolution below is the definition, `out[n] = Σ_m kernel[m] · image[n-m]`,
# written as M² shifted copies of the image (teaching code), against `fft_convolve`.

# %%
def convolve_direct(image, kernel):
    """Full linear convolution by the definition: M² shifted, weighted copies of the image."""
    n0, n1 = image.shape
    m0, m1 = kernel.shape
    out = torch.zeros(n0 + m0 - 1, n1 + m1 - 1)
    for i in range(m0):
        for j in range(m1):
            out[i : i + n0, j : j + n1] += kernel[i, j] * image
    return out


def gaussian_kernel(sigma_px, half_width):
    r = torch.arange(-half_width, half_width + 1, dtype=torch.float32)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma_px**2))
    return g / g.sum()


model = builtin_model("adk_open")
pixel_A, n_box = 1.0, 128
image = project_atoms(model, torch.eye(3), n_box, pixel_A)
sigma_A = 3.0
kernel = gaussian_kernel(sigma_A / pixel_A, 18)  # ±6σ: the "exact" kernel
full_direct = convolve_direct(image, kernel)
full_fft = cf.fft_convolve(image, kernel)
print(f"direct vs FFT convolution: relative difference {rel_err(full_fft, full_direct):.1e}")

# the same blur as a Fourier filter on the image's own grid (sigma_k = 1 / (2π σ))
filtered = cf.apply_filter(image, cf.gaussian_lowpass_filter((n_box, n_box), 1 / (2 * math.pi * sigma_A), pixel_size_A=pixel_A), ndim=2)
same = cf.fft_convolve(image, kernel, mode="same")
print(f"fft_convolve(mode='same') vs gaussian_lowpass_filter: relative difference {rel_err(filtered, same):.1e}")

# speed: direct cost grows like M², FFT cost hardly depends on M
kernel_sizes = [3, 5, 9, 17, 33, 65]
t_direct, t_fft = [], []
for m in kernel_sizes:
    k = gaussian_kernel(sigma_A, m // 2)
    t_direct.append(best_time(lambda: convolve_direct(image, k), repeat=2 if m > 20 else 3))
    t_fft.append(best_time(lambda: cf.fft_convolve(image, k), repeat=3))
for m, td, tf in zip(kernel_sizes, t_direct, t_fft):
    print(f"kernel {m:3d}²: direct {td * 1e3:8.2f} ms   FFT {tf * 1e3:6.2f} ms   ratio {td / tf:6.1f}")

# truncating the kernel: speed vs accuracy
truncation = {}
for half in (3, 6, 9):  # 1σ, 2σ, 3σ
    k = gaussian_kernel(sigma_A, half)
    approx = cf.fft_convolve(image, k, mode="same")
    truncation[half] = (rel_err(approx, same), best_time(lambda: convolve_direct(image, k), repeat=2))
    print(f"kernel truncated at ±{half} px = ±{half / sigma_A:.0f}σ ({2 * half + 1}²): rel. error {truncation[half][0]:.1e}, direct time {truncation[half][1] * 1e3:.1f} ms")

# %% [markdown]
# * Real-space and Fourier-space convolution agree to float32 rounding (~1e-7): the theorem is
#   exact for the DFT, provided the wrap-around is handled (section 3).
# * The direct cost is `N² M²`, the FFT cost `~N'² log N'` with `N' = N + M - 1` padded to a fast
#   size: for 3×3 kernels direct wins, beyond ~5-9 pixels the FFT wins, by orders of magnitude
#   for large kernels. **So Fourier space is not always quicker** — small kernels (Sobel,
#   3×3 sharpen) are cheaper directly, which is what image libraries do.
# * A truncated Gaussian is a good approximation once it reaches ~3σ (error ~1e-3); at ±1σ it is
#   a different, box-like filter (errors of several %). Truncation in real space is a
#   multiplication by a box, i.e. a convolution of the filter with a sinc in Fourier space.

# %%
assert rel_err(full_fft, full_direct) < 1e-5
assert rel_err(filtered, same) < 1e-3, "σ Å Gaussian kernel ⟷ gaussian_lowpass_filter(1/(2πσ))"
assert t_direct[0] < 10 * t_fft[0], "tiny kernel: direct convolution is competitive"
assert t_direct[-1] > 10 * t_fft[-1], "large kernel: the FFT wins by far"
assert truncation[3][0] > 10 * truncation[9][0] and truncation[9][0] < 3e-3

# %% [markdown]
# ## 3. Circular vs linear convolution: why we pad, and how to match sizes
#
# > *[sharpen] "If we take the FT of the image and kernel, their sizes do not match, so how can
# > we multiply them element wise? How would you … achieve the same result as the real space
# > convolution?"*
#
# The DFT treats both arrays as **periodic**: multiplying spectra computes the *circular*
# convolution, in which whatever the kernel pushes over one edge re-enters at the other. To get
# the linear convolution of an N-pixel image with an M-pixel kernel, zero-pad **both** to at
# least `N + M - 1` per axis (then the wrap lands in the padding), multiply, inverse-transform
# and cut out what you want — exactly what `fft_convolve` does. The kernel's centre must sit at
# the origin (index 0 of the unshifted layout, i.e. `ifftshift` of a centred kernel); otherwise
# the result is shifted by the offset (shift theorem).
#
# Below the particle is moved close to the right edge and blurred with a σ = 10 Å Gaussian, once
# by multiplying spectra on the image's own grid (circular) and once with `fft_convolve`.

# %%
near_edge = cf.fourier_shift(image, torch.tensor([36.0, 0.0]))  # 36 px to the right, still inside
wide = cf.gaussian_lowpass_filter((n_box, n_box), 1 / (2 * math.pi * 10.0), pixel_size_A=pixel_A)
circular = cf.apply_filter(near_edge, wide, ndim=2)
linear = cf.fft_convolve(near_edge, gaussian_kernel(10.0, 40), mode="same")
left_strip = slice(0, 16)  # the 16 columns at the left edge, 80-100 Å from the particle
wrapped_circ = float(circular[:, left_strip].abs().sum() / circular.abs().sum())
wrapped_lin = float(linear[:, left_strip].abs().sum() / linear.abs().sum())
print(f"fraction of the blurred particle in the left 16 columns: circular {wrapped_circ:.4f}, linear {wrapped_lin:.1e}")

# a kernel placed "as drawn" (centre at M//2, not at the origin) shifts the result by M//2
box_kernel = torch.zeros(n_box, n_box)
box_kernel[:5, :5] = 1 / 25  # 5×5 box blur drawn in the corner, centre at (2, 2)
naive = torch.fft.irfft2(torch.fft.rfft2(image) * torch.fft.rfft2(box_kernel), s=(n_box, n_box))
proper = cf.fft_convolve(image, torch.full((5, 5), 1 / 25), mode="same")
print(f"uncentred kernel: differs by {rel_err(naive, proper):.2f}; rolled back by 2 px: {rel_err(torch.roll(naive, (-2, -2), (0, 1)), proper):.1e}")

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
ext = centred_extent(n_box, pixel_A)
for ax, (img, title) in zip(axes, [(near_edge, "particle near the edge"), (circular, "circular: multiply on the same grid"), (linear, "linear: fft_convolve (zero-padded)")]):
    ax.imshow(img, cmap="gray", origin="lower", extent=ext, vmax=0.2 * float(img.max()))  # clipped: shows the tails
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (Å)")
axes[0].set_ylabel("y (Å)")
fig.tight_layout()
fig.suptitle("grey levels clipped at 20 % of each image's maximum, to show the faint tails", fontsize=9, y=1.03)
save_figure(fig, OUT / "02_circular_vs_linear_convolution.png")

# %% [markdown]
# > *[sharpen] "In ip_basics_part6, Fourier filtering and convolution filtering appear the same
# > for Gaussian blur, but different for box blur, and very different for sharpen. What might be
# > causing this? … Is doing things in Fourier space always quicker?"*
#
# Done correctly (padded, kernel centred at the origin) the two are identical for *any* kernel
# — checked below for the three kernels. Differences come from (i) a mis-centred kernel (a
# shift, above), (ii) wrap-around without padding, or (iii) using a *different* Fourier filter
# than the kernel's transform. The transfer functions show why (iii) is harmless for the
# Gaussian only: its transform is another smooth, positive Gaussian, while a box's transform is
# a sinc with **negative lobes** (some frequencies are contrast-inverted), and the 3×3 sharpen
# kernel's transform **grows** with frequency, to 5× at the Nyquist of each axis and 9× at the corner — a high-boost filter that
# no low-pass approximation resembles. Speed: see section 2 (not always quicker).

# %%
kernels = {
    "Gaussian σ=1 px": gaussian_kernel(1.0, 3),
    "box 5×5": torch.full((5, 5), 1 / 25),
    "sharpen 3×3": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
}
transfer = {}
for name, k in kernels.items():
    agree = rel_err(cf.fft_convolve(image, k), convolve_direct(image, k))
    padded_k = cf.pad_center(k, n_box, ndim=2)
    transfer[name] = cf.rfft_centered(padded_k, ndim=2).real[0]  # the ky = 0 row: K(kx, 0)
    print(f"{name:16s}: FFT vs direct {agree:.1e}; transfer function min {float(transfer[name].min()):+.2f}, max {float(transfer[name].max()):.2f}")
    assert agree < 1e-5

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
kx_A = torch.fft.rfftfreq(n_box, d=pixel_A)
for name, tf in transfer.items():
    axes[0].plot(kx_A, tf, label=name)
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set_xlabel("kx (1/Å), ky = 0")
axes[0].set_ylabel("transfer function K(k)")
axes[0].set_title("what each kernel does to each frequency", fontsize=9)
axes[0].legend(fontsize=8)
axes[1].loglog(kernel_sizes, np.array(t_direct) * 1e3, "o-", label="direct, O(N²M²)")
axes[1].loglog(kernel_sizes, np.array(t_fft) * 1e3, "s-", label="fft_convolve")
axes[1].minorticks_off()
axes[1].set_xticks(kernel_sizes, [str(m) for m in kernel_sizes])
axes[1].set_xlabel("kernel size M (pixels)")
axes[1].set_ylabel("time for a 128² image (ms)")
axes[1].legend(fontsize=8)
fig.tight_layout()
save_figure(fig, OUT / "02_kernels_transfer_and_timing.png")

# %%
assert wrapped_circ > 100 * max(wrapped_lin, 1e-6), "circular convolution wraps around the edge"
assert rel_err(torch.roll(naive, (-2, -2), (0, 1)), proper) < 1e-5 and rel_err(naive, proper) > 0.1
assert float(transfer["Gaussian σ=1 px"].min()) > 0
assert float(transfer["box 5×5"].min()) < -0.1, "box blur inverts contrast at some frequencies"
assert float(transfer["sharpen 3×3"].max()) > 4.9, "sharpen amplifies high frequencies"

# %% [markdown]
# ## 4. Deconvolution blows up — and the Wiener fix
#
# > *[sharpen] "The de-convoluted (recovered) signal blows up … From the math, why exactly did
# > this happen? Is there a way to overcome this blowing up effect?"*
#
# Deconvolution divides: `F = (G·F) / G`. Wherever the kernel's transform `G(k)` is ≈ 0 (a
# Gaussian's tail, the zeros of a sinc or of a CTF), any noise or rounding `ε(k)` in the data is
# multiplied by `1/G(k)` — arbitrarily large. Regularise: the Wiener filter
# `G / (G² + K)` behaves like `1/G` where `G² ≫ K` and goes smoothly to 0 where `G² ≪ K`
# (K ≈ noise-to-signal power). Below: blur the projection with a σ = 2 Å Gaussian, add noise of
# 0.1 % of the image's standard deviation, and deconvolve.

# %%
G = cf.gaussian_lowpass_filter((n_box, n_box), 1 / (2 * math.pi * 2.0), pixel_size_A=pixel_A)
blurred = cf.apply_filter(image, G, ndim=2)
noisy = blurred + 1e-3 * float(image.std()) * torch.randn_like(blurred)
naive_deconv = cf.apply_filter(noisy, 1 / G, ndim=2)
wiener_deconv = cf.apply_filter(noisy, G / (G**2 + 1e-4), ndim=2)
print(f"min G(k) = {float(G.min()):.1e} → 1/G up to {float(1 / G.min()):.1e}")
print(f"relative error: blurred {rel_err(blurred, image):.2f}, naive deconvolution {rel_err(naive_deconv, image):.1e}, Wiener {rel_err(wiener_deconv, image):.2f}")

# %%
assert rel_err(naive_deconv, image) > 10, "dividing by a near-zero transfer function amplifies noise"
assert rel_err(wiener_deconv, image) < rel_err(blurred, image), "Wiener deconvolution improves on the blurred data"

# %% [markdown]
# ## 5. Sampling and aliasing: decimation vs Fourier cropping
#
# Sampling every Δ Å keeps frequencies up to **Nyquist, 1/(2Δ)**; anything above it does not
# vanish — it *folds back* (aliases) onto a lower frequency. In 1D: a cosine of 0.7 cycles/pixel
# sampled at integer pixels is indistinguishable from one of 0.3 cycles/pixel.
#
# For images this decides how to **bin** (downsample) data. A projection computed at
# 0.5 Å/pixel with sharp atoms (B-factors set to 0, so there is signal up to 1 Å⁻¹) is
# reduced to 2 Å/pixel (Nyquist 0.25 Å⁻¹) by (a) keeping every 4th pixel (decimation) and
# (b) `fourier_crop` — an ideal low-pass at the new Nyquist, then resampling. Real images also
# contain noise at every frequency; binning by decimation keeps all of it, cropping only the
# sixteenth inside the new band.

# %%
t = torch.arange(32.0)
samples = torch.cos(2 * math.pi * 0.7 * t)
alias = float(torch.fft.rfftfreq(32)[torch.fft.rfft(samples).abs().argmax()])
print(f"cos(2π·0.7·n) sampled at integers peaks at {alias:.3f} cycles/pixel")
assert torch.allclose(samples, torch.cos(2 * math.pi * 0.3 * t), atol=1e-4) and abs(alias - 0.3) < 0.04

sharp_model = dataclasses.replace(model, bfactors_A2=np.zeros(len(model)))
fine = project_atoms(sharp_model, torch.eye(3), 256, 0.5, method="sampled")  # 128 Å box
decimated = fine[::4, ::4]  # index 128 (the centre) is kept and becomes 32 = 64 // 2
cropped = cf.fourier_crop(fine, 64, ndim=2)
power = {name: cf.radial_average(cf.rfft_centered(img, ndim=2).abs() ** 2, (64, 64)) for name, img in (("decimated", decimated), ("fourier_crop", cropped))}
ratio = power["decimated"] / power["fourier_crop"]
print("power ratio decimated / fourier_crop by shell:", np.round(ratio.numpy()[::4], 2))

noise = torch.randn(256, 256)
var_decimated = float(noise[::4, ::4].var())
var_cropped = float(cf.fourier_crop(noise, 64, ndim=2).var())
print(f"white noise of variance 1 after binning ×4: decimation {var_decimated:.3f}, Fourier cropping {var_cropped:.4f} (1/16 = {1 / 16:.4f})")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
axes[0].imshow(fine, cmap="gray", origin="lower", extent=centred_extent(256, 0.5))
axes[0].set_title("0.5 Å/pixel, sharp atoms", fontsize=9)
axes[1].imshow(decimated, cmap="gray", origin="lower", extent=centred_extent(64, 2.0))
axes[1].set_title("2 Å/pixel: every 4th pixel", fontsize=9)
axes[2].imshow(cropped, cmap="gray", origin="lower", extent=centred_extent(64, 2.0))
axes[2].set_title("2 Å/pixel: fourier_crop", fontsize=9)
for ax in axes[:3]:
    ax.set_xlabel("x (Å)")
k64 = cf.shell_to_frequency(torch.arange(33), 64, 2.0)
axes[3].semilogy(k64[1:], power["decimated"][1:], label="decimated (aliased)")
axes[3].semilogy(k64[1:], power["fourier_crop"][1:], label="fourier_crop")
axes[3].set_xlabel("spatial frequency (1/Å)")
axes[3].set_ylabel("radial power")
axes[3].legend(fontsize=8)
add_resolution_axis(axes[3])
fig.tight_layout()
save_figure(fig, OUT / "02_aliasing_decimation_vs_crop.png")

# %% [markdown]
# Decimation adds the folded-back power of 0.25–1 Å⁻¹ onto the retained band: up to several
# times too much power near the new Nyquist, and wrong phases there — fine detail that is not
# the structure. Fourier cropping keeps every retained coefficient exactly (`fourier_pad` of the
# cropped image reproduces the band-limited original) and removes the out-of-band noise: for
# white noise, **decimation keeps the variance, cropping divides it by the binning factor²**.
# This is why RELION and cryoSPARC downsample in Fourier space, and why counting-mode
# "super-resolution" movies are Fourier-cropped, never decimated.

# %%
assert ratio[-8:].mean() > 1.5, "decimation aliases power into the high shells"
assert abs(float(ratio[1:4].mean()) - 1) < 0.25, "the lowest shells are nearly unaffected"
assert abs(var_decimated - 1) < 0.1 and abs(var_cropped - 1 / 16) < 0.01
back = cf.fourier_crop(cf.fourier_pad(cropped, 256, ndim=2), 64, ndim=2)
assert rel_err(back, cropped) < 1e-5, "crop ∘ pad is the identity on the band-limited image"

# %% [markdown]
# ## 6. Nyquist in 1/Å, and choosing it at the microscope
#
# Resolution in Å = `pixel_size_A / fftfreq`; the finest is Nyquist, fftfreq = 0.5, i.e.
# **2 × pixel size**. In Fourier shells of an N-pixel box: shell `N/2`.
#
# > *[sharpen] "How can we increase the Nyquist frequency during data collection …? What is the
# > trade off? What should guide our choice of an optimal Nyquist?"*
#
# Increase the magnification (smaller pixel size), or use super-resolution sampling of the
# detector. The trade-offs, for a camera of fixed pixel count (a K3: 5760 × 4092):

# %%
sensor = (5760, 4092)
particle_diameter_A = 150.0
print(" pixel (Å)  Nyquist (Å)  Nyquist (1/Å)  field of view (µm²)  particles/micrograph  e⁻/pixel at 40 e⁻/Å²")
nyquist_table = {}
for p in (0.5, 0.83, 1.06, 1.5):
    nyq_res = float(cf.shell_to_resolution_A(sensor[1] // 2, sensor[1], p))  # shell N/2 → 2p
    fov_um2 = sensor[0] * p * sensor[1] * p / 1e8
    n_particles = int(fov_um2 * 1e8 / (1.5 * particle_diameter_A) ** 2)  # packed at 1.5 diameters
    nyquist_table[p] = (nyq_res, n_particles)
    print(f"{p:10.2f}  {nyq_res:11.2f}  {1 / nyq_res:13.3f}  {fov_um2:19.2f}  {n_particles:20d}  {40 * p * p:20.1f}")

# %% [markdown]
# Halving the pixel doubles Nyquist but quarters the field of view — four times the microscope
# time for the same number of particles — and quarters the dose per pixel. What should guide the
# choice: the resolution you can realistically reach (sample, microscope, envelope) should fall
# at about **1/2 – 2/3 of Nyquist** — detector DQE and MTF drop towards Nyquist, and the CTF
# oscillations must stay resolved (section 7) — while keeping as many particles per hour as
# possible. A ~3 Å target suggests 0.75–1 Å pixels; a 1.5 Å target 0.4–0.5 Å.

# %%
assert all(abs(v[0] - 2 * p) < 1e-4 for p, v in nyquist_table.items()), "Nyquist = 2 × pixel size"
assert nyquist_table[0.5][1] < nyquist_table[1.06][1] / 4 + 1

# %% [markdown]
# ## 7. CTF aliasing in a small box at high defocus: why simulators pad
#
# The CTF `sin χ(k)` with `χ ≈ πλΔf k²` oscillates faster and faster with k. In an N-pixel box
# the CTF is *sampled* in Fourier space every `1/(N p)` Å⁻¹, so it is itself subject to
# Nyquist: the local ring frequency `(1/2π) dχ/dk = λΔf k − Cs λ³ k³` (in Å) must stay below
# `N p / 2`. Equivalently, the **point-spread function** — the CTF's inverse transform, which
# reaches out to the delocalisation radius `R(k) = λΔf k − Cs λ³ k³` — must fit in half the box.
# Otherwise the PSF wraps around (circular convolution again) and Moiré rings appear in the
# sampled CTF. Applying the CTF in a padded box and cropping back avoids it — the reason image
# simulators pad, and why particle boxes should exceed the particle by about twice the
# delocalisation radius (notebook 05, section 8).

# %%
pixel_A, n_small = 1.5, 64  # a 96 Å box around a ~70 Å particle
lam = float(electron_wavelength_A(300.0))
cs_A = 2.7e7
k_max = 1 / (2 * pixel_A)
small = project_atoms(model, torch.eye(3), n_small, pixel_A)
print(f"λ(300 kV) = {lam:.5f} Å; box half-width N·p/2 = {n_small * pixel_A / 2:.0f} Å")
alias_error = {}
for defocus_A in (5000.0, 20000.0, 40000.0):
    params = CTFParams(defocus_u_A=defocus_A, defocus_v_A=defocus_A, defocus_angle_deg=0.0)
    delocalisation = lam * defocus_A * k_max - cs_A * lam**3 * k_max**3
    direct_ctf = cf.apply_filter(small, ctf_2d(params, (n_small, n_small), pixel_A), ndim=2)
    padded = cf.pad_center(small, 8 * n_small, ndim=2)
    reference = cf.crop_center(cf.apply_filter(padded, ctf_2d(params, (8 * n_small, 8 * n_small), pixel_A), ndim=2), n_small, ndim=2)
    alias_error[defocus_A] = rel_err(direct_ctf, reference)
    k_alias = [k for k in np.linspace(0.001, k_max, 2000) if lam * defocus_A * k - cs_A * lam**3 * k**3 > n_small * pixel_A / 2]
    first = f"{1 / k_alias[0]:.1f} Å" if k_alias else "never"
    print(f"Δf = {defocus_A / 1e4:.1f} µm: PSF radius at Nyquist {delocalisation:6.1f} Å; CTF aliases beyond {first:>7s}; unpadded vs padded image differ by {alias_error[defocus_A]:.2f}")

params = CTFParams(defocus_u_A=40000.0, defocus_v_A=40000.0, defocus_angle_deg=0.0)
fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
kext = centred_extent(n_small, 1 / (n_small * pixel_A))
axes[0].imshow(ctf_2d(params, (n_small, n_small), pixel_A, rfft=False, fftshift=True), cmap="gray", origin="lower", extent=kext)
axes[0].set_title(f"CTF on the {n_small}² grid (Δf = 4 µm): Moiré", fontsize=9)
big_n = 8 * n_small
axes[1].imshow(ctf_2d(params, (big_n, big_n), pixel_A, rfft=False, fftshift=True), cmap="gray", origin="lower", extent=centred_extent(big_n, 1 / (big_n * pixel_A)))
axes[1].set_title(f"CTF on a {big_n}² grid (padded ×8)", fontsize=9)
for ax in axes:
    ax.set_xlabel("kx (1/Å)")
axes[0].set_ylabel("ky (1/Å)")
fig.tight_layout()
save_figure(fig, OUT / "02_ctf_aliasing_small_box.png")

# %%
assert alias_error[5000.0] < 0.05, "0.5 µm: the PSF fits in the box, padding hardly matters"
assert alias_error[40000.0] > 0.2, "4 µm: the PSF wraps around a 96 Å box"
assert alias_error[5000.0] < alias_error[20000.0] < alias_error[40000.0]

# %% [markdown]
# ## 8. Fourier shells and resolution
#
# Resolution is measured shell by shell (FSC, spectra). cryolab's shell of a frequency k
# (cycles/pixel) in an N box is `round(|k| N)` (RELION's FSC shells); shell `s` ↔
# `N · p / s` Å. The number of Fourier samples in a shell grows like `2πs` in 2D and `4πs²` in
# 3D — high-resolution shells hold most of the coefficients, so per-shell statistics are noisy
# at low resolution and precise at high resolution.

# %%
shells_2d = cf.shell_index((128, 128), rfft=False)
shells_3d = cf.shell_index((64, 64, 64), rfft=False)
count_2d = torch.bincount(shells_2d.flatten())
count_3d = torch.bincount(shells_3d.flatten())
for s_ in (5, 20, 40):
    print(f"shell {s_:2d}: 2D count {int(count_2d[s_]):4d} (2πs = {2 * math.pi * s_:6.1f});  ", end="")
    if s_ < 32:
        print(f"3D count {int(count_3d[s_]):6d} (4πs² = {4 * math.pi * s_**2:8.1f})")
    else:
        print()
print("resolution of shells 10, 32, 64 in a 128-pixel box at 1.06 Å:", [round(float(r), 2) for r in cf.shell_to_resolution_A(torch.tensor([10, 32, 64]), 128, 1.06)])

# %%
band = torch.arange(10, 41)  # single shells fluctuate (lattice points on circles); bands do not
assert abs(float(count_2d[band].sum()) / float((2 * math.pi * band).sum()) - 1) < 0.02
band = torch.arange(10, 31)
assert abs(float(count_3d[band].sum()) / float((4 * math.pi * band**2).sum()) - 1) < 0.02
assert abs(float(cf.shell_to_resolution_A(64, 128, 1.06)) - 2.12) < 1e-4
elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300, "budget: < 60 s on 2 idle cores; this guard only catches blow-ups"
