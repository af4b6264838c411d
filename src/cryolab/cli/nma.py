"""Normal modes of an atomic model (ANM or GNM), their fit to a second state, trajectories and particle ensembles.

Builds an elastic network on the selected atoms (default: the Cα of every chain) of a PDB/mmCIF
model or a built-in model (adk_open, adk_closed): springs of constant γ between atoms closer than
the cutoff (ANM 15 Å, GNM 10 Å, as ProDy). The slowest non-zero modes come from a sparse Hessian
and shift-invert Lanczos (large assemblies fit in memory) or a dense eigensolver (--method dense);
--method prody uses ProDy. A network that falls apart at the cutoff is an error that
names the smallest cutoff that connects it.

With --second-state (the same atoms in another conformation, e.g. 1AKE for 4AKE), the change is
superposed (Kabsch) and compared with each mode: overlap |v_k·d|/|d| and cumulative overlap.

The full model (all atoms, every atom moving with its residue's Cα) is moved along each mode of
--trajectory-modes from −A to +A Å RMSD in --frames steps and written as a multi-model PDB.

With --simulate-n, a particle data set whose conformations follow a latent distribution along
--latent-modes: amplitudes (Å RMSD) from a Gaussian (--latent-sigma-A about 0) or a mixture of
Gaussians (--latent-means-A, --latent-sigma-A, --latent-weights), binned into --conformations
maps (Coulomb potentials, one frame), each particle projected from its bin's map at a uniform
random pose with a CTF and white noise at --snr (cryolab simulate's forward model and writer).

Writes into the output folder:

  modes.npz             eigenvalues (k,), eigenvectors (d, k) [d = 3N ANM, N GNM; columns, as ProDy],
                        atom_indices (N,) into the full model, coordinates (N, 3) Å, residue_ids,
                        chain_ids, model, cutoff_A, gamma, collectivity; and overlap, displacement
                        with --second-state
  modes.csv             per mode: eigenvalue, collectivity, (overlap, cumulative overlap)
  fluctuations.png      square fluctuations vs residue (and scaled B-factors of the nodes)
  overlap.png           per-mode and cumulative overlap with the change to the second state
  mode_01.pdb, ...      multi-model PDB trajectory per requested mode (opens in ChimeraX/PyMOL)
  particles.star, particles_#####.mrcs, simulation.json   with --simulate-n (RELION 3.1; the
                        STAR rows carry cryolabState = conformation and cryolabMode<k>AmplitudeAngst)
  conformations/conformation_##.mrc   the maps of the binned conformations (with --simulate-n)
  index.html            the figures with captions

Examples:
  cryolab nma adk_open --second-state adk_closed -o adk_nma
  cryolab nma model.cif --selection "//A/*/CA[C]" --modes 50 --trajectory-modes 1 2 --amplitude-A 4 -o out
  cryolab nma adk_open --simulate-n 1000 --latent mixture --latent-means-A -3 3 --latent-sigma-A 1 \\
      --box 64 --pixel-size 1.5 --snr 0.1 --seed 1 -o ens
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("input", metavar="MODEL", help="PDB/mmCIF file (.gz allowed) or built-in model name (adk_open, adk_closed)")
    parser.add_argument("--second-state", metavar="MODEL",
                        help="the same atoms in another conformation: overlap of the modes with the change (ANM)")
    parser.add_argument("--model", choices=["anm", "gnm"], default="anm",
                        help="anisotropic (3D directions) or Gaussian (isotropic) network model (default anm)")
    parser.add_argument("--modes", type=int, default=20, metavar="K", help="number of slowest non-zero modes (default 20)")
    parser.add_argument("--cutoff-A", type=float, metavar="Å",
                        help="contact cutoff in Å (default 15 for ANM, 10 for GNM, as ProDy)")
    parser.add_argument("--gamma", type=float, default=1.0, metavar="γ",
                        help="spring constant (default 1); eigenvalues scale with it, fluctuations with 1/γ")
    parser.add_argument("--selection", metavar="CID", default=None,
                        help="gemmi selection of the network's atoms, MMDB CID syntax (default '//*/*/CA[C]': Cα of all "
                             "chains; e.g. '//A/*/CA[C]' chain A, '//A/10-200/CA[C]' a range of residues)")
    parser.add_argument("--method", choices=["auto", "dense", "sparse", "prody"], default="auto",
                        help="eigensolver: dense (torch), sparse (shift-invert Lanczos), ProDy, or auto "
                             "(sparse unless the network is tiny; default)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the latent draws, poses, CTFs and noise (default 0)")

    t = parser.add_argument_group("trajectories (ANM)")
    t.add_argument("--trajectory-modes", type=int, nargs="*", default=[1, 2, 3], metavar="M",
                   help="1-based modes to write as multi-model PDB trajectories (default 1 2 3; none: no trajectories)")
    t.add_argument("--amplitude-A", type=float, default=3.0, metavar="Å",
                   help="largest displacement of a trajectory, in Å RMSD over all atoms of the model (default 3)")
    t.add_argument("--frames", type=int, default=11, metavar="F", help="frames per trajectory, from −A to +A (default 11)")

    s = parser.add_argument_group("particle ensemble (ANM, with --simulate-n)")
    s.add_argument("--simulate-n", type=int, metavar="N", help="simulate N particles whose conformations follow the latent")
    s.add_argument("--latent", choices=["gaussian", "mixture"], default="gaussian",
                   help="distribution of the amplitudes: Gaussian about the model, or a mixture of Gaussians (default gaussian)")
    s.add_argument("--latent-modes", type=int, nargs="+", default=[1], metavar="M",
                   help="1-based modes the particles move along (default 1)")
    s.add_argument("--latent-sigma-A", type=float, nargs="+", default=[2.0], metavar="Å",
                   help="standard deviation of the amplitudes in Å RMSD: one, one per mode (gaussian), or one per "
                        "component (mixture) (default 2)")
    s.add_argument("--latent-means-A", type=float, nargs="+", metavar="Å",
                   help="means in Å RMSD: one per mode (gaussian, default 0) or, for a mixture, components × modes "
                        "values, component by component (e.g. -3 3 for two states along one mode)")
    s.add_argument("--latent-weights", type=float, nargs="+", metavar="W", help="relative weight of each mixture component (default equal)")
    s.add_argument("--conformations", type=int, default=11, metavar="K",
                   help="number of maps the latent is binned into (equal-width bins for one mode, k-means for several; default 11)")
    s.add_argument("--box", type=int, metavar="PX", help="image and map size in pixels (default: just fits the model)")
    s.add_argument("--pixel-size", type=float, default=1.0, metavar="Å", help="pixel size in Å (default 1.0)")
    s.add_argument("--snr", type=float, default=0.1, metavar="SNR", help="white Gaussian noise at var(signal)/var(noise) over the box (default 0.1)")
    s.add_argument("--no-ctf", action="store_true", help="no CTF (default: defocus 1.0–2.5 µm, 300 kV, Cs 2.7 mm, Q0 0.1)")


def _read_pair(name: str, selection: str):
    """(full model, selected nodes) of a file or built-in model name."""
    from importlib import resources

    from cryolab.atoms import BUILTIN_MODELS, read_atoms

    if name in BUILTIN_MODELS:
        ref = resources.files("cryolab") / "data" / BUILTIN_MODELS[name]
        with resources.as_file(ref) as path:
            return read_atoms(path), read_atoms(path, selection=selection)
    return read_atoms(name), read_atoms(name, selection=selection)


def _check_same_atoms(a, b, name_a: str, name_b: str) -> None:
    import numpy as np

    from cryolab.errors import InputError

    if len(a) != len(b) or not (np.array_equal(a.atom_names, b.atom_names) and np.array_equal(a.residue_ids, b.residue_ids)):
        detail = f"{len(b)} selected atoms vs {len(a)} in {name_a}"
        if len(a) == len(b):
            k = int(np.flatnonzero((a.atom_names != b.atom_names) | (a.residue_ids != b.residue_ids))[0])
            detail = (f"atom {k + 1} is {b.atom_names[k]} {b.residue_ids[k]} here but {a.atom_names[k]} "
                      f"{a.residue_ids[k]} in {name_a}")
        raise InputError(f"second state does not match the model: {detail}; atoms must correspond one to one "
                         "(same residues and atom names, in order)", name_b)


def _fluctuation_figure(modes, nodes_model, title):
    import numpy as np

    from cryolab.nma import square_fluctuations
    from cryolab.report import plt

    sq = square_fluctuations(modes).numpy()
    b = nodes_model.bfactors_A2
    fig, ax = plt.subplots(figsize=(9, 3.6))
    chains = nodes_model.chain_ids
    for c in dict.fromkeys(chains.tolist()):
        sel = chains == c
        ax.plot(nodes_model.residue_ids[sel], sq[sel], lw=1.4, label=f"{modes.model.upper()} chain {c or '-'}")
    if np.ptp(b) > 0:  # scaled B-factors: the experimental counterpart (B = 8π²/3 ⟨ΔR²⟩)
        scale = float(sq @ b / (b @ b))
        ax.plot(nodes_model.residue_ids, b * scale, lw=0.9, color="0.5", ls="--", label="B-factor (scaled)")
    ax.set_xlabel("residue number")
    ax.set_ylabel("square fluctuation (Å² · kBT/γ)")
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    return fig, sq


def _overlap_figure(overlap, cumulative, rms_change):
    import numpy as np

    from cryolab.report import plt

    k = len(overlap)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(np.arange(1, k + 1), np.abs(overlap), color="tab:blue", label="|overlap| of mode k")
    ax.plot(np.arange(1, k + 1), cumulative, "o-", color="tab:red", ms=3, label="cumulative overlap (modes 1…k)")
    ax.set_ylim(0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("mode k")
    ax.set_ylabel("overlap with the observed change")
    ax.set_title(f"mode 1: {abs(overlap[0]):.2f}; first {k}: {cumulative[-1]:.2f} (RMSD {rms_change:.2f} Å)")
    ax.legend(fontsize=8, frameon=False, loc="center right")
    return fig


def _simulate(args, out, full, modes, node_index, recipe):
    import numpy as np
    import torch

    from cryolab.atoms import choose_box
    from cryolab.errors import InputError
    from cryolab.io import write_mrc, write_star
    from cryolab.nma import bin_amplitudes, conformation_assignment, conformation_maps, displace_along_modes, sample_mode_amplitudes
    from cryolab.report import plt, save_figure
    from cryolab.simulate import (GaussianNoise, ParticleParameters, generator_for, sample_ctf_params, uniform_poses,
                                  write_dataset)

    n = args.simulate_n
    if n <= 0:
        raise InputError(f"--simulate-n must be a positive number of particles, got {n}")
    if not args.pixel_size > 0:
        raise InputError(f"--pixel-size must be positive (Å), got {args.pixel_size}")
    if args.box is not None and args.box < 8:
        raise InputError(f"--box must be at least 8 pixels, got {args.box}")
    if not args.snr > 0:
        raise InputError(f"--snr must be positive, got {args.snr}")
    lm = [m - 1 for m in args.latent_modes]
    if min(lm) < 0 or max(lm) >= modes.n_modes:
        raise InputError(f"--latent-modes must lie in 1 … {modes.n_modes}, got {args.latent_modes}")
    if args.latent == "gaussian" and (args.latent_weights or args.latent_means_A and len(args.latent_means_A) != len(lm)):
        raise InputError("a Gaussian latent takes one --latent-means-A per mode and no --latent-weights")
    sigma = args.latent_sigma_A[0] if len(args.latent_sigma_A) == 1 else args.latent_sigma_A
    amplitudes = sample_mode_amplitudes(n, len(lm), distribution=args.latent, sigma_A=sigma, means_A=args.latent_means_A,
                                        weights=args.latent_weights, generator=generator_for(args.seed, "nma-latent"))
    centres, labels = bin_amplitudes(amplitudes, args.conformations, seed=args.seed)
    conformations = displace_along_modes(full.coords_A, modes, centres, node_of_atom_index=node_index, mode_indices=lm)
    px = args.pixel_size
    box = args.box if args.box is not None else max(choose_box(full, px), 16)
    maps = conformation_maps(full, conformations, box, px)
    for k, vol in enumerate(maps):
        write_mrc(out.path(f"conformations/conformation_{k + 1:02d}.mrc"), vol.numpy(), px)

    euler = uniform_poses(n, generator=generator_for(args.seed, "poses"))
    ctf = None if args.no_ctf else sample_ctf_params(n, generator=generator_for(args.seed, "ctf"))
    particles = ParticleParameters(euler, torch.zeros(n, 2), ctf, conformation_assignment(labels))
    recipe["ensemble"] = {"latent": args.latent, "modes_1based": args.latent_modes, "sigma_A": args.latent_sigma_A,
                          "means_A": args.latent_means_A, "weights": args.latent_weights,
                          "conformations": int(len(centres)), "centres_A": centres.tolist(),
                          "binning": "equal-width bins (1 mode) or k-means (several); map k = bin centre",
                          "amplitude_unit": "Å RMSD over all atoms of the model"}
    folder = out.path("particles.star").parent
    result = write_dataset(list(maps), particles, folder, px, noise=GaussianNoise(args.snr), seed=args.seed,
                           metadata={"recipe": recipe})
    table = result.table.copy()
    for j, m in enumerate(args.latent_modes):
        table[f"cryolabMode{m}AmplitudeAngst"] = amplitudes[:, j].numpy().astype(np.float32)
    write_star(result.star_path, table)

    fig, ax = plt.subplots(figsize=(6, 3.4))
    a0 = amplitudes[:, 0].numpy()
    ax.hist(a0, bins=40, color="tab:blue", alpha=0.7, label="particles")
    for c in centres[:, 0].numpy():
        ax.axvline(c, color="k", lw=0.6)
    ax.set_xlabel(f"amplitude along mode {args.latent_modes[0]} (Å RMSD)")
    ax.set_ylabel("particles")
    ax.set_title(f"{n} particles, {len(centres)} conformations (lines: map centres)")
    save_figure(fig, out.path("latent.png"))
    return len(centres), box


def main(args, out) -> None:
    import numpy as np

    from cryolab.errors import InputError
    from cryolab.nma import (ANM_CUTOFF_A, DEFAULT_SELECTION, GNM_CUTOFF_A, anm_modes, collectivity, conformational_change,
                             cumulative_overlap, gnm_modes, match_atoms, mode_overlap, mode_trajectory, node_of_atom, rmsd,
                             write_multimodel_pdb)
    from cryolab.report import Figure, save_figure, write_index

    if args.modes < 1:
        raise InputError(f"--modes must be at least 1, got {args.modes}")
    if args.model == "gnm" and (args.second_state or args.simulate_n):
        raise InputError("--second-state and --simulate-n need 3D modes: use --model anm")
    cutoff = args.cutoff_A if args.cutoff_A is not None else (ANM_CUTOFF_A if args.model == "anm" else GNM_CUTOFF_A)
    selection = args.selection or DEFAULT_SELECTION
    traj_modes = args.trajectory_modes if args.model == "anm" else []
    if traj_modes and (min(traj_modes) < 1 or max(traj_modes) > args.modes):
        raise InputError(f"--trajectory-modes must lie in 1 … {args.modes} (--modes), got {traj_modes}")
    if traj_modes and (args.frames < 2 or not args.amplitude_A > 0):
        raise InputError("--frames must be at least 2 and --amplitude-A positive")

    full, nodes_model = _read_pair(args.input, selection)
    if len(nodes_model) < 3:
        raise InputError(f"the selection {selection!r} has {len(nodes_model)} atoms; an elastic network needs at least 3",
                         args.input)
    second = None
    if args.second_state:
        _, second = _read_pair(args.second_state, selection)
        _check_same_atoms(nodes_model, second, args.input, args.second_state)
    nodes = match_atoms(full, nodes_model)
    solve = anm_modes if args.model == "anm" else gnm_modes
    modes = solve(nodes_model.coords_A, n_modes=args.modes, cutoff_A=cutoff, gamma=args.gamma, method=args.method,
                  atom_indices=nodes)
    coll = collectivity(modes).numpy()
    record = dict(eigenvalues=modes.eigenvalues.numpy(), eigenvectors=modes.eigenvectors.numpy(),
                  atom_indices=modes.atom_indices.numpy(), coordinates=modes.coords_A.numpy(),
                  residue_ids=nodes_model.residue_ids, chain_ids=nodes_model.chain_ids, atom_names=nodes_model.atom_names,
                  model=np.array(args.model), cutoff_A=np.array(cutoff), gamma=np.array(args.gamma),
                  n_zero_modes=np.array(modes.n_zero_modes), collectivity=coll)
    columns = {"mode": np.arange(1, modes.n_modes + 1), "eigenvalue": modes.eigenvalues.numpy(), "collectivity": coll}
    figures = []

    title = (f"{modes.model.upper()} on {len(nodes_model)} atoms ({selection}), cutoff {cutoff:g} Å, "
             f"{modes.n_modes} modes")
    fig, _ = _fluctuation_figure(modes, nodes_model, title)
    save_figure(fig, out.path("fluctuations.png"))
    figures.append(Figure("fluctuations.png", "Square fluctuations",
                          "Σ_k |v_k,i|²/λ_k over the computed modes, per residue (units kBT/γ); dashed: the nodes' "
                          "B-factors scaled to the same mean square, the experimental counterpart."))

    if second is not None:
        change = conformational_change(nodes_model.coords_A, second.coords_A)
        overlap = mode_overlap(modes, change).numpy()
        cumulative = cumulative_overlap(overlap).numpy()
        rms_change = float(rmsd(change, np.zeros_like(change)))
        record.update(overlap=overlap, cumulative_overlap=cumulative, displacement=change.numpy())
        columns.update(overlap=overlap, cumulative_overlap=cumulative)
        save_figure(_overlap_figure(overlap, cumulative, rms_change), out.path("overlap.png"))
        figures.append(Figure("overlap.png", "Overlap with the observed change",
                              f"Cosine between each mode and the displacement to {args.second_state} after Kabsch "
                              f"superposition (RMSD {rms_change:.2f} Å); line: cumulative overlap sqrt(Σ o²)."))

    if traj_modes:
        node_index = node_of_atom(full, nodes)
        for m in traj_modes:
            frames = mode_trajectory(full.coords_A, modes, m - 1, node_of_atom_index=node_index,
                                     amplitude_A=args.amplitude_A, n_frames=args.frames)
            write_multimodel_pdb(full, frames, out.path(f"mode_{m:02d}.pdb"))

    intro = f"{args.input}: {len(full)} atoms, network of {len(nodes_model)}. "
    if args.simulate_n:
        recipe = {"input": args.input, "selection": selection, "model": args.model, "cutoff_A": cutoff}
        n_conf, box = _simulate(args, out, full, modes, node_of_atom(full, nodes), recipe)
        figures.append(Figure("latent.png", "Latent distribution of the particles",
                              f"Amplitudes along mode(s) {args.latent_modes} (Å RMSD) and the {n_conf} conformations "
                              f"they were binned into (maps in conformations/, box {box} px)."))
        intro += f"{args.simulate_n} particles in particles.star. "

    np.savez(out.path("modes.npz"), **record)
    import pandas as pd

    pd.DataFrame(columns).to_csv(out.path("modes.csv"), index=False, float_format="%.6g")
    write_index(out.path("index.html"), "cryolab nma", figures, intro=intro + "Modes in modes.npz and modes.csv.")
