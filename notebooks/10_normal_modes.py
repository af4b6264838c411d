# %% [markdown]
# # 10 — Normal mode analysis and physics-based conformational heterogeneity
#
# Study-group sessions **29 Apr 2021 (blur)** and **6 May 2021 (sharpen)**, guest lectures by
# James Krieger on normal mode analysis and ProDy. The sessions' questions, answered by
# computation on adenylate kinase (ADK: open 4AKE, closed 1AKE, the same 3341 atoms):
#
# 1. *Have a look at some ProDy tutorials* — the ANM of 4AKE, with ProDy and with cryolab.
# 2. *Individual particles fluctuate about an average state along "large breathing motions" from
#    normal modes. How does this heterogeneity affect the final reconstruction? What might happen
#    to the error in their alignment?*
# 3. *How can physics-based models, the type ProDy uses, be incorporated into cryo-EM data
#    processing and analysis?*
# 4. *What are the computational bottlenecks (runtime, memory) in prody.dynamics?*
#
# The elastic network (Bahar et al. 2010, Chem. Rev. 110, 1463, section 2): Cα atoms joined by
# springs of constant γ within a cutoff (ANM 15 Å); the Hessian `H` (3N × 3N) of the network
# energy at the input structure; its eigenvectors are the normal modes, the smallest non-zero
# eigenvalues the slowest, most collective motions. Each section ends in assertions
# (`tests/test_notebooks.py` runs this file). Amplitudes along a mode are in Å RMSD over all
# atoms of the model.

# %%
import time

import numpy as np
import scipy.linalg
import torch
from scipy.optimize import minimize
from scipy.spatial import cKDTree

from cryolab.atoms import AtomicModel, atoms_to_potential, builtin_model, center_of_mass
from cryolab.nma import (anm_hessian, anm_modes, bin_amplitudes, collectivity, conformation_assignment,
                         conformation_maps, conformational_change, cumulative_overlap, displace_along_modes,
                         mode_displacements, mode_overlap, node_of_atom, overlap_matrix, replicate_on_lattice, rmsd,
                         sample_mode_amplitudes, square_fluctuations, superpose, with_coordinates)
from cryolab.projection import project_fourier
from cryolab.report import plt, save_figure
from cryolab.rotations import relion_euler_to_matrix
from cryolab.simulate import ParticleParameters, clean_images, generator_for, prepare_maps, simulate_images
from cryolab.simulate.noise import GaussianNoise
from cryolab.validate import fsc, fsc_resolution_A
from cryolab.lab import notebook_output_dir

OUT = notebook_output_dir()
torch.manual_seed(0)
T_START = time.perf_counter()

# Heavy atoms only: hydrogens add no information at the resolutions used here and double the cost.
open_model = builtin_model("adk_open", hydrogens=False)
closed_model = builtin_model("adk_closed", hydrogens=False)
is_ca = (open_model.atom_names == "CA") & (open_model.elements == "C")
nodes = np.flatnonzero(is_ca)
ca_open, ca_closed = open_model.coords_A[nodes], closed_model.coords_A[nodes]
residues = open_model.residue_ids[nodes]
follow = node_of_atom(open_model, nodes)  # every atom moves with its residue's Cα
# ADK domains (CORE, and the two lids that close over the substrates)
DOMAINS = {"CORE": (residues <= 29) | ((residues >= 60) & (residues <= 121)) | (residues >= 160),
           "NMP": (residues >= 30) & (residues <= 59), "LID": (residues >= 122) & (residues <= 159)}
print(f"{len(open_model)} heavy atoms, {len(nodes)} Cα nodes")

# %% [markdown]
# ## 1. The ANM of 4AKE, with ProDy and with cryolab
#
# ProDy builds the dense Hessian and diagonalises it (LAPACK). cryolab builds it sparse from a
# k-d-tree neighbour search and finds the lowest modes with shift-invert Lanczos (ARPACK). Same
# network, same modes: eigenvalues to rounding, overlaps 1.

# %%
import prody  # noqa: E402

