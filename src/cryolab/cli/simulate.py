"""Simulate a particle data set from a map or an atomic model: poses, shifts, CTF, noise, states.

Input: an MRC map (cubic; voxel size from the header or --pixel-size), a PDB/mmCIF model or a
built-in model name (adk_open, adk_closed) turned into a Coulomb potential in volts (box from
--box or just large enough for the model), or several of these with --states.

Each particle is the Fourier-slice projection of the map at a random pose (uniform on SO(3), or
concentrated about --preferred-views, optionally on a tilted stage), shifted, multiplied by its
CTF on a canvas twice the box (so delocalised signal is not wrapped) and cropped; then noise is
added: white Gaussian at --snr (signal variance over the whole box or a disc of
--snr-mask-radius-A), or electron counting at --dose, or none (--no-noise). Noisy images are
normalised to noise standard deviation 1; protein is white. Conventions: docs/conventions.md.

Writes into the output folder:

  particles.star       RELION 3.1 particle file: optics group (pixel size, voltage, Cs, Q0, image
                       size), rlnImageName, rlnAngleRot/Tilt/Psi, rlnOriginXAngst/YAngst,
                       rlnDefocusU/V/Angle, rlnRandomSubset; cryolabState (1-based) with several
                       maps, cryolabLatent on a trajectory, cryolabDefocusOffsetAngst and
                       cryolabMicrographX/YAngst on a tilted stage
  particles_#####.mrcs noisy images, at most --stack-size per file (image names are relative to
                       the output folder: run RELION from inside it)
  clean_#####.mrcs     the clean images on the same scale (with --write-clean)
  simulation.json      the noise model and its parameters (SNR and signal mask, or dose, contrast
                       scale, DQE, MTF), seed, CTF canvas, how poses and CTFs were drawn
  montage.png, index.html   clean and noisy examples

The same --seed gives bit-identical files; --batch-size and --workers change speed and memory,
not results.

Examples:
  cryolab simulate adk_open --box 64 --pixel-size 1.5 -n 1000 --snr 0.05 -o sim
  cryolab simulate map.mrc -n 10000 --dose 40 --mtf sinc --shift-sigma-A 2 -o sim
  cryolab simulate --states adk_open adk_closed --state-weights 0.3 0.7 -n 2000 -o sim
  cryolab simulate --states a.mrc b.mrc c.mrc --trajectory --latent-means 0.2 0.8 -n 5000 -o sim
"""

from __future__ import annotations

_MODEL_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


def _rot_tilt(text: str):
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(text)
    return (float(parts[0]), float(parts[1]))


