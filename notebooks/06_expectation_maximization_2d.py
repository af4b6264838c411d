# %% [markdown]
# # 06 — 2D expectation-maximization
#
# Study-group session **18 Feb 2021 (sharpen)**, "2D Expectation-maximization" (pre-reading: Eddy
# 2004, *What is Bayesian statistics?*; Nelson, *Physical Models of Living Systems*, ch. 12).
#
# Every question of the session is answered by a computation, and every section ends in
# assertions, so this notebook is also a test (`tests/test_notebooks.py` runs it). Run it with
# `python notebooks/06_expectation_maximization_2d.py`; figures go to `$CRYOLAB_NOTEBOOK_OUT`.
#
# 1. Nelson's 1D example step by step: one template, unknown shifts, the likelihood written out.
# 2. Several classes: what a "round" (iteration) holds constant and what it updates.
# 3. Why the equations work in Fourier space, and what it saves (cost comparison).
# 4. How a prior changes the log loss (offsets; the class averages' Wiener-like prior).
# 5. Coloured noise: independent Gaussian per Fourier coefficient, and what a per-pixel
#    (real-space) noise does instead; white against coloured noise model on the same data.
# 6. What is uncertain (Eddy's question): marginalising against taking the best guess.
#
# Library: `cryolab.classify2d.teaching` (sections 1–2) and the full method `cryolab.classify2d`
# (E-step / M-step in Fourier space, RELION's Class2D), conventions in docs/conventions.md.

# %%
import dataclasses
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from cryolab.atoms import atoms_to_potential, builtin_model
from cryolab.classify2d import (Class2DSettings, batches_from_tensors, e_step, initial_state, m_step, prepare_expectation,
                                rotate_images, run_em)
from cryolab.classify2d.teaching import (hypothesis_log_probabilities, integer_shifts, log_likelihood,
                                         simulate_shifted_copies, teaching_e_step, teaching_em, teaching_m_step,
                                         TeachingModel)
from cryolab.ctf import ctf_2d
from cryolab.fourier import irfft_centered, radial_average, rfft_centered, shell_index
from cryolab.interpolate import sample_grid_2d
from cryolab.plot import image_grid
from cryolab.report import plt, save_figure
from cryolab.simulate import GaussianNoise, ParticleParameters, sample_ctf_params, simulate_images
from cryolab.lab import notebook_output_dir

OUT = notebook_output_dir()
torch.set_num_threads(1)  # small problems: threads only add synchronisation
T_START = time.perf_counter()

# %% [markdown]
# ## 1. Nelson's example: one template, unknown shifts (1D)
#
# **[blur]** Each signal `y_i` is a copy of one template `t`, shifted by an unknown amount `s_i`
# and buried in noise. If we knew the shifts we would shift back and average. We do not, so we
# weigh every possible shift by how well it explains the signal.
#
# **[sharpen]** With white Gaussian noise of standard deviation σ and a prior `w_s` over shifts,
#
# `p(y_i | t, w, σ) = Σ_s w_s (2πσ²)^(−D/2) exp(−||y_i − roll(t, s)||² / 2σ²)`,
#
# and `L = Σ_i log p(y_i)`. EM alternates the **E-step** (responsibilities
# `r_is = w_s p(y_i | s) / p(y_i)`, θ fixed) and the **M-step** (θ from the responsibilities:
# `t = Σ r_is roll(y_i, −s) / n`, `w_s = Σ_i r_is / n`, `σ² = Σ r_is ||y_i − roll(t, s)||² / nD`).

# %%
g = torch.Generator().manual_seed(0)
x = torch.arange(64, dtype=torch.float64)
template = 2.0 * torch.exp(-((x - 24) ** 2) / 6) + torch.exp(-((x - 40) ** 2) / 40) - 0.8 * torch.exp(-((x - 31) ** 2) / 3)
shifts = integer_shifts(8)
true_w = torch.exp(-(shifts[:, 0].double() ** 2) / (2 * 3.0**2))
true_w /= true_w.sum()
signals, _, true_shift = simulate_shifted_copies(template, 500, shifts, 0.6, shift_weights=true_w, generator=g)