prody.confProDy(verbosity="none")
anm = prody.ANM("4AKE")
anm.buildHessian(ca_open, cutoff=15.0, gamma=1.0)
anm.calcModes(20)
modes = anm_modes(ca_open, n_modes=20, atom_indices=nodes)

rel_eigenvalue_diff = float(np.max(np.abs(modes.eigenvalues.numpy() - anm.getEigvals()) / anm.getEigvals()))
mode_overlaps = overlap_matrix(modes.eigenvectors, anm.getEigvecs()).diagonal().numpy()
sq_flucts = square_fluctuations(modes).numpy()
bfactors = open_model.bfactors_A2[nodes]
corr_b = float(np.corrcoef(sq_flucts, bfactors)[0, 1])
kappa = collectivity(modes).numpy()
print(f"eigenvalues: largest relative difference to ProDy {rel_eigenvalue_diff:.1e}; "
      f"smallest |overlap| of the 20 modes {mode_overlaps.min():.6f}")
print(f"slowest eigenvalues {np.round(modes.eigenvalues.numpy()[:4], 4)}; collectivity {np.round(kappa[:4], 2)}")
print(f"correlation of ANM square fluctuations with crystallographic B-factors: {corr_b:.2f}")

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(residues, sq_flucts / sq_flucts.mean(), label="ANM, 20 slowest modes")
ax.plot(residues, bfactors / bfactors.mean(), color="0.5", ls="--", label="B-factor (4AKE)")
for name, sel in DOMAINS.items():
    if name != "CORE":
        ax.axvspan(residues[sel].min(), residues[sel].max(), color="tab:orange" if name == "LID" else "tab:green",
                   alpha=0.12, label=name)
ax.set_xlabel("residue")
ax.set_ylabel("relative square fluctuation")
ax.legend(fontsize=8, frameon=False)
save_figure(fig, OUT / "10_fluctuations.png")

assert rel_eigenvalue_diff < 1e-6
assert mode_overlaps.min() >= 0.99
assert np.allclose(sq_flucts, prody.calcSqFlucts(anm), rtol=1e-6)
assert corr_b > 0.4  # the network knows which parts are mobile
assert 0.2 < kappa[0] < 1

# %% [markdown]
# ## 2. The slowest modes and the open → closed change
#
# Superpose 1AKE on 4AKE (Kabsch) and take the difference of the Cα: the observed change. Its
# overlap with mode k is the cosine `|v_k · d| / |d|`; the cumulative overlap of the first k
# modes, `sqrt(Σ o²)`, is the fraction of the change they describe. The classic picture
# (Tama & Sanejouand 2001; ProDy's tutorial): one slow hinge mode closes the lids.

# %%
change = conformational_change(ca_open, ca_closed)
overlap = mode_overlap(modes, change).numpy()
cumulative = cumulative_overlap(overlap).numpy()
rmsd_change = float(rmsd(change, torch.zeros_like(change)))
# moving along mode 1 by the best amount removes the part of the change it describes
best = float(overlap[0] * np.linalg.norm(change.numpy()) / np.sqrt(len(nodes)))  # Å RMSD over Cα
ca_moved = ca_open + best * np.sqrt(len(nodes)) * modes.vectors_xyz()[0].numpy()
rmsd_after = float(rmsd(superpose(ca_moved, ca_closed)[0], ca_closed))
print(f"4AKE → 1AKE: Cα RMSD {rmsd_change:.2f} Å; overlap of mode 1 {abs(overlap[0]):.3f}, "
      f"cumulative: 3 modes {cumulative[2]:.3f}, 10 modes {cumulative[9]:.3f}, 20 modes {cumulative[19]:.3f}")
