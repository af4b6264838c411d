"""Run cryolab end to end on built-in data: forward model, simulated particles, 3D map, FSC, 2D classes.

Everything starts from the built-in atomic model of adenylate kinase (open, PDB 4AKE chain A)
turned into its Coulomb potential on a --box³ grid of --pixel-size, and ends in one illustrated
report, index.html, that tells the story in four chapters:

1. The forward model: the CTF at several defoci (--defocus), and what it does to a projection.
2. Particles: -n particles simulated with cryolab.simulate at uniformly random orientations,
   Gaussian origin shifts (σ 1.5 Å per axis), defocus uniform in 1.0–2.5 µm, a CTF envelope of
   B = 100 Å², at --voltage, white Gaussian noise at --snr (signal variance over the whole box).
3. The 3D map: direct Fourier inversion with the true poses (cryolab.reconstruct, two
   gold-standard half sets, SSNR from the half maps), the half-map FSC (cryolab.validate) without
   and with a soft mask (cryolab.masks: the true potential low-passed to 15 Å, thresholded at 5 %
   of its maximum, extended by 4 Å, 6 Å soft edge; the masked FSC is corrected by phase
   randomisation), the full map's FSC against the true potential, and sharpening by a Guinier
   fit of the B-factor (cryolab.postprocess, as relion_postprocess --auto_bfac) where the
   resolution leaves at least 3 shells beyond 10 Å (else FSC weighting and low-pass only).
4. 2D classes: --classes class averages by maximum-likelihood EM (cryolab.classify2d) of the first
   min(N, 1000) particles, 10 iterations, in-plane step 10°, origins within 5 Å, E-step limited
   to 6 Å (or Nyquist).

The same --seed gives the same files (particles, maps, classes). Takes about half a minute on two
CPU cores at the defaults, most of it 2D classification.

Writes into the output folder:

  index.html           the report: figures with captions, the numbers, links to the files
  ctf_profiles.png     1D CTF (sin χ) against spatial frequency (1/Å, top axis in Å) for each
                       --defocus at --voltage (no envelope)
  ctf_2d.png           2D CTFs (centred, Thon rings) including an astigmatic one
  images.png           the model projected along z, and the same projection modulated by each
                       CTF: underfocus (positive defocus) shows protein white with a dark
                       fringe, overfocus inverts the low-frequency contrast
  fourier.png          log amplitude of the Fourier transforms of the clean and CTF-modulated
                       projection (zero-padded to 4× the box, so the Thon rings are resolved),
                       axes in 1/Å
  particles.star       the simulated data set, RELION 3.1 (optics group with pixel size and
                       voltage, true poses, origins and defoci, rlnRandomSubset); image names
                       are relative to the output folder: run RELION from inside it
  particles_00001.mrcs its images (noise standard deviation 1, protein white, pixel size in the header)
  simulation.json      how the particles were simulated (noise σ and SNR, seed, CTF canvas)
  montage.png          the first particles, clean (CTF applied) and noisy
  reconstruction.mrc   the map from all particles; half1.mrc, half2.mrc the half maps
  mask.mrc             the soft mask of the masked FSC
  postprocess.mrc      the sharpened, FSC-weighted map low-passed at the masked resolution;
                       postprocess_masked.mrc the same times the mask (all maps: pixel size in
                       the header, open in ChimeraX)
  fsc.csv              per shell: frequency (1/Å), resolution (Å), half-map FSC unmasked,
                       masked, phase-randomised masked, corrected, and full map vs. truth
  fsc.png              those curves, with the resolution at FSC 0.143
  guinier.png          ln amplitude against 1/d²: input, FSC-weighted, sharpened, and the fit
  map_sections.png     central sections through the true potential, the reconstruction and the
                       sharpened map
  class_averages.mrcs  the 2D class averages (class k is image k, as rlnClassNumber)
  classes.png          the class averages sorted by population
  demo.json            the numbers: resolutions, B-factor, class populations, seconds per step
  run.json             arguments, cryolab version, time

Examples:
  cryolab demo -o demo_out
  cryolab demo -n 1000 --seed 7 --snr 0.05 -o demo_noisier
"""

from __future__ import annotations

import contextlib