# one round by hand, from a first guess: a random signal as template, flat prior, σ from the data
guess = TeachingModel(templates=signals[:1].clone(), class_weights=torch.ones(1, dtype=torch.float64),
                      shift_weights=torch.full((17,), 1 / 17, dtype=torch.float64), sigma=float(signals.std()))
joint = hypothesis_log_probabilities(signals, guess, shifts)  # (n, 1, S): log[w_s p(y_i | s)]
resp = teaching_e_step(signals, guess, shifts)                 # normalised over s
after_one = teaching_m_step(signals, resp, shifts)
print("one round by hand: L", round(log_likelihood(signals, guess, shifts)), "->", round(log_likelihood(signals, after_one, shifts)))

result = teaching_em(signals, 1, shifts, n_iterations=40, generator=torch.Generator().manual_seed(1))
lls = np.array(result.log_likelihoods)
# the template is found up to a global shift d (its origin is arbitrary): align before comparing
d = max(range(-8, 9), key=lambda v: float(torch.dot(torch.roll(result.model.templates[0], v), template)))
recovered_w = torch.roll(result.model.shift_weights, -d)

fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
ax[0].plot(signals[0], lw=0.8, color="0.6", label="one signal")
ax[0].plot(template, lw=2, label="true template")
ax[0].plot(torch.roll(result.model.templates[0], d), "--", lw=2, label="EM template (aligned)")
ax[0].legend(fontsize=7)
ax[1].plot(lls, "o-", ms=3)
ax[1].set_xlabel("iteration")
ax[1].set_ylabel("log-likelihood L")
ax[2].bar(shifts[:, 0] - 0.2, true_w, width=0.4, label="true shift distribution")
ax[2].bar(shifts[:, 0] + 0.2, recovered_w, width=0.4, label="recovered w")
ax[2].set_xlabel("shift (samples)")
ax[2].legend(fontsize=7)
fig.tight_layout()
save_figure(fig, OUT / "06_nelson_1d.png")

assert resp.sum(dim=(1, 2)).allclose(torch.ones(500, dtype=torch.float64))  # Bayes: each signal's responsibilities sum to 1
assert log_likelihood(signals, after_one, shifts) > log_likelihood(signals, guess, shifts)
assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))  # EM never decreases L
corr = float(torch.corrcoef(torch.stack([torch.roll(result.model.templates[0], d), template]))[0, 1])
assert corr > 0.98 and abs(result.model.sigma - 0.6) < 0.05
assert 0.5 * float((recovered_w - true_w).abs().sum()) < 0.15  # total-variation distance of the shift distributions

# %% [markdown]
# ## 2. Several classes: what a round holds constant and what it updates
#
# **[blur]** With several templates, the hidden variables are the class *and* the shift; the
# responsibilities become a table over (class, shift) per particle. A **round** is one E-step and
# one M-step. During the E-step the model θ — class averages, class weights, noise level, the
# prior over shifts (and in the full method: the noise spectrum, the offset spread, the resolution
# limit) — is **held constant**, so every particle is treated independently and in any order or
# batch; only the per-particle posteriors are computed and summed into a few sufficient
# statistics. **Between** rounds the M-step replaces θ from those sums.
#
# **[sharpen]** The full method (`cryolab.classify2d`) makes this visible: `e_step(state, batch)`
# returns sums that add over batches, `m_step(state, stats)` returns the next state.

# %%
PIXEL, BOX = 2.5, 40
volume = atoms_to_potential(builtin_model("adk_open"), BOX, PIXEL)
VIEWS = torch.tensor([[0.0, 90.0], [45.0, 135.0], [180.0, 90.0], [135.0, 45.0]])


def view_particles(n, seed, snr=0.05, noise=None):
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(len(VIEWS), (n,), generator=gen)
    psi = torch.rand(n, generator=gen) * 360 - 180
    shifts_A = (torch.rand(n, 2, generator=gen) * 2 - 1) * PIXEL * 1.5
    ctf = sample_ctf_params(n, defocus_min_A=10000, defocus_max_A=25000, generator=gen)
    clean, noisy = simulate_images(volume, ParticleParameters(torch.cat([VIEWS[which], psi[:, None]], 1), shifts_A, ctf),
                                   PIXEL, noise=GaussianNoise(snr), seed=seed)
    return noisy, clean, ctf, which, psi