print(f"open moved {best:+.2f} Å RMSD along mode 1: Cα RMSD to closed {rmsd_after:.2f} Å (from {rmsd_change:.2f})")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
ax[0].bar(np.arange(1, 21), np.abs(overlap), label="|overlap|")
ax[0].plot(np.arange(1, 21), cumulative, "o-", color="tab:red", ms=3, label="cumulative")
ax[0].set_xlabel("mode")
ax[0].set_ylim(0, 1)
ax[0].set_title("ANM modes of 4AKE vs the change to 1AKE")
ax[0].legend(frameon=False, fontsize=8)
per_residue = np.linalg.norm(change.numpy(), axis=1)
mode1 = np.linalg.norm(modes.vectors_xyz()[0].numpy(), axis=1)
ax[1].plot(residues, per_residue / per_residue.max(), label="|Δr| observed (1AKE − 4AKE)")
ax[1].plot(residues, mode1 / mode1.max(), label="|v₁| mode 1")
ax[1].set_xlabel("residue")
ax[1].set_title("where the change and mode 1 move")
ax[1].legend(frameon=False, fontsize=8)
fig.tight_layout()
save_figure(fig, OUT / "10_overlap_4ake_1ake.png")

assert 0.75 < abs(overlap[0]) < 0.82  # 0.786, as ProDy
assert np.argmax(np.abs(overlap)) == 0
assert cumulative[19] > 0.95
assert rmsd_after < 0.7 * rmsd_change
assert np.corrcoef(per_residue, mode1)[0, 1] > 0.7

# %% [markdown]
# ## 3. Computational bottlenecks (sharpen question 2)
#
# ProDy's `ANM.buildHessian` fills a dense 3N × 3N matrix (memory 8·(3N)² bytes) and
# `calcModes` calls a dense symmetric eigensolver (time ∝ (3N)³), even for 20 modes. The
# network has only ~40 contacts per node, so the Hessian is > 99 % zeros for large N. cryolab's
# sparse path stores the contacts (memory ∝ N) and factorises `H − σI` once (σ slightly below 0)
# for shift-invert Lanczos. Measured here (CPU time, one BLAS thread) on assemblies of 1 – 8
# copies of 4AKE on a lattice (3 Å gaps: one connected network; copies further apart than the
# cutoff would add six zero modes each). `benchmarks/nma.py` runs the same comparison against ProDy up to 50,000 residues.