def add_args(parser) -> None:
    import argparse

    parser.add_argument("input", nargs="?", metavar="MAP_OR_MODEL",
                        help="MRC map (.mrc/.map), PDB/mmCIF model, or built-in model name (adk_open, adk_closed)")
    parser.add_argument("--states", nargs="+", metavar="MAP_OR_MODEL",
                        help="several maps/models (same box and pixel size) instead of MAP_OR_MODEL: discrete states, "
                             "or a trajectory with --trajectory")
    parser.add_argument("-n", "--n-particles", type=int, required=True, metavar="N", help="number of particles")
    parser.add_argument("--seed", type=int, default=0, help="master random seed (default 0)")
    parser.add_argument("--pixel-size", type=float, metavar="Å",
                        help="pixel size in Å: overrides the map header; for models the potential's voxel size (default 1.0)")
    parser.add_argument("--box", type=int, metavar="PX",
                        help="image size in pixels: for models the potential's box (default: fits the model); "
                             "for maps the map is windowed (cropped or zero-padded about its centre) to this size")

    g = parser.add_argument_group("noise (default: --snr 0.1 over the whole box)")
    kind = g.add_mutually_exclusive_group()
    kind.add_argument("--snr", type=float, metavar="SNR", help="white Gaussian noise at var(signal)/var(noise) = SNR")
    kind.add_argument("--dose", type=float, metavar="e/Å²", help="electron counting (Poisson) noise at this dose in e/Å²")
    kind.add_argument("--no-noise", action="store_true", help="write clean images only (in projection units)")
    g.add_argument("--snr-mask-radius-A", type=float, metavar="Å",
                   help="radius in Å of the disc about the box centre over which var(signal) is taken (default: whole box)")
    g.add_argument("--contrast-scale", type=float, metavar="C",
                   help="with --dose: fractional intensity drop per unit of the clean image, i.e. per V·voxel for a map "
                        "in volts (default 2·σ_e·pixel size in Å, the weak-phase value; σ_e = interaction constant in "
                        "rad/(V·Å) at --voltage-kV)")
    g.add_argument("--dqe0", type=float, default=1.0, help="with --dose: detector DQE at zero frequency, in (0, 1] (default 1)")
    g.add_argument("--mtf", choices=["none", "sinc"], default="none",
                   help="with --dose: detector MTF applied to the signal before counting (sinc: ideal counting detector, "
                        "0.64 at Nyquist; default none)")

    c = parser.add_argument_group("CTF")
    c.add_argument("--no-ctf", action="store_true", help="no CTF (no defocus columns in the STAR file)")
    c.add_argument("--ctf-from", metavar="STAR_OR_CS",
                   help="resample CTF parameters (with replacement, voltage, Cs and Q0 included) from this RELION .star "
                        "or cryoSPARC .cs particle file")
    c.add_argument("--defocus-min-A", type=float, default=10000.0, metavar="Å", help="smallest mean defocus in Å (default 10000)")
    c.add_argument("--defocus-max-A", type=float, default=25000.0, metavar="Å", help="largest mean defocus in Å (default 25000)")
    c.add_argument("--astigmatism-max-A", type=float, default=0.0, metavar="Å",
                   help="largest astigmatism U−V in Å, drawn uniformly, angle uniform (default 0)")
    c.add_argument("--voltage-kV", type=float, default=300.0, metavar="kV", help="acceleration voltage in kV (default 300)")
    c.add_argument("--cs-mm", type=float, default=2.7, metavar="mm", help="spherical aberration in mm (default 2.7)")
    c.add_argument("--amplitude-contrast", type=float, default=0.1, metavar="Q0", help="amplitude contrast fraction (default 0.1)")
    c.add_argument("--ctf-bfactor-A2", type=float, default=0.0, metavar="Å²", help="CTF B-factor envelope in Å² (default 0)")
    c.add_argument("--ctf-pad-factor", type=float, default=2.0, metavar="F",
                   help="apply shift and CTF on a canvas F × box, then crop (default 2; 1 = no padding, as RELION)")

    p = parser.add_argument_group("poses (default: uniform on SO(3), no shift)")
    p.add_argument("--shift-sigma-A", type=float, metavar="Å", help="Gaussian in-plane shifts, σ in Å per axis")
    p.add_argument("--shift-max-A", type=float, metavar="Å", help="uniform in-plane shifts in [−max, max] Å per axis")
    p.add_argument("--preferred-views", nargs="+", type=_rot_tilt, metavar="ROT,TILT",
                   help="preferred viewing directions as rot,tilt in degrees (e.g. 0,0 0,90): von Mises–Fisher about each, psi uniform")
    p.add_argument("--view-spread-deg", type=float, metavar="°",
                   help="spread σ of the preferred views in degrees per axis, κ = 1/σ² (default 10)")
    p.add_argument("--view-kappa", type=float, metavar="κ", help="von Mises–Fisher concentration instead of --view-spread-deg")
    p.add_argument("--view-weights", nargs="+", type=float, metavar="W", help="relative frequency of each preferred view")
    p.add_argument("--stage-tilt-deg", type=float, default=0.0, metavar="°",
                   help="stage tilt in degrees: views tilted about the tilt axis; a particle at micrograph position r "
                        "gets the defocus offset (r·w)·tan(tilt), w ⟂ tilt axis (default 0)")
    p.add_argument("--tilt-axis-deg", type=float, default=0.0, metavar="°", help="tilt axis direction from the image x axis in degrees (default 0)")
    p.add_argument("--micrograph-size-A", type=float, default=4000.0, metavar="Å",
                   help="side of the square micrograph on which particles lie, for the tilted stage (default 4000)")

    h = parser.add_argument_group("heterogeneity (with --states)")
    h.add_argument("--state-weights", nargs="+", type=float, metavar="W", help="relative frequency of each state (default equal)")
    h.add_argument("--trajectory", action="store_true",
                   help="treat --states as an ordered trajectory at latent 0 … 1 (written as cryolabLatent)")
    h.add_argument("--latent-means", nargs="+", type=float, default=[0.5], metavar="Z",
                   help="means of the Gaussian clusters of the latent in [0, 1] (default 0.5)")
    h.add_argument("--latent-sigmas", nargs="+", type=float, default=[0.15], metavar="S",
                   help="their standard deviations (one, or one per mean; default 0.15); truncated to [0, 1]")
    h.add_argument("--latent-weights", nargs="+", type=float, metavar="W", help="relative weight of each cluster (default equal)")
    h.add_argument("--interpolation", choices=["nearest", "linear"], default="nearest",
                   help="trajectory: nearest map, or linear blend of the two neighbouring maps (default nearest)")

    o = parser.add_argument_group("output")
    o.add_argument("--batch-size", type=int, metavar="B",
                   help="images a worker computes at a time, rounded up to whole blocks; sets speed and memory, not "
                        "results (default: about 16 M pixels, at most 1024 images: 1024 at 128²)")
    o.add_argument("--workers", type=int, metavar="T",
                   help="threads computing images in parallel (default: the CPU cores available); sets speed, "
                        "not results")
    o.add_argument("--stack-size", type=int, default=10000, metavar="K", help="images per .mrcs file (default 10000)")
    o.add_argument("--write-clean", action="store_true", help="also write the clean images (clean_#####.mrcs)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _is_model(name: str) -> bool:
    from cryolab.atoms import BUILTIN_MODELS

    return name in BUILTIN_MODELS or name.lower().endswith(_MODEL_SUFFIXES)


def _load_maps(names, args):
    """The maps (torch tensors, one box) and their pixel size in Å."""
    import torch

    from cryolab.atoms import atoms_to_potential, builtin_model, choose_box, read_atoms
    from cryolab.errors import InputError
    from cryolab.fourier.crop import crop_center, pad_center
    from cryolab.io import read_mrc

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise InputError(f"--pixel-size must be positive, got {args.pixel_size}")
    if args.box is not None and args.box < 8:
        raise InputError(f"--box must be at least 8 pixels, got {args.box}")
    models = [n for n in names if _is_model(n)]
    if models and len(models) != len(names):
        raise InputError("--states mixes maps and atomic models; give all maps or all models")
    if models:
        from cryolab.atoms import BUILTIN_MODELS

        px = args.pixel_size if args.pixel_size is not None else 1.0
        loaded = [builtin_model(n) if n in BUILTIN_MODELS else read_atoms(n) for n in names]
        box = args.box if args.box is not None else max(choose_box(m, px) for m in loaded)
        return [atoms_to_potential(m, box, px) for m in loaded], px
    maps, pixel_sizes = [], []
    for name in names:
        mrc = read_mrc(name)
        shape = mrc.data.shape
        if mrc.data.ndim != 3 or len(set(shape)) != 1:
            raise InputError(f"map must be cubic (N, N, N), got shape {shape}", name)
        px = args.pixel_size if args.pixel_size is not None else mrc.pixel_size_A
        if px is None or not px > 0:
            raise InputError("no pixel size: the header voxel size is 0; give --pixel-size", name)
        vol = torch.from_numpy(mrc.data)
        if args.box is not None and args.box != shape[0]:
            vol = crop_center(vol, args.box, ndim=3) if args.box < shape[0] else pad_center(vol, args.box, ndim=3)
        maps.append(vol)
        pixel_sizes.append(px)
    if len({tuple(m.shape) for m in maps}) != 1:
        raise InputError(f"--states maps differ in size: {[tuple(m.shape) for m in maps]}")
    if max(pixel_sizes) - min(pixel_sizes) > 1e-3 * max(pixel_sizes):
        raise InputError(f"--states maps differ in pixel size: {pixel_sizes} Å; give --pixel-size to override")
    return maps, pixel_sizes[0]


def main(args, out) -> None:
    import torch

    from cryolab.errors import InputError
    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure, write_index
    from cryolab.simulate import (GaussianNoise, ParticleParameters, PoissonNoise, generator_for,
                                  interaction_constant, preferred_orientation_poses, read_ctf_table,
                                  resample_ctf_params, sample_ctf_params, sample_discrete_states, sample_latent,
                                  sample_micrograph_positions, sample_shifts, tilted_stage_poses,
                                  trajectory_assignment, uniform_poses, with_defocus_offset, write_dataset)
    from cryolab.simulate.states import single_map

    if (args.input is None) == (args.states is None):
        raise InputError("give either MAP_OR_MODEL or --states MAP_OR_MODEL ... (not both)")
    if args.n_particles <= 0:
        raise InputError(f"-n must be a positive number of particles, got {args.n_particles}")
    if args.no_ctf and args.ctf_from:
        raise InputError("--no-ctf and --ctf-from contradict each other")
    if args.trajectory and (args.states is None or len(args.states) < 2):
        raise InputError("--trajectory needs at least two maps in --states")
    if args.ctf_pad_factor < 1:
        raise InputError(f"--ctf-pad-factor must be >= 1, got {args.ctf_pad_factor}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    n, seed = args.n_particles, args.seed
    names = args.states if args.states is not None else [args.input]
    ctf_table = read_ctf_table(args.ctf_from) if args.ctf_from else None  # fail early on a bad file
    maps, px = _load_maps(names, args)
    box = int(maps[0].shape[-1])
    recipe: dict = {"inputs": names}

    # poses
    if args.preferred_views:
        if args.view_kappa is not None and args.view_spread_deg is not None:
            raise InputError("give --view-spread-deg or --view-kappa, not both")
        spread = None if args.view_kappa is not None else (args.view_spread_deg or 10.0)
        euler = preferred_orientation_poses(n, torch.tensor(args.preferred_views), kappa=args.view_kappa, spread_deg=spread,
                                            weights=args.view_weights, generator=generator_for(seed, "poses"))
        recipe["poses"] = {"kind": "preferred (von Mises-Fisher)", "views_rot_tilt_deg": args.preferred_views,
                           "spread_deg": spread, "kappa": args.view_kappa, "weights": args.view_weights}
    else:
        if args.view_spread_deg is not None or args.view_kappa is not None or args.view_weights:
            raise InputError("--view-spread-deg/--view-kappa/--view-weights need --preferred-views")
        euler = uniform_poses(n, generator=generator_for(seed, "poses"))
        recipe["poses"] = {"kind": "uniform on SO(3)"}
    xy = offset = None
    if args.stage_tilt_deg != 0:
        xy = sample_micrograph_positions(n, micrograph_size_A=args.micrograph_size_A,
                                         generator=generator_for(seed, "positions"))
        euler, offset = tilted_stage_poses(euler, xy, stage_tilt_deg=args.stage_tilt_deg, tilt_axis_deg=args.tilt_axis_deg)
        recipe["stage"] = {"tilt_deg": args.stage_tilt_deg, "tilt_axis_deg": args.tilt_axis_deg,
                           "micrograph_size_A": args.micrograph_size_A,
                           "geometry": "A = R_axis(tilt)·A_ice; defocus offset = (r·w)·tan(tilt), w ⟂ axis"}
    shifts = sample_shifts(n, sigma_A=args.shift_sigma_A, max_A=args.shift_max_A, generator=generator_for(seed, "shifts"))
    recipe["shifts"] = {"sigma_A": args.shift_sigma_A, "max_A": args.shift_max_A}

    # CTF
    ctf = None
    if ctf_table is not None:
        ctf = resample_ctf_params(ctf_table, n, generator=generator_for(seed, "ctf"))
        recipe["ctf"] = {"resampled_from": str(args.ctf_from), "rows": len(ctf_table)}
    elif not args.no_ctf:
        ctf = sample_ctf_params(n, defocus_min_A=args.defocus_min_A, defocus_max_A=args.defocus_max_A,
                                astigmatism_max_A=args.astigmatism_max_A, voltage_kV=args.voltage_kV,
                                cs_mm=args.cs_mm, amplitude_contrast=args.amplitude_contrast,
                                bfactor_A2=args.ctf_bfactor_A2, generator=generator_for(seed, "ctf"))
        recipe["ctf"] = {"defocus_range_A": [args.defocus_min_A, args.defocus_max_A],
                         "astigmatism_max_A": args.astigmatism_max_A, "voltage_kV": args.voltage_kV,
                         "cs_mm": args.cs_mm, "amplitude_contrast": args.amplitude_contrast,
                         "bfactor_A2": args.ctf_bfactor_A2}
    if ctf is not None and offset is not None:
        ctf = with_defocus_offset(ctf, offset)

    # heterogeneity
    if len(maps) == 1:
        if args.state_weights:
            raise InputError("--state-weights needs several maps in --states")
        assignment = single_map(n)
    elif args.trajectory:
        latent = sample_latent(n, means=args.latent_means, sigmas=args.latent_sigmas, weights=args.latent_weights,
                               generator=generator_for(seed, "states"))
        assignment = trajectory_assignment(latent, len(maps), interpolation=args.interpolation)
        recipe["states"] = {"kind": "trajectory", "latent_means": args.latent_means, "latent_sigmas": args.latent_sigmas,
                            "latent_weights": args.latent_weights, "interpolation": args.interpolation}
    else:
        weights = args.state_weights if args.state_weights else [1.0] * len(maps)
        if len(weights) != len(maps):
            raise InputError(f"{len(weights)} --state-weights for {len(maps)} states")
        assignment = sample_discrete_states(n, weights, generator=generator_for(seed, "states"))
        recipe["states"] = {"kind": "discrete", "weights": weights}

    # noise
    if args.no_noise:
        noise = None
    elif args.dose is not None:
        contrast = args.contrast_scale
        if contrast is None:
            contrast = 2 * interaction_constant(args.voltage_kV) * px
        noise = PoissonNoise(args.dose, contrast, dqe0=args.dqe0, mtf=args.mtf)
    else:
        noise = GaussianNoise(args.snr if args.snr is not None else 0.1, args.snr_mask_radius_A)

    particles = ParticleParameters(euler, shifts, ctf, assignment, micrograph_xy_A=xy, defocus_offset_A=offset)
    folder = out.path("particles.star").parent
    result = write_dataset(maps, particles, folder, px, noise=noise, seed=seed, batch_size=args.batch_size,
                           workers=args.workers, stack_size=args.stack_size, write_clean=args.write_clean,
                           ctf_pad_factor=args.ctf_pad_factor, metadata={"recipe": recipe})

    k = result.example_clean.shape[0]
    images = list(result.example_clean) + ([] if noise is None else list(result.example_noisy))
    titles = [f"clean {i + 1}" for i in range(k)] + ([] if noise is None else [f"noisy {i + 1}" for i in range(k)])
    half = box * px / 2
    fig = image_grid(images, titles, ncols=k, extent=(-half, half, -half, half),
                     suptitle=f"first {k} particles, box {box} px at {px:g} Å/px (axes in Å)")
    save_figure(fig, out.path("montage.png"))
    noise_text = result.metadata["noise"]
    write_index(out.path("index.html"), "cryolab simulate",
                [Figure("montage.png", "Clean and noisy examples",
                        f"Top: clean images (CTF applied); bottom: with noise ({noise_text.get('model')}). "
                        f"Protein white; images normalised to noise standard deviation 1.")],
                intro=f"{n} particles, seed {seed}, see particles.star and simulation.json.")