images, clean, ctf, which, psi_true = view_particles(320, seed=2)
settings = Class2DSettings(n_classes=4, box_size=BOX, pixel_size_A=PIXEL, psi_step_deg=15.0, offset_range_A=5.0,
                           offset_step_A=2.5, mask_diameter_A=85.0)
state = initial_state(batches_from_tensors(images, ctf=ctf, batch_size=80), settings,
                      generator=torch.Generator().manual_seed(0), show_progress=False)
context = prepare_expectation(state)  # everything the E-step holds fixed: rotated averages, ramps, weights, priors
per_batch = [e_step(state, b, context=context) for b in batches_from_tensors(images, ctf=ctf, batch_size=80)]
summed = per_batch[0]
for part in per_batch[1:]:
    summed = summed + part
whole = e_step(state, next(iter(batches_from_tensors(images, ctf=ctf, batch_size=320))), context=context)
references_before = state.references.clone()
new_state = m_step(state, summed, context=context)

print("held constant during the E-step:", [f for f in ("references", "class_weights", "noise_spectrum", "tau2",
                                                       "offset_sigma_A", "resolution_shell")])
print("updated by the M-step: iteration", state.iteration, "->", new_state.iteration,
      "; class weights", [round(v, 2) for v in new_state.class_weights.tolist()])


result = run_em(batches_from_tensors(images, ctf=ctf, batch_size=80), settings, n_iterations=12, seed=0,
                show_progress=False)
ari = adjusted_rand_score(which.numpy(), result.assignments.class_index.numpy())
order = torch.argsort(torch.bincount(result.assignments.class_index, minlength=4), descending=True)
fig = image_grid(list(result.state.references[order]), [f"class {int(c) + 1}" for c in order], ncols=4, panel_size=2.0,
                 suptitle=f"12 iterations from random averages: ARI {ari:.2f} against the 4 true views")
save_figure(fig, OUT / "06_class_averages.png")

assert torch.equal(state.references, references_before)  # the E-step changed nothing in the state
assert torch.allclose(summed.numerator, whole.numerator, rtol=1e-3, atol=1e-2 * float(whole.numerator.abs().max()))
assert torch.allclose(summed.class_counts, whole.class_counts, atol=1e-3)
assert summed.n_particles == 320 and abs(summed.log_likelihood - whole.log_likelihood) < 1e-3 * abs(whole.log_likelihood)
assert not torch.equal(new_state.references, state.references) and new_state.iteration == state.iteration + 1
print(f"ARI of the classes against the true views after 12 rounds: {ari:.2f}")
assert ari >= 0.9

# %% [markdown]
# ## 3. Why the equations work in Fourier space — and what it saves
#
# **[blur]** The image of a particle is: rotate the average, shift it, blur it with the CTF, add
# noise. In real space the CTF is a convolution; in Fourier space it is a product. A shift is a
# phase ramp (a product), a rotation rotates the transform. And the sum of squared differences is
# the same in both spaces (Parseval). So the whole comparison becomes products of arrays.
#
# **[sharpen]** `||X − CTF·S_o·RA||²_w = ||X||²_w − 2 Re Σ_k w CTF X conj(S_o) conj(RA) +
# Σ_k w CTF² |RA|²`: the middle term for *all* (class, angle, origin) is one matrix product of the
# phase-shifted, CTF-weighted images with the rotated averages. What would have to change to stay
# in real space: the CTF convolution per hypothesis (or per particle, on the average), an
# interpolated shift per origin, and no shortcut from Parseval when the noise is not white.
# What does *not* carry over to Fourier space: anything local in real space (a per-pixel noise
# level, a real-space mask), which is a convolution there — section 5.

# %%
ctx = prepare_expectation(new_state)
one = next(iter(batches_from_tensors(images[:16], ctf=ctf[:16], batch_size=16)))
t0 = time.perf_counter()
stats = e_step(new_state, one, context=ctx)
fourier_seconds = time.perf_counter() - t0
n_hypotheses = ctx.rotated_references.shape[0] * ctx.rotated_references.shape[1] * ctx.ramps.shape[0]