# %%
def seconds(fn, repeat=2):
    """Best CPU time (all threads) of ``repeat`` runs: steadier than wall time on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


from threadpoolctl import threadpool_limits  # noqa: E402

anm_modes(ca_open, n_modes=20, method="sparse")  # warm up (imports, first factorisation)
rows = []
_limit = threadpool_limits(1)  # one BLAS thread: CPU time then measures work, not threads spinning
for copies in (1, 2, 4, 8):
    x = replicate_on_lattice(ca_open, copies)
    h = anm_hessian(x)
    dof = h.shape[0]
    row = {"residues": len(x), "dof": dof, "dense_MB": 8 * dof**2 / 2**20,
           "sparse_MB": (h.data.nbytes + h.indices.nbytes + h.indptr.nbytes) / 2**20,
           "sparse_s": seconds(lambda: anm_modes(x, n_modes=20, method="sparse"))}
    if copies <= 4:  # dense grows as (3N)³
        row["dense_s"] = seconds(lambda: scipy.linalg.eigh(h.toarray(), subset_by_index=[0, 25]), repeat=1)
    rows.append(row)
    print(f"{len(x):5d} residues: Hessian dense {row['dense_MB']:8.1f} MB, sparse {row['sparse_MB']:6.1f} MB; "
          f"modes sparse {row['sparse_s']:.2f} s" + (f", dense LAPACK {row['dense_s']:.2f} s" if "dense_s" in row else ""))

_limit.restore_original_limits()
n_res = np.array([r["residues"] for r in rows])
sparse_s = np.array([r["sparse_s"] for r in rows])
dense_rows = [r for r in rows if "dense_s" in r]
dense_slope = np.polyfit(np.log([r["residues"] for r in dense_rows]), np.log([r["dense_s"] for r in dense_rows]), 1)[0]
sparse_slope = np.polyfit(np.log(n_res), np.log(sparse_s), 1)[0]
print(f"CPU time ∝ N^{dense_slope:.1f} (dense, LAPACK), N^{sparse_slope:.1f} (sparse); "
      f"memory ∝ N² (dense), N (sparse): at 10,000 residues dense needs {8 * 30174**2 / 2**30:.1f} GB")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ax[0].loglog([r["residues"] for r in dense_rows], [r["dense_s"] for r in dense_rows], "o-", label="dense Hessian + LAPACK eigh (ProDy's way)")
ax[0].loglog(n_res, sparse_s, "s-", label="sparse shift-invert (20 modes)")
ax[0].set_xlabel("residues")
ax[0].set_ylabel("CPU seconds")
ax[0].legend(frameon=False, fontsize=8)
ax[1].loglog(n_res, [r["dense_MB"] for r in rows], "o-", label="dense Hessian")
ax[1].loglog(n_res, [r["sparse_MB"] for r in rows], "s-", label="sparse Hessian (CSR)")
ax[1].set_xlabel("residues")
ax[1].set_ylabel("MB")
ax[1].legend(frameon=False, fontsize=8)
fig.tight_layout()
save_figure(fig, OUT / "10_bottlenecks.png")

assert rows[-1]["dense_MB"] > 20 * rows[-1]["sparse_MB"]
assert dense_slope > sparse_slope  # the dense eigensolver grows faster (asymptotically N³ vs ~N)
assert rows[2]["sparse_s"] < rows[2]["dense_s"]

# %% [markdown]
# ## 4. Breathing motions blur a homogeneous reconstruction (blur question 2)
#
# Let every particle be the open structure displaced along mode 1 by an amplitude `a ~ N(0, σ²)`
# (σ = 2.5 Å RMSD over all atoms; mode 1 is the lid-closing hinge). With perfect alignment and
# infinitely many particles, a homogeneous reconstruction converges to the average of the
# conformations' maps. The ensemble here: 20 conformations at equal-probability quantiles of the
# Gaussian (a small, evenly weighted sample), maps without B-factors at 2 Å/pixel so that the
# blur comes from the motion alone. Compared with the map of the mean structure (FSC; real-space
# correlation inside each domain), the average loses high resolution — and it loses it where the
# mode moves: the lids, not the CORE. The global FSC hides much of it (the static CORE carries
# most of the mass), which is why local measures matter for flexible molecules.

# %%
import dataclasses  # noqa: E402
from scipy.stats import norm  # noqa: E402

PX, BOX, SIGMA, K = 2.0, 48, 2.5, 20
map_model = dataclasses.replace(open_model, bfactors_A2=np.zeros(len(open_model)))
centre = center_of_mass(open_model)
unit_field = mode_displacements(modes, follow, mode_indices=[0])[0].numpy()  # (n_atoms, 3), 1 Å RMSD
ensemble_amplitudes = torch.tensor(SIGMA * norm.ppf((np.arange(K) + 0.5) / K))[:, None]
ensemble = displace_along_modes(open_model.coords_A, modes, ensemble_amplitudes, node_of_atom_index=follow,
                                mode_indices=[0])
ensemble_maps = conformation_maps(map_model, ensemble, BOX, PX, center=centre)
average = ensemble_maps.mean(0)  # the homogeneous reconstruction of the ensemble
mean_map = atoms_to_potential(map_model, BOX, PX, center=centre)  # the mean (reference) structure

# domain masks: voxels within 3 Å of a domain's atoms (reference structure)
zyx = (np.indices((BOX,) * 3).reshape(3, -1).T - BOX // 2) * PX
voxel_xyz = zyx[:, ::-1] + centre.numpy()
residue_of_atom = open_model.residue_ids
masks = {}
for name, sel in DOMAINS.items():
    atom_sel = np.isin(residue_of_atom, residues[sel])
    near = cKDTree(open_model.coords_A[atom_sel]).query_ball_point(voxel_xyz, r=3.0, return_length=True) > 0
    masks[name] = torch.from_numpy(near.reshape((BOX,) * 3))


def masked_correlation(a, b, mask):
    a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


curve = fsc(average, mean_map)
curve_single = fsc(ensemble_maps[K - 3], mean_map)  # one conformation, at +1.3 σ
res_09 = float(fsc_resolution_A(curve, BOX, PX, threshold=0.9))
domain_corr = {d: masked_correlation(average, mean_map, m) for d, m in masks.items()}
domain_rms = {d: float(SIGMA * np.sqrt((unit_field[np.isin(residue_of_atom, residues[sel])] ** 2).sum(1).mean()))
              for d, sel in DOMAINS.items()}
print(f"σ = {SIGMA} Å RMSD along mode 1, {K} conformations: FSC(average, mean-structure map) falls below 0.9 "
      f"at {res_09:.1f} Å and is {float(curve[-1]):.2f} at Nyquist ({2 * PX:.0f} Å); one conformation at +1.3 σ: "
      f"{float(curve_single[-1]):.2f} at Nyquist")
print("rms displacement per domain: " + ", ".join(f"{d} {v:.2f} Å" for d, v in domain_rms.items()))
print("correlation with the mean-structure map inside each domain: "
      + ", ".join(f"{d} {c:.3f}" for d, c in domain_corr.items()))

freq = np.arange(BOX // 2 + 1) / (BOX * PX)
fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
ax[0].plot(freq, curve.numpy(), label=f"average of {K} conformations")
ax[0].plot(freq, curve_single.numpy(), ls="--", label="one conformation (+1.3 σ)")
ax[0].axhline(0.9, color="0.6", lw=0.6)
ax[0].set_xlabel("spatial frequency (1/Å)")
ax[0].set_ylabel("FSC with the mean-structure map")
ax[0].legend(frameon=False, fontsize=8)
names = list(DOMAINS)
ax[1].bar(names, [1 - domain_corr[d] for d in names], color=["tab:blue", "tab:green", "tab:orange"])
ax[1].set_ylabel("1 − correlation in the domain")
ax[1].set_title(f"σ = {SIGMA} Å along mode 1")
slab = slice(BOX // 2 - 3, BOX // 2 + 4)
ax[2].imshow(np.concatenate([mean_map[slab].sum(0).numpy(), average[slab].sum(0).numpy()], axis=1),
             cmap="gray", origin="lower")
ax[2].set_title("central slab: mean structure | average")
ax[2].axis("off")
fig.tight_layout()
save_figure(fig, OUT / "10_breathing_blur.png")

assert res_09 >= 3 * PX  # agreement lost from ~8 Å on: high resolution is where the motion shows
assert curve[-1] < 0.9 and curve[2] > 0.98
assert curve_single[-1] < curve[-1]  # the average keeps the static CORE; a single far conformation differs everywhere
assert domain_corr["LID"] < domain_corr["CORE"] and domain_corr["NMP"] < domain_corr["CORE"]
assert domain_rms["LID"] > domain_rms["NMP"] > domain_rms["CORE"]

# %% [markdown]
# **Alignment.** A particle in a displaced conformation matches the consensus less well: its
# cross-correlation peak is lower and, at low SNR, noise wins more often, so orientations are
# estimated less precisely — and the error feeds back as more blur. Here: one view, in-plane
# angle searched in 2° steps against projections of the mean-structure map, 60 noise
# realisations per amplitude (SNR 0.02 per pixel).

# %%
view = torch.tensor([30.0, 70.0, 0.0])
psi_grid = torch.arange(0.0, 360.0, 2.0)
ref_rot = relion_euler_to_matrix(torch.stack([view[0].expand_as(psi_grid), view[1].expand_as(psi_grid), psi_grid], -1))
refs = project_fourier(mean_map, ref_rot)
refs = (refs - refs.mean((-2, -1), keepdim=True)).reshape(len(psi_grid), -1)
refs = refs / refs.norm(dim=1, keepdim=True)
test_amplitudes = [0.0, 4.0, 8.0]
test_maps = torch.stack([mean_map, *conformation_maps(
    map_model, displace_along_modes(open_model.coords_A, modes, torch.tensor([[4.0], [8.0]]), node_of_atom_index=follow,
                                    mode_indices=[0]), BOX, PX, center=centre)])
clean = project_fourier(test_maps, relion_euler_to_matrix(view))  # (3, N, N)
g = torch.Generator().manual_seed(3)
noise_sigma = float(clean[0].std() / np.sqrt(0.02))
errors, peak = [], []
for img in clean:
    noisy = img + noise_sigma * torch.randn(60, BOX, BOX, generator=g)
    scores = (noisy - noisy.mean((-2, -1), keepdim=True)).reshape(60, -1) @ refs.T
    psi_hat = psi_grid[scores.argmax(1)]
    err = (psi_hat + 180) % 360 - 180
    errors.append(float(torch.sqrt((err**2).mean())))
    c = (img - img.mean()).reshape(-1)
    peak.append(float((refs @ (c / c.norm())).max()))
for a, e, p in zip(test_amplitudes, errors, peak):
    print(f"amplitude {a:4.1f} Å: best clean correlation with the consensus {p:.3f}; RMS in-plane error {e:5.1f}°")

assert peak[0] > peak[1] > peak[2]
assert errors[2] > errors[0]

# %% [markdown]
# ## 5. Physics-based models in cryo-EM analysis (questions 3 and 1 of the sharpen session)
#
# The modes are a small, physically plausible basis for conformational change. Two uses:
#
# **(a) Flexible fitting** (NMFF, iMODfit, HEMNMA's first step): move a model along a few slow
# modes to fit a map of another state. Here the open model is fitted into a 3 Å-sampled map of the
# closed state (Cα pseudo-atoms, B = 150 Å²) by maximising the map correlation over the amplitudes
# of modes 1–3 — three numbers instead of 3N coordinates.

# %%
ca_model = AtomicModel(coords_A=ca_open, elements=np.full(len(nodes), "C"), bfactors_A2=np.full(len(nodes), 150.0),
                            occupancies=np.ones(len(nodes)), atom_names=open_model.atom_names[nodes],
                            residue_names=open_model.residue_names[nodes], residue_ids=residues,
                            chain_ids=open_model.chain_ids[nodes])
closed_on_open = superpose(ca_closed, ca_open)[0].numpy()  # the target in the model's frame
FIT_BOX, FIT_PX = 32, 3.0
fit_centre = center_of_mass(ca_model)
target = atoms_to_potential(with_coordinates(ca_model, closed_on_open), FIT_BOX, FIT_PX, center=fit_centre)
self_index = np.arange(len(nodes))


def fitted(amplitudes):
    return displace_along_modes(ca_open, modes, amplitudes, node_of_atom_index=self_index, mode_indices=[0, 1, 2])


def loss(amplitudes):
    vol = atoms_to_potential(with_coordinates(ca_model, fitted(amplitudes)), FIT_BOX, FIT_PX, center=fit_centre)
    return -masked_correlation(vol, target, torch.ones_like(vol, dtype=torch.bool))


result = minimize(loss, np.zeros(3), method="Powell", options={"xtol": 0.05, "ftol": 1e-4, "maxfev": 150})
rmsd_start = float(rmsd(ca_open, closed_on_open))
rmsd_fit = float(rmsd(superpose(fitted(result.x).numpy(), closed_on_open)[0], closed_on_open))
ideal = float(rmsd_change * np.sqrt(1 - cumulative[2] ** 2))  # best possible with 3 modes (linear)
print(f"fit along modes 1-3: amplitudes {np.round(result.x, 2)} Å, {result.nfev} map evaluations; "
      f"correlation {-loss(np.zeros(3)):.3f} → {-result.fun:.3f}; Cα RMSD to 1AKE {rmsd_start:.2f} → {rmsd_fit:.2f} Å "
      f"(best possible with these three modes {ideal:.2f} Å)")

assert -result.fun > -loss(np.zeros(3)) + 0.02
assert rmsd_fit < 0.75 * rmsd_start

# %% [markdown]
# **(b) A physical latent space for heterogeneity** (HEMNMA, and the priors of deep generative
# models): simulate particles whose conformations follow a two-state mixture along mode 1
# (±3 Å RMSD), binned into 7 maps and projected with CTF and noise by the simulator; then read
# each particle's amplitude back by matching it, at its known pose, against the 7 conformations.
# The images carry the latent: the recovered amplitudes follow the true ones.

# %%
n_particles, seed = 64, 11
latent = sample_mode_amplitudes(n_particles, 1, distribution="mixture", means_A=[-3.0, 3.0], sigma_A=0.7,
                                generator=generator_for(seed, "latent"))
centres, labels = bin_amplitudes(latent, 7)
conf = displace_along_modes(open_model.coords_A, modes, centres, node_of_atom_index=follow, mode_indices=[0])
conf_maps = conformation_maps(open_model, conf, BOX, PX, center=centre)
from cryolab.simulate import sample_ctf_params, uniform_poses  # noqa: E402

particles = ParticleParameters(uniform_poses(n_particles, generator=generator_for(seed, "poses")), torch.zeros(n_particles, 2),
                               sample_ctf_params(n_particles, generator=generator_for(seed, "ctf")),
                               conformation_assignment(labels))
_, noisy = simulate_images(list(conf_maps), particles, PX, noise=GaussianNoise(0.5), seed=seed)
tables = prepare_maps(list(conf_maps))
scores = torch.zeros(n_particles, len(centres))
for k in range(len(centres)):
    trial = ParticleParameters(particles.euler_deg, particles.shifts_A, particles.ctf,
                               conformation_assignment(torch.full((n_particles,), k)))
    candidates = clean_images(tables, trial, BOX, PX)
    scores[:, k] = -((noisy - candidates / candidates.std()) ** 2).sum((-2, -1))  # noise std 1 in the output
recovered = centres[scores.argmax(1), 0]
truth = latent[:, 0]
r_latent = float(np.corrcoef(recovered.numpy(), truth.numpy())[0, 1])
state_agreement = float((torch.sign(recovered) == torch.sign(truth)).double().mean())
print(f"{n_particles} particles, {len(centres)} conformations: correlation of recovered and true amplitude {r_latent:.2f}; "
      f"open/closed side assigned correctly for {100 * state_agreement:.0f} %")

fig, ax = plt.subplots(figsize=(4.2, 3.6))
ax.scatter(truth, recovered, s=12)
ax.plot([-5, 5], [-5, 5], color="0.6", lw=0.6)
ax.set_xlabel("true amplitude along mode 1 (Å)")
ax.set_ylabel("recovered (best of 7 maps)")
save_figure(fig, OUT / "10_latent_recovery.png")

assert r_latent > 0.8
assert state_agreement > 0.9

# %% [markdown]
# ## Answers
#
# - **ProDy and cryolab** compute the same ANM (eigenvalues agree to ~1e-13, overlaps 1.000).
#   The slowest mode of open ADK alone has overlap 0.786 with the open → closed change (it
#   describes 62 % of its squared displacement); the first 20 modes reach a cumulative overlap
#   of 0.97. Square fluctuations follow the crystallographic B-factors (r ≈ 0.77): the lids are
#   the mobile parts.
# - **Bottlenecks** (sharpen 2): prody.dynamics' dense Hessian costs 8·(3N)² bytes (6.8 GB at
#   10,000 residues, 168 GB at 50,000) and its dense eigensolver ~(3N)³ time, however few modes
#   are wanted, although the Hessian is > 99 % zeros. Sparse storage plus shift-invert Lanczos
#   grows about linearly in memory and near-linearly in time over these sizes;
#   `benchmarks/nma.py` reaches 50,000 residues in about 2 GB.
# - **Breathing heterogeneity** (blur 2) averages conformations: with perfect alignment the
#   reconstruction tends to the latent average of the maps. It keeps the low resolution and the
#   static CORE, and loses the high resolution where the mode moves — the LID and NMP blur, the
#   CORE stays sharp, as local-resolution maps of flexible complexes show; the global FSC hides
#   much of it. Particles far along the mode correlate less with the consensus, so at low SNR
#   their orientations are estimated worse (the in-plane error grows several-fold here), which
#   blurs the flexible parts further. Remedies: focused refinement on the rigid part, or
#   modelling the motion.
# - **Physics-based models in cryo-EM** (blur 3, sharpen 1): a low-dimensional basis for
#   flexible fitting of atomic models into maps of other states (three mode amplitudes took the
#   open model most of the way to the closed one), and a latent space of heterogeneity — each
#   particle's amplitudes along a few modes, which the images do constrain, as the recovery
#   shows. They also give simulators realistic continuous heterogeneity
#   (`cryolab nma --simulate-n`).

# %%
elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300