# The data set and the methods' settings that the options do not expose (stated in the docstring).
DEFOCUS_RANGE_A = (10000.0, 25000.0)
CTF_BFACTOR_A2 = 100.0
SHIFT_SIGMA_A = 1.5
MASK_LOWPASS_A, MASK_THRESHOLD_FRACTION, MASK_EXTEND_A, MASK_SOFT_EDGE_A = 15.0, 0.05, 4.0, 6.0
CLASS2D_PARTICLES, CLASS2D_ITERATIONS, CLASS2D_PSI_STEP_DEG, CLASS2D_OFFSET_RANGE_A = 1000, 10, 10.0, 5.0
CLASS2D_MAX_RESOLUTION_A = 6.0
AUTOB_LOWRES_A, AUTOB_MIN_SHELLS = 10.0, 3  # fit the B-factor from 10 Å on, over at least 3 shells
MIN_PARTICLES = 100


def add_args(parser) -> None:
    parser.add_argument("-n", "--n-particles", type=int, default=3000, metavar="N",
                        help=f"number of particles to simulate (default 3000; at least {MIN_PARTICLES}); "
                             f"the first min(N, {CLASS2D_PARTICLES}) are classified in 2D")
    parser.add_argument("--seed", type=int, default=0,
                        help="master random seed of poses, shifts, defoci, noise, mask correction and 2D classes "
                             "(default 0); the same seed gives the same files")
    parser.add_argument("--snr", type=float, default=0.1, metavar="SNR",
                        help="signal-to-noise ratio of the particles, var(signal)/var(noise) over the whole box (default 0.1)")
    parser.add_argument("--classes", type=int, default=6, metavar="K", help="number of 2D classes (default 6; at most one per 10 classified particles)")
    parser.add_argument("--pixel-size", type=float, default=2.0, metavar="Å",
                        help="pixel size of images and maps in Å (default 2.0)")
    parser.add_argument("--box", type=int, default=64, metavar="PX",
                        help="image and map size in pixels (default 64); box × pixel size must hold the model "
                             "(about 80 Å)")
    parser.add_argument("--voltage", type=float, default=300.0, metavar="kV", help="acceleration voltage in kV (default 300)")
    parser.add_argument(
        "--defocus",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0, 3.0],
        metavar="µm",
        help="defocus values in µm of the CTF figures, positive = underfocus (default 0.5 1 2 3)",
    )


def main(args, out) -> None:
    import time

    from cryolab._progress import progress
    from cryolab.atoms import builtin_model, choose_box
    from cryolab.errors import InputError

    if args.pixel_size <= 0:
        raise InputError(f"--pixel-size must be positive, got {args.pixel_size}")
    if args.box < 16:
        raise InputError(f"--box must be at least 16 pixels, got {args.box}")
    if args.voltage <= 0:
        raise InputError(f"--voltage must be positive, got {args.voltage}")
    if args.n_particles < MIN_PARTICLES:
        raise InputError(f"-n must be at least {MIN_PARTICLES} particles, got {args.n_particles}")
    if not args.snr > 0:
        raise InputError(f"--snr must be positive, got {args.snr}")
    if args.classes < 1 or args.classes > min(args.n_particles, CLASS2D_PARTICLES) // 10:
        raise InputError(f"--classes must be between 1 and {min(args.n_particles, CLASS2D_PARTICLES) // 10} "
                         f"(10 particles per class), got {args.classes}")
    model = builtin_model("adk_open")
    needed = choose_box(model, args.pixel_size, padding_A=0.0)
    if args.box < needed:
        raise InputError(f"--box {args.box} px at {args.pixel_size:g} Å/px is too small for the model: "
                         f"it needs at least {needed} px ({needed * args.pixel_size:g} Å)")

    seconds: dict[str, float] = {}
    with _one_torch_thread(), progress(total=4, desc="demo", unit="step") as steps:
        def step_done(name, start):
            seconds[name] = round(time.perf_counter() - start, 2)
            steps.update(1)

        figures, sim, recon, classes = _run_steps(args, out, model, step_done)
    numbers = {
        "particles": args.n_particles,
        "seed": args.seed,
        "snr": args.snr,
        "box_size": args.box,
        "pixel_size_A": args.pixel_size,
        "noise_sigma": sim.metadata["noise"].get("sigma"),
        **recon["numbers"],
        **classes["numbers"],
        "seconds": seconds,
    }
    _write_report(args, out, figures, numbers, recon["numbers"], classes["numbers"])