# (i) Parseval: the squared difference of the best hypothesis is the same in both spaces
n = BOX
index, herm = ctx.index, ctx.hermitian
band = torch.zeros(n * (n // 2 + 1), dtype=torch.complex64)
real_space, fourier_form = [], []
for i in range(16):
    c = int(stats.particles.class_index[i])
    r = int(torch.nonzero(ctx.psi_deg == stats.particles.psi_deg[i])[0])
    t = int(torch.nonzero((ctx.offsets_A == stats.particles.offsets_A[i]).all(-1))[0])
    x_ft = rfft_centered(images[i] * ctx.mask, 2).reshape(-1)[index]
    m_ft = ctf_2d(ctf[i], (n, n), PIXEL).reshape(-1)[index] * ctx.ramps[t] * ctx.rotated_references[c, r]
    fourier_form.append(float((herm * (x_ft - m_ft).abs() ** 2).sum()) / n**2)  # Σ_k h |X − M|² / N²
    residual_ft = band.clone()
    residual_ft[index] = x_ft - m_ft
    real_space.append(float((irfft_centered(residual_ft.reshape(n, n // 2 + 1), (n, n)) ** 2).sum()))  # Σ_x

# (ii) cost: one hypothesis done in real space = rotate (cubic), shift (bilinear), convolve with
# the CTF's point-spread function (N² taps), squared difference
psf = torch.fft.fftshift(torch.fft.irfft2(ctf_2d(ctf[0], (n, n), PIXEL), s=(n, n)))[1:, 1:][None, None]  # odd size
yy, xx = torch.meshgrid(torch.arange(n) * 1.0, torch.arange(n) * 1.0, indexing="ij")
shifted_grid = torch.stack([xx + 1.0, yy], dim=-1).reshape(1, -1, 2)


def real_space_hypothesis(average, image, psi):
    rotated = rotate_images(average, torch.tensor(psi))
    moved = sample_grid_2d(rotated[None], shifted_grid, method="linear").reshape(n, n)
    blurred = torch.nn.functional.conv2d(moved[None, None], psf, padding="same")[0, 0]
    return float(((image - blurred) ** 2).sum())


t0 = time.perf_counter()
for j in range(20):
    real_space_hypothesis(new_state.references[0], images[0], 7.0 * j)
real_seconds_per_hypothesis = (time.perf_counter() - t0) / 20
speedup = real_seconds_per_hypothesis * n_hypotheses * 16 / fourier_seconds
print(f"{n_hypotheses} hypotheses per particle; batched Fourier E-step {fourier_seconds * 1e3:.0f} ms for 16 particles; "
      f"a real-space loop: {real_seconds_per_hypothesis * 1e3:.2f} ms per hypothesis, "
      f"~{real_seconds_per_hypothesis * n_hypotheses * 16:.1f} s ({speedup:.0f}x slower)")
assert np.allclose(real_space, fourier_form, rtol=1e-3)  # Parseval: the same squared difference
assert speedup > 10


# %% [markdown]
# ## 4. How a prior changes the log loss
#
# **[blur]** Bayes: log posterior = log likelihood + log prior + constant. The "log loss" we
# minimise is minus that, so a prior *adds a penalty*. A Gaussian prior is a quadratic penalty
# (L2, "ridge"); it is convenient because it keeps the M-step in closed form.
#
# **[sharpen]** Two Gaussian priors in the method: on the origin, `−|o|²/2σ_o²` added to every
# hypothesis's log-likelihood (a particle far off-centre needs more evidence); on each Fourier
# coefficient of an average, `−|A(k)|²/2Tτ²(k)`, which turns the M-step's least-squares average
# `ΣCTF·X / ΣCTF²` into `ΣCTF·X / (ΣCTF² + σ²/Tτ²)` — shrinkage where the data are weak.
# `T` (RELION's tau2_fudge) scales the prior's variance: larger T, weaker prior, more power.

# %%
ctx_prior = prepare_expectation(new_state)
flat_state = dataclasses.replace(new_state, offset_sigma_A=1e6)  # a (practically) flat origin prior
ctx_flat = prepare_expectation(flat_state)
penalty = ctx_prior.log_offset_prior - ctx_flat.log_offset_prior  # what the prior adds to each origin's log score
expected = -(ctx_prior.offsets_A**2).sum(-1) / (2 * new_state.offset_sigma_A**2)
assert torch.allclose(penalty - penalty[0], expected - expected[0], atol=1e-4)  # up to its normalisation constant

powers = []
for fudge in (0.5, 2.0, 8.0):
    st = dataclasses.replace(new_state, settings=dataclasses.replace(settings, tau2_fudge=fudge))
    averaged = m_step(st, summed, context=prepare_expectation(st))
    powers.append(float(radial_average(rfft_centered(averaged.references, 2).abs() ** 2, (n, n))[:, 6:].sum()))
print("high-frequency power of the averages for T = 0.5, 2, 8:", [f"{p:.3g}" for p in powers])
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ctx_prior.offsets_A.norm(dim=-1), penalty - penalty[0], "o")
ax.set_xlabel("|origin| (Å)")
ax.set_ylabel("log prior added (nats)")
save_figure(fig, OUT / "06_offset_prior.png")
assert powers[0] < powers[1] < powers[2]  # a weaker prior (larger T) shrinks less

# %% [markdown]
# ## 5. Coloured noise
#
# **[blur]** White noise is equally strong at all spatial frequencies; real detector and ice noise
# is stronger at some (coloured). A model that knows the noise spectrum trusts each frequency
# according to its own noise level.
#
# **[sharpen]** (a) iid Gaussian noise in real space has independent Gaussian Fourier
# coefficients with variance `N²σ²` (unnormalised FFT). (b) If the noise is Gaussian with a
# variance that depends only on |k| (stationary, coloured), the coefficients are still independent,
# with variance σ²(|k|): the likelihood is `Σ_k |X − model|² / 2σ²(|k|)` — divide each
# frequency by its own noise (pre-whitening). (c) If instead the variance depends on the *pixel*
# (non-stationary), the Fourier coefficients become *correlated*: the covariance is no longer
# diagonal in Fourier space and the simple per-frequency weighting is only an approximation.

# %%
gen = torch.Generator().manual_seed(5)
m = 4000
white = torch.randn(m, n, n, generator=gen)
coeff = rfft_centered(white, 2)
var_white = float((coeff.abs() ** 2).mean() / (n * n))
shells = shell_index((n, n), rfft=True)
spectrum = 1.0 / (1.0 + (shells.float() / 4.0) ** 2) * 4 + 0.2  # a coloured (|k|-dependent) amplitude²
coloured = irfft_centered(rfft_centered(white, 2) * spectrum.sqrt(), (n, n))
coloured_ft = rfft_centered(coloured, 2)
measured = radial_average(coloured_ft.abs() ** 2, (n, n)).mean(0) / (n * n)
ring = radial_average(spectrum, (n, n))
# correlation between neighbouring Fourier coefficients: stationary vs pixel-dependent noise
ramp = torch.linspace(0.2, 2.0, n)[None, :].expand(n, n)  # noise σ growing from left to right
nonstationary = rfft_centered(white * ramp, 2)


def neighbour_correlation(ft):
    a, b = ft[:, 5, 3], ft[:, 5, 4]
    return float((a * b.conj()).mean().abs() / ((a.abs() ** 2).mean() * (b.abs() ** 2).mean()).sqrt())


c_stat, c_nonstat = neighbour_correlation(coloured_ft), neighbour_correlation(nonstationary)
print(f"white: E|N(k)|²/N² = {var_white:.3f}; neighbour correlation stationary {c_stat:.3f}, pixel-dependent {c_nonstat:.3f}")

# white against coloured noise model on particles whose noise is coloured: the same particles
# (signal scaled down) with coloured noise, classified against the averages of section 2 (scaled
# alike) with the noise spectrum estimated from the data — only the noise model differs
scale = 0.15 / float(clean.std())
noise_c = irfft_centered(rfft_centered(torch.randn(320, n, n, generator=gen), 2) * spectrum.sqrt(), (n, n))
data_c = clean * scale + noise_c
scores = {}
for model in ("white", "coloured"):
    s_m = dataclasses.replace(settings, noise_model=model)
    batches_c = batches_from_tensors(data_c, ctf=ctf, batch_size=80)
    st = initial_state(batches_c, s_m, initial_references=result.state.references * scale, show_progress=False)
    st = dataclasses.replace(st, class_weights=result.state.class_weights)
    parts = [e_step(st, b) for b in batches_c]
    found = torch.cat([p.particles.class_index for p in parts])
    agreement = float((found == result.assignments.class_index).double().mean())
    log_l = sum(p.log_likelihood for p in parts) / len(found)
    scores[model] = (agreement, st.noise_spectrum, log_l)
print("with coloured noise — classes found again: white model %.2f, coloured model %.2f; "
      "log-likelihood per particle: white %.0f, coloured %.0f nats"
      % (scores["white"][0], scores["coloured"][0], scores["white"][2], scores["coloured"][2]))
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ring * n * n, label="true σ²(k) (×N²)")
est = scores["coloured"][1]
ax.plot(est, "--", label="estimated (coloured model), particles masked")
mask_power = float((ctx.mask**2).mean())  # the particle mask zeroes the noise outside it
ax.plot(ring * n * n * mask_power, ":", label="true × mean(mask²)")
ax.set_yscale("log")
ax.set_xlabel("Fourier shell")
ax.legend(fontsize=7)
save_figure(fig, OUT / "06_coloured_noise.png")

assert abs(var_white - 1.0) < 0.02
assert np.allclose(measured.numpy(), ring.numpy(), rtol=0.05)
assert c_stat < 0.05 < c_nonstat
# the coloured model explains the data far better (a likelihood ratio of e^100s per particle) and
# classifies at least as well; how much the classes gain depends on where the views differ
assert scores["coloured"][2] > scores["white"][2] + 50
assert scores["coloured"][0] >= scores["white"][0] - 0.03
# the estimated spectrum follows the true shape: much larger at low than at high frequency
# (at low frequency it also holds the signal's power, hence only a ratio is checked)
assert float(est[2] / est[12]) > 3
high = slice(8, 19)  # where the residual signal is negligible, the estimate is the masked noise power
assert np.allclose((est[high] / (ring[high] * n * n * mask_power)).numpy(), 1.0, atol=0.15)

# %% [markdown]
# ## 6. What is uncertain, and marginalising against point estimates
#
# **[blur]** Eddy: "integrate over varying degrees of uncertainty". In 2D classification the
# class, the in-plane angle and the origin of each particle are uncertain (and the CTF, the noise,
# the averages themselves). EM *marginalises* the first three: each particle contributes to every
# class/angle/origin in proportion to its posterior. A point estimate ("hard" assignment) keeps
# only the best. At low SNR the posterior is broad, and the difference matters.
#
# **[sharpen]** Convenient priors: uniform over angles, Gaussian over origins (its σ re-estimated),
# class weights (a categorical prior, re-estimated), Gaussian on Fourier coefficients of the
# averages with a variance from their power spectrum. CTF parameters and the noise spectrum are
# taken as point estimates (estimated once or per iteration) because integrating over them would
# multiply the hypotheses again; the same trade-off makes practical programs keep only the
# significant part of each posterior.

# %%
low, high = view_particles(200, seed=9, snr=0.02)[0], view_particles(200, seed=9, snr=0.5)[0]
_, _, ctf9, which9, _ = view_particles(200, seed=9)
mp = {}
for label, data in (("SNR 0.02", low), ("SNR 0.5", high)):
    st = e_step(result.state, next(iter(batches_from_tensors(data, ctf=ctf9, batch_size=200))))
    mp[label] = float(st.particles.max_probability.median())
print("median probability of the best hypothesis:", {k: round(v, 3) for k, v in mp.items()})
assert mp["SNR 0.02"] < mp["SNR 0.5"] and mp["SNR 0.02"] < 0.9

# %%
print(f"notebook ran in {time.perf_counter() - T_START:.1f} s")
assert time.perf_counter() - T_START < 90