def _run_steps(args, out, model, step_done):
    """The four chapters; returns the figures and each step's results."""
    import time

    import torch

    from cryolab.atoms import project_atoms
    from cryolab.ctf import CTFParams

    # 1. The forward model
    start = time.perf_counter()
    defocus_A = [d * 1e4 for d in args.defocus]
    params = CTFParams(
        defocus_u_A=torch.tensor(defocus_A, dtype=torch.float64),
        defocus_v_A=torch.tensor(defocus_A, dtype=torch.float64),
        defocus_angle_deg=0.0,
        voltage_kV=args.voltage,
    )
    labels = [f"{d:g} µm" for d in args.defocus]
    clean = project_atoms(model, torch.eye(3), args.box, args.pixel_size)
    figures = [
        _ctf_profiles_figure(out.path("ctf_profiles.png"), params, labels, args.pixel_size),
        _ctf_2d_figure(out.path("ctf_2d.png"), params, labels, args.box, args.pixel_size, args.voltage),
        _images_figure(out.path("images.png"), clean, params, labels, args.pixel_size),
        _fourier_figure(out.path("fourier.png"), clean, params, labels, args.pixel_size),
    ]
    figures[0] = _chapter(figures[0], "1. The forward model",
                          "An image is a projection of the specimen's Coulomb potential, multiplied in Fourier space by "
                          "the contrast transfer function (CTF) of the microscope. The CTF oscillates: at each defocus "
                          "some spatial frequencies are transferred with positive contrast, some inverted, some lost.")
    step_done("forward_model", start)

    # 2. Particles
    start = time.perf_counter()
    truth, sim = _simulate(args, model, out.path("particles.star").parent)
    figures.append(_montage_figure(out.path("montage.png"), sim, args))
    step_done("simulate", start)

    # 3. The 3D map
    start = time.perf_counter()
    recon = _reconstruct_and_validate(args, out, truth, sim.star_path)
    figures += recon["figures"]
    step_done("reconstruct", start)

    # 4. 2D classes
    start = time.perf_counter()
    classes = _classify(args, out, sim.star_path)
    figures.append(classes["figure"])
    step_done("class2d", start)
    return figures, sim, recon, classes


def _write_report(args, out, figures, numbers, r, c) -> None:
    """demo.json, index.html (story, numbers, files) and a one-line summary on stdout."""
    import json

    from cryolab.report import write_index

    out.path("demo.json").write_text(json.dumps(numbers, indent=2) + "\n")
    populations = ", ".join(f"{k['particles']}" for k in c["classes"])
    facts = [
        ("particles", f"{args.n_particles} at {args.box} px, {args.pixel_size:g} Å/px, SNR {args.snr:g}, seed {args.seed}"),
        ("half-map FSC = 0.143, unmasked", _angstrom(r["resolution_A_fsc_0.143_unmasked"])),
        ("half-map FSC = 0.143, masked and corrected", _angstrom(r["resolution_A_fsc_0.143_masked"])
         + f" (interpolated {_angstrom(r['resolution_A_fsc_0.143_masked_interpolated'])})"),
        ("full map vs. true potential, FSC = 0.5", _angstrom(r["resolution_A_map_vs_truth_fsc_0.5"])),
        ("auto B-factor (Guinier fit)", "not fitted (resolution too low)" if r["bfactor_A2"] is None else
         f"{r['bfactor_A2']:.0f} Å² (fit {r['bfactor_fit_range_A'][0]:g}–{r['bfactor_fit_range_A'][1]:.2f} Å)"),
        (f"{args.classes} 2D classes of {c['class2d_particles']} particles", f"populations {populations}"),
        ("Nyquist", f"{2 * args.pixel_size:g} Å"),
    ]
    files = [
        ("particles.star", "the simulated particles (RELION 3.1; run RELION from this folder)"),
        ("simulation.json", "how they were simulated"),
        ("reconstruction.mrc", "map from all particles"), ("half1.mrc", "half map 1"), ("half2.mrc", "half map 2"),
        ("mask.mrc", "soft mask"), ("postprocess.mrc", "sharpened map"), ("postprocess_masked.mrc", "sharpened map times the mask"),
        ("fsc.csv", "FSC curves per shell"), ("class_averages.mrcs", "2D class averages"), ("demo.json", "the numbers"),
    ]
    write_index(
        out.path("index.html"),
        "cryolab demo: from an atomic model to a 3D map and 2D classes",
        figures,
        intro=f"Built-in adenylate kinase (open, PDB 4AKE chain A), {args.voltage:g} kV, box {args.box} px at "
              f"{args.pixel_size:g} Å/px. The atomic model gives a Coulomb potential; {args.n_particles} noisy particle "
              "images are simulated from it and then treated like data: reconstructed with their (true) poses, "
              "validated by the half-map FSC, sharpened, and classified in 2D. Conventions: docs/conventions.md "
              "(RELION CTF sign: positive defocus = underfocus, CTF(0) = +Q0; protein white).",
        facts=facts,
        files=files,
    )
    print(f"demo: {args.n_particles} particles; half-map FSC 0.143 at {_angstrom(r['resolution_A_fsc_0.143_unmasked'])} "
          f"(unmasked), {_angstrom(r['resolution_A_fsc_0.143_masked'])} (masked, corrected); "
          f"B = {'not fitted' if r['bfactor_A2'] is None else format(r['bfactor_A2'], '.0f') + ' Å²'}; "
          f"{args.classes} classes: {populations}")


@contextlib.contextmanager
def _one_torch_thread():
    """Run torch on one thread, then restore the setting.

    The demo's arrays are small (64² images, 64³ maps), where torch's intra-op threads cost more
    in synchronisation than they gain, and much more on a shared machine: 2D classification of the
    default data set took 13 s wall (8 s CPU) on one thread against 76 s wall (42 s CPU) on two,
    on a busy 2-core machine. (cryolab.simulate and cryolab.reconstruct do the same inside.)
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _angstrom(value) -> str:
    return "—" if value is None else f"{value:.2f} Å"


def _finite(x):
    import math

    return round(float(x), 4) if x is not None and math.isfinite(float(x)) else None


def _chapter(figure, section: str, text: str):
    from dataclasses import replace

    return replace(figure, section=section, text=text)


# --------------------------------------------------------------------------------------------
# 1. The forward model


def _ctf_profiles_figure(path, params, labels, pixel_size_A):
    import torch

    from cryolab.ctf import ctf_1d
    from cryolab.plot import add_resolution_axis
    from cryolab.report import Figure, plt, save_figure

    freq = torch.linspace(0, 0.5 / pixel_size_A, 800)
    curves = ctf_1d(params, freq)
    fig, axes = plt.subplots(len(labels), 1, figsize=(8, 1.6 * len(labels) + 0.8), sharex=True, squeeze=False)
    for ax, curve, label in zip(axes[:, 0], curves, labels):
        ax.plot(freq, curve, lw=1)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"CTF\n{label}")
        ax.set_ylim(-1.05, 1.05)
    axes[0, 0].set_xlim(0, float(freq[-1]))
    add_resolution_axis(axes[0, 0])
    axes[-1, 0].set_xlabel("spatial frequency (1/Å)")
    save_figure(fig, path)
    return Figure(path.name, "CTF profiles", "sin χ(k) for each defocus, out to Nyquist (no envelope). Look at where "
                  "each curve first crosses zero: higher defocus gives more low-frequency contrast (the curve rises "
                  "sooner) but oscillates faster, so more zeros fall inside the resolution range.")


def _ctf_2d_figure(path, params, labels, box, pixel_size_A, voltage_kV):
    import torch

    from cryolab.ctf import CTFParams, ctf_2d
    from cryolab.fourier import crop_center
    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure

    astig = CTFParams(defocus_u_A=25000.0, defocus_v_A=15000.0, defocus_angle_deg=30.0, voltage_kV=voltage_kV)
    # Drawn on a grid 8x finer than the image's Fourier sampling and only out to 1/(8 Å), so the
    # rings stay visible; on the box's own grid high defocus aliases (why simulate pads first).
    fine = 8 * box
    k_max = min(0.5 / pixel_size_A, 1 / 8.0)
    shown = 2 * int(round(k_max * pixel_size_A * fine)) + 1
    maps = [ctf_2d(p, (fine, fine), pixel_size_A, rfft=False, fftshift=True) for p in (params, astig)]
    maps = list(crop_center(torch.cat([maps[0], maps[1][None]]), (shown, shown)))
    fig = image_grid(maps, labels + ["2.5 / 1.5 µm, 30°"], ncols=len(maps), cmap="RdBu_r", extent=(-k_max, k_max, -k_max, k_max))
    for ax in fig.axes:
        ax.axis("on")
        ax.set_xlabel("kx (1/Å)", fontsize=8)
        ax.tick_params(labelsize=7)
    save_figure(fig, path)
    return Figure(path.name, "2D CTFs", "Centred 2D CTF out to 1/(8 Å) (red positive, blue negative): the Thon rings. "
                  "For the astigmatic one the rings are ellipses; defocus U (2.5 µm) lies along the direction 30° from "
                  "x, where the rings are densest.")


def _images_figure(path, clean, params, labels, pixel_size_A):
    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure
    from cryolab.simulate.ctf_sampling import apply_ctf_padded

    under = apply_ctf_padded(clean.expand(len(labels), -1, -1), params, pixel_size_A)
    over = apply_ctf_padded(
        clean[None],
        type(params)(defocus_u_A=-params.defocus_u_A[-1:], defocus_v_A=-params.defocus_v_A[-1:], defocus_angle_deg=0.0, voltage_kV=params.voltage_kV),
        pixel_size_A,
    )
    images = [clean, *under, over[0]]
    titles = ["projection (no CTF)"] + [f"underfocus {lab}" for lab in labels] + [f"overfocus {labels[-1]}"]
    fig = image_grid(images, titles, ncols=3)
    save_figure(fig, path)
    return Figure(path.name, "Images at several defoci", "The projected potential of adenylate kinase, then modulated "
                  "by each CTF (applied on a 2× padded canvas). Protein is white. Look at the outline: underfocus adds "
                  "a dark fringe and makes the particle stand out more the larger the defocus; overfocus inverts the "
                  "low-frequency contrast.")


def _fourier_figure(path, clean, params, labels, pixel_size_A):
    import torch

    from cryolab.fourier import fft_centered, fftshift, pad_center
    from cryolab.plot import centred_extent, image_grid
    from cryolab.report import Figure, save_figure
    from cryolab.simulate.ctf_sampling import apply_ctf_padded

    # On a canvas 4x the box (the projection zero-padded) the Fourier sampling is 4x finer, fine
    # enough to resolve the rings of a large defocus; the CTF is applied on that whole canvas, so no
    # crop edge adds streaks to the spectrum.
    m = 4 * clean.shape[-1]
    canvas = pad_center(clean, m, ndim=2)
    modulated = apply_ctf_padded(canvas[None], params[-1:], pixel_size_A, pad_factor=1)[0]
    # fft_centered returns the unshifted layout; fftshift puts k = 0 at index M // 2 for display
    spectra = [torch.log1p(fftshift(fft_centered(img, 2), 2).abs()) for img in (canvas, modulated)]
    fig = image_grid(spectra, ["|F| of projection", f"|F| after CTF ({labels[-1]})"], ncols=2, cmap="magma",
                     extent=centred_extent(m, 1 / (m * pixel_size_A)), panel_size=4)
    for ax in fig.axes:
        ax.axis("on")
        ax.set_xlabel("kx (1/Å)")
    fig.axes[0].set_ylabel("ky (1/Å)")
    save_figure(fig, path)
    return Figure(path.name, "Fourier space", "log(1 + |F|) of the clean and CTF-modulated projection, zero-padded to "
                  "4× the box so the Fourier sampling is fine enough for the rings: the CTF's zeros appear as dark "
                  "Thon rings over the particle's own spectrum, closer together at higher frequency (near the corners "
                  "they come closer than the sampling and alias into moiré). The information on those rings is "
                  "lost in this image; particles at other defoci fill it in.")


# --------------------------------------------------------------------------------------------
# 2. Particles


def _simulate(args, model, folder):
    """The true potential and the simulated data set (cryolab.simulate), written into ``folder``."""
    from cryolab.atoms import atoms_to_potential
    from cryolab.simulate import (GaussianNoise, ParticleParameters, generator_for, sample_ctf_params, sample_shifts,
                                  uniform_poses, write_dataset)

    n, seed = args.n_particles, args.seed
    truth = atoms_to_potential(model, args.box, args.pixel_size)
    particles = ParticleParameters(
        uniform_poses(n, generator=generator_for(seed, "poses")),
        sample_shifts(n, sigma_A=SHIFT_SIGMA_A, generator=generator_for(seed, "shifts")),
        sample_ctf_params(n, defocus_min_A=DEFOCUS_RANGE_A[0], defocus_max_A=DEFOCUS_RANGE_A[1], voltage_kV=args.voltage,
                          bfactor_A2=CTF_BFACTOR_A2, generator=generator_for(seed, "ctf")),
    )
    recipe = {"inputs": ["adk_open"], "poses": {"kind": "uniform on SO(3)"}, "shifts": {"sigma_A": SHIFT_SIGMA_A},
              "ctf": {"defocus_range_A": list(DEFOCUS_RANGE_A), "voltage_kV": args.voltage, "bfactor_A2": CTF_BFACTOR_A2},
              "made_by": "cryolab demo"}
    result = write_dataset(truth, particles, folder, args.pixel_size, noise=GaussianNoise(args.snr), seed=seed,
                           n_examples=6, metadata={"recipe": recipe})
    return truth, result


def _montage_figure(path, sim, args):
    from cryolab.plot import centred_extent, image_grid
    from cryolab.report import Figure, save_figure

    k = sim.example_clean.shape[0]
    images = list(sim.example_clean) + list(sim.example_noisy)
    titles = [f"clean {i + 1}" for i in range(k)] + [f"noisy {i + 1}" for i in range(k)]
    fig = image_grid(images, titles, ncols=k, extent=centred_extent(args.box, args.pixel_size),
                     suptitle=f"first {k} particles, box {args.box} px at {args.pixel_size:g} Å/px (axes in Å)")
    save_figure(fig, path)
    lo, hi = (d / 1e4 for d in DEFOCUS_RANGE_A)
    return Figure(
        path.name, "Simulated particles",
        f"Top: clean images (random orientation, origin shift, CTF at {lo:g}–{hi:g} µm defocus with a B = "
        f"{CTF_BFACTOR_A2:g} Å² envelope); bottom: the same with white Gaussian noise at SNR {args.snr:g} over the "
        "box, as written to particles_00001.mrcs (noise standard deviation 1). Look at how little of the particle "
        "one sees in a single noisy image: the structure comes from averaging thousands of them.",
        section="2. Particles",
        text=f"{args.n_particles} particles are simulated with cryolab.simulate and written as a RELION data set "
             "(particles.star with the true poses, origins and CTF parameters, and an MRCS stack), which any cryo-EM "
             "program can open.")


# --------------------------------------------------------------------------------------------
# 3. The 3D map


def _reconstruct_and_validate(args, out, truth, star_path) -> dict:
    """Reconstruct, mask, FSC (half maps, and map vs. truth), sharpen; write maps, fsc.csv and figures."""
    import math

    from cryolab.cli.fsc import fsc_table
    from cryolab.io import read_particles, write_mrc
    from cryolab.masks import threshold_mask
    from cryolab.plot import fsc_curves_figure, guinier_figure
    from cryolab.postprocess import lowpass_at_resolution, postprocess
    from cryolab.reconstruct import reconstruct_from_particles
    from cryolab.report import Figure, save_figure
    from cryolab.validate import fsc, fsc_resolution, fsc_shell_frequencies

    px, box = args.pixel_size, args.box
    particles = read_particles(star_path)
    recon = reconstruct_from_particles(particles)
    smooth = lowpass_at_resolution(truth, px, MASK_LOWPASS_A)
    mask = threshold_mask(smooth, px, MASK_THRESHOLD_FRACTION * float(smooth.max()), extend_A=MASK_EXTEND_A,
                          soft_edge_A=MASK_SOFT_EDGE_A)
    # A Guinier fit needs a few shells between 10 Å and the resolution; a very small or noisy data
    # set may not reach that far, and then the map is only FSC-weighted and low-pass filtered.
    post = postprocess(recon.half1, recon.half2, px, mask=mask, seed=args.seed, b_factor_A2=0.0)
    fit_shells = post.resolution.shell - math.ceil(box * px / AUTOB_LOWRES_A * (1 - 1e-6)) + 1
    if fit_shells >= AUTOB_MIN_SHELLS:
        post = postprocess(recon.half1, recon.half2, px, mask=mask, seed=args.seed, b_factor_A2="auto",
                           autob_lowres_A=AUTOB_LOWRES_A)
    vs_truth = fsc(recon.volume, truth)

    for name, volume in (("reconstruction.mrc", recon.volume), ("half1.mrc", recon.half1), ("half2.mrc", recon.half2),
                         ("mask.mrc", mask), ("postprocess.mrc", post.map), ("postprocess_masked.mrc", post.masked_map)):
        write_mrc(out.path(name), volume, px)

    m = post.masked
    frequencies = fsc_shell_frequencies(box, px)
    fsc_table(frequencies, box, px, {"fsc": m.unmasked, "fsc_masked": m.masked,
                                     "fsc_phase_randomized_masked": m.randomized_masked, "fsc_corrected": m.corrected,
                                     "fsc_map_vs_truth": vs_truth}).to_csv(out.path("fsc.csv"), index=False, float_format="%.6g")
    unmasked = fsc_resolution(recon.fsc, box, px, 0.143)
    masked = fsc_resolution(m.corrected, box, px, 0.143)  # postprocess uses the unmasked curve where that is better
    truth_05 = fsc_resolution(vs_truth, box, px, 0.5)
    curves = {"half maps, unmasked": (m.unmasked, "C2-"), "half maps, masked": (m.masked, "C0-"),
              f"phase-randomised beyond shell {m.randomize_from_shell}, masked": (m.randomized_masked, "C1-"),
              "corrected (reported)": (m.corrected, "k-"),
              "full map vs. true potential (read at 0.5)": (vs_truth, "C4--")}
    save_figure(fsc_curves_figure(frequencies, curves, masked,
                                  title=f"{recon.n_particles[0]} + {recon.n_particles[1]} particles, {box}³ at {px:g} Å/px"),
                out.path("fsc.png"))
    save_figure(guinier_figure(post), out.path("guinier.png"))
    _map_sections_figure(out.path("map_sections.png"), truth, recon.volume, post.masked_map, px)

    fit = post.bfactor_fit
    numbers = {
        "resolution_A_fsc_0.143_unmasked": _finite(unmasked.resolution_A),
        "resolution_A_fsc_0.143_unmasked_interpolated": _finite(unmasked.interpolated_resolution_A),
        "resolution_A_fsc_0.143_masked": _finite(masked.resolution_A),
        "resolution_A_fsc_0.143_masked_interpolated": _finite(masked.interpolated_resolution_A),
        "resolution_A_map_vs_truth_fsc_0.5": _finite(truth_05.resolution_A),
        "bfactor_A2": None if fit is None else _finite(post.b_factor_A2),
        "bfactor_fit_range_A": None if fit is None else [_finite(fit.lowres_A), _finite(fit.highres_A)],
        "mask_volume_fraction": round(float(mask.mean()), 4),
        "half_set_particles": list(recon.n_particles),
    }
    figures = [
        Figure("map_sections.png", "The map",
               "Central sections through the true potential (top), the reconstruction from all particles (middle) "
               "and the sharpened, masked map (bottom): the xy, xz and yz planes through the box centre (axes in Å). Look for the "
               "same shapes in all three rows: the reconstruction is the truth blurred by the CTF envelope and "
               "the noise; sharpening restores contrast at high resolution, and with it some noise.",
               section="3. The 3D map",
               text="The particles are reconstructed by direct Fourier inversion with their true poses "
                    "(cryolab.reconstruct), as two independent half sets whose agreement, the Fourier shell "
                    "correlation (FSC), measures the resolution. No alignment is done: this is the best a refinement "
                    "could reach on these images."),
        Figure("fsc.png", "Fourier shell correlation",
               f"Half-map FSC without a mask (green) and with a soft mask around the molecule (blue), corrected for "
               f"the mask's own correlation by phase randomisation (black, reported): {_angstrom(numbers['resolution_A_fsc_0.143_masked'])} "
               f"at FSC = 0.143 with the mask, {_angstrom(numbers['resolution_A_fsc_0.143_unmasked'])} without "
               f"(Nyquist {2 * px:g} Å). The dashed purple curve compares the full map with the true potential, which "
               f"real data never offers: it crosses 0.5 at {_angstrom(numbers['resolution_A_map_vs_truth_fsc_0.5'])}. "
               "That is where the unmasked half-map curve, for the same unmasked map, should cross 0.143 (Rosenthal "
               "& Henderson 2003): check that the two agree. The mask removes the noise around the molecule, so the "
               "masked curve usually reaches further."),
        Figure("guinier.png", "Guinier plot and sharpening", _guinier_caption(post, fit)),
    ]
    return {"figures": figures, "numbers": numbers}


def _guinier_caption(post, fit) -> str:
    start = "ln of the mean Fourier amplitude per shell against 1/d². "
    if fit is None:
        return (start + f"No B-factor was fitted: the resolution, {_angstrom(_finite(post.resolution.resolution_A))}, "
                f"leaves fewer than {AUTOB_MIN_SHELLS} shells beyond {AUTOB_LOWRES_A:g} Å for a straight line (more "
                "particles or a higher --snr reach further), so the map is only FSC-weighted and low-pass filtered.")
    return (start + f"The straight-line fit between {fit.lowres_A:g} and {fit.highres_A:.2f} Å (orange) of the "
            f"FSC-weighted map gives the auto B-factor B = {post.b_factor_A2:.0f} Å²; applying exp(−B k²/4) flattens "
            f"the curve (red), restoring the high-resolution contrast that the CTF envelope (B = {CTF_BFACTOR_A2:g} Å² "
            "in the simulation), the atoms' own B-factors and the regularised reconstruction damped.")


def _map_sections_figure(path, truth, volume, sharpened, pixel_size_A):
    from cryolab.plot import centred_extent, image_grid
    from cryolab.report import save_figure

    n = truth.shape[-1]
    c = n // 2
    images, titles = [], []
    for name, vol in (("true potential", truth), ("reconstruction", volume), ("sharpened, masked", sharpened)):
        images += [vol[c], vol[:, c], vol[:, :, c]]  # planes z = c (x right, y up), y = c (x, z), x = c (y, z)
        titles += [f"{name}, xy section", f"{name}, xz section", f"{name}, yz section"]
    fig = image_grid(images, titles, ncols=3, extent=centred_extent(n, pixel_size_A), panel_size=2.8)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# 4. 2D classes


def _classify(args, out, star_path) -> dict:
    """2D classes of the first particles (cryolab.classify2d); class_averages.mrcs and classes.png."""
    import numpy as np
    import torch

    from cryolab.classify2d import Class2DSettings, batches_from_particles, run_em
    from cryolab.io import ParticleSet, read_particles, write_mrc
    from cryolab.plot import class_gallery_figure
    from cryolab.report import Figure, save_figure

    px = args.pixel_size
    particles = read_particles(star_path)
    m = min(len(particles), CLASS2D_PARTICLES)
    subset = ParticleSet(particles.table.iloc[:m].reset_index(drop=True), particles.images.subset(np.arange(m)), px)
    settings = Class2DSettings(
        n_classes=args.classes, box_size=args.box, pixel_size_A=px, psi_step_deg=CLASS2D_PSI_STEP_DEG,
        offset_range_A=CLASS2D_OFFSET_RANGE_A, mask_diameter_A=0.85 * args.box * px,
        max_resolution_A=max(CLASS2D_MAX_RESOLUTION_A, 2 * px),
    )
    result = run_em(batches_from_particles(subset), settings, n_iterations=CLASS2D_ITERATIONS, seed=args.seed)
    state = result.state
    write_mrc(out.path("class_averages.mrcs"), state.references.cpu(), px)
    counts = torch.bincount(result.assignments.class_index, minlength=args.classes)
    save_figure(class_gallery_figure(state.references.cpu(), counts, state.class_resolution_A.cpu(), ncols=min(args.classes, 6)),
                out.path("classes.png"))
    order = torch.argsort(counts, descending=True, stable=True).tolist()
    classes = [{"class": c + 1, "particles": int(counts[c]), "percent": round(100 * int(counts[c]) / m, 1),
                "frc_resolution_A": _finite(state.class_resolution_A[c])} for c in order]
    shares = ", ".join(f"{k['particles']} ({k['percent']:g}%)" for k in classes)
    figure = Figure(
        "classes.png", "2D class averages",
        f"The {args.classes} class averages after {CLASS2D_ITERATIONS} iterations, most populated first, with particle "
        f"count, share and the FRC resolution between random halves (optimistic: both halves are aligned to the "
        f"same average). Populations: {shares}. The particles take every orientation, so each class gathers "
        "neighbouring views of the molecule; look for the outline and the domains of adenylate kinase sharpening "
        "out of images that individually show almost nothing.",
        section="4. 2D classes",
        text=f"The first {m} particles are classified in 2D without using their known poses: maximum-likelihood "
             f"expectation-maximization (cryolab.classify2d, as RELION's Class2D) over {args.classes} classes, in-plane "
             f"rotations every {CLASS2D_PSI_STEP_DEG:g}° and origins within {CLASS2D_OFFSET_RANGE_A:g} Å, through each "
             "particle's CTF.")
    numbers = {"class2d_particles": m, "class2d_iterations": CLASS2D_ITERATIONS, "classes": classes,
               "class2d_final_resolution_A": _finite(result.history[-1]["resolution_A"])}
    return {"figure": figure, "numbers": numbers}
