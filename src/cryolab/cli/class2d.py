"""2D classification of particles by maximum-likelihood expectation-maximization (RELION's Class2D).

Each particle is compared with every class average at every in-plane angle (grid of --psi-step)
and every origin (grid of --offset-step-A within --offset-range-A), through its CTF, under white
or coloured Gaussian noise; the posterior over these hidden variables weighs the particle's
contribution to the new CTF-corrected, regularised averages (--tau2-fudge). The noise spectrum,
the class weights and the spread of origins are re-estimated every iteration; the E-step uses
frequencies up to the current resolution plus 10 shells. Early on, a class left with few
particles is restarted from half of the largest class (--reseed-until). Computation is in Fourier
space with batched matrix products (library: cryolab.classify2d). Particles are streamed
--batch-size at a time. Input: a RELION .star file, a cryoSPARC .cs file, or an .mrcs stack with a cryoDRGN CTF
pickle (--ctf-pkl). Images are expected normalised (background mean 0, std 1) with protein white.

Writes into the output folder:

  it###_classes.mrcs   class averages after each iteration (K images, pixel size in the header)
  particles.star       the input particle table plus rlnClassNumber (1-based), rlnAnglePsi (deg),
                       rlnOriginXAngst/YAngst (Å), rlnMaxValueProbDistribution and
                       rlnLogLikeliContribution of the last iteration (RELION 3.1 format)
  classes.png          class averages sorted by population, with particle counts, percentages and
                       FRC resolutions (FRC of random halves: optimistic, both halves are aligned
                       to the same average)
  convergence.png      log-likelihood and fraction of particles that changed class, per iteration
  history.json         per-iteration log-likelihood, changed fraction, E-step resolution, class
                       weights and resolutions, origin prior sigma, seconds
  index.html           the figures

Examples:
  cryolab class2d particles.star --classes 50 --particle-diameter-A 180 -o class2d
  cryolab class2d particles.mrcs --ctf-pkl ctf.pkl --classes 20 --iterations 25 -o class2d
"""

from __future__ import annotations


def add_args(parser) -> None:
    parser.add_argument("particles", metavar="PARTICLES",
                        help="particle file: RELION .star, cryoSPARC .cs, or .mrcs stack (with --ctf-pkl for its CTF)")
    parser.add_argument("-K", "--classes", type=int, required=True, metavar="K", help="number of classes")
    parser.add_argument("--iterations", type=int, default=25, metavar="N", help="EM iterations (default 25)")
    parser.add_argument("--psi-step", type=float, default=10.0, metavar="DEG",
                        help="in-plane angular sampling step in degrees (default 10)")
    parser.add_argument("--offset-range-A", type=float, metavar="Å",
                        help="origins are searched within this radius in Å about the box centre (default 5 pixels)")
    parser.add_argument("--offset-step-A", type=float, metavar="Å", help="origin grid step in Å (default 1 pixel)")
    parser.add_argument("--tau2-fudge", type=float, default=2.0, metavar="T",
                        help="regularisation parameter: the prior variance of the averages is T times their power "
                             "spectrum; larger trusts the data more (default 2, as RELION for 2D)")
    parser.add_argument("--particle-diameter-A", type=float, metavar="Å",
                        help="diameter in Å of the soft circular mask on particles and averages (default: no mask)")
    parser.add_argument("--noise", choices=["coloured", "white"], default="coloured",
                        help="noise model: variance per Fourier shell (coloured, default) or one variance (white)")
    parser.add_argument("--max-resolution-A", type=float, metavar="Å",
                        help="never use frequencies finer than this resolution in Å (default: up to Nyquist)")
    parser.add_argument("--no-ctf", action="store_true", help="ignore the CTF (images taken as CTF-free)")
    parser.add_argument("--reseed-until", type=int, metavar="N",
                        help="in iterations up to N, a class with less than half of an even share of the particles is "
                             "restarted from one half of the largest class (default: the first half of the run; 0: never, "
                             "as RELION)")
    parser.add_argument("--batch-size", type=int, default=128, metavar="N",
                        help="particles read and processed at a time; sets the memory used (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initial class averages (default 0)")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å, overriding the file's")
    parser.add_argument("--ctf-pkl", metavar="PKL", help="cryoDRGN CTF pickle for an .mrcs input")
    parser.add_argument("--project-dir", metavar="DIR",
                        help="folder that relative image paths in the particle file are resolved against first")
    parser.add_argument("--device", default="cpu", help="torch device to compute on, e.g. cuda (default cpu)")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="CPU threads (default: the cores not busy with other work, from the load average, at least 1)")


def main(args, out) -> None:
    import json

    import numpy as np
    import torch

    from cryolab.classify2d import Class2DSettings, batches_from_particles, run_em
    from cryolab.errors import InputError
    from cryolab.io import read_particles, write_mrc, write_star
    from cryolab.report import write_index
    from cryolab.threads import choose_num_threads

    if args.classes < 1:
        raise InputError(f"--classes must be at least 1, got {args.classes}")
    if args.iterations < 1:
        raise InputError(f"--iterations must be at least 1, got {args.iterations}")
    if args.reseed_until is not None and args.reseed_until < 0:
        raise InputError(f"--reseed-until must be >= 0, got {args.reseed_until}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise InputError(f"--device must be cpu or cuda[:n], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")

    torch.set_num_threads(args.threads or choose_num_threads())
    particles = read_particles(args.particles, project_dir=args.project_dir, pixel_size_A=args.pixel_size, ctf=args.ctf_pkl)
    n, ny, nx = particles.images.shape
    if ny != nx:
        raise InputError(f"particle images must be square, got {nx}x{ny} pixels", args.particles)
    if n < args.classes:
        raise InputError(f"{n} particles cannot fill {args.classes} classes", args.particles)
    px = particles.pixel_size_A
    settings = Class2DSettings(
        n_classes=args.classes, box_size=nx, pixel_size_A=px, psi_step_deg=args.psi_step,
        offset_range_A=args.offset_range_A, offset_step_A=args.offset_step_A, tau2_fudge=args.tau2_fudge,
        mask_diameter_A=args.particle_diameter_A, use_ctf=not args.no_ctf, noise_model=args.noise,
        max_resolution_A=args.max_resolution_A,
    )
    batches = batches_from_particles(particles, batch_size=args.batch_size, use_ctf=not args.no_ctf)

    def write_iteration(record) -> None:
        write_mrc(out.path(f"it{record.iteration:03d}_classes.mrcs"), record.state.references.cpu(), px)

    result = run_em(batches, settings, n_iterations=args.iterations, seed=args.seed, device=args.device,
                    callback=write_iteration, reseed_iterations=args.reseed_until)

    a = result.assignments
    table = particles.table.copy()
    table["rlnClassNumber"] = a.class_index.numpy().astype(np.int64) + 1
    table["rlnAnglePsi"] = a.psi_deg.double().numpy()
    table["rlnOriginXAngst"] = a.offsets_A[:, 0].double().numpy()
    table["rlnOriginYAngst"] = a.offsets_A[:, 1].double().numpy()
    table["rlnMaxValueProbDistribution"] = a.max_probability.double().numpy()
    table["rlnLogLikeliContribution"] = a.log_likelihood.double().numpy()
    write_star(out.path("particles.star"), table)
    out.path("history.json").write_text(json.dumps({
        "settings": {k: v for k, v in vars(settings).items()},
        "iterations": result.history,
    }, indent=2, default=str) + "\n")

    figures = [
        _gallery_figure(out.path("classes.png"), result, px),
        _convergence_figure(out.path("convergence.png"), result.history),
    ]
    last = result.history[-1]
    write_index(out.path("index.html"), "cryolab class2d", figures,
                intro=f"{n} particles, {args.classes} classes, {args.iterations} iterations, box {nx} px at {px:g} Å/px; "
                      f"final E-step resolution {last['resolution_A']:.1f} Å. Averages: it{args.iterations:03d}_classes.mrcs; "
                      "assignments: particles.star.")


def _gallery_figure(path, result, pixel_size_A):
    import torch

    from cryolab.plot import class_gallery_figure
    from cryolab.report import Figure, save_figure

    state = result.state
    counts = torch.bincount(result.assignments.class_index, minlength=state.settings.n_classes)
    save_figure(class_gallery_figure(state.references.cpu(), counts.cpu(), state.class_resolution_A.cpu()), path)
    return Figure(path.name, "Class averages", "Final class averages, most populated first: particle count, share of "
                  f"particles and FRC resolution between random halves (pixel size {pixel_size_A:g} Å). Protein white.")


def _convergence_figure(path, history):
    from cryolab.report import Figure, plt, save_figure

    it = [h["iteration"] for h in history]
    res = [h["resolution_A"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    # the log-likelihood is over the frequencies used, so it is comparable only at one resolution:
    # one line per E-step resolution limit
    start = 0
    for end in range(1, len(it) + 1):
        if end == len(it) or res[end] != res[start]:
            ax1.plot(it[start:end], [history[i]["log_likelihood"] for i in range(start, end)], "o-", ms=3,
                     label=f"E-step to {res[start]:.1f} Å")
            start = end
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("log-likelihood (nats)")
    ax1.legend(fontsize=7)
    ax2.plot(it, [h["changed_fraction"] for h in history], "o-", ms=3, color="C1")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("fraction of particles that changed class")
    ax2.set_ylim(0, 1.05)
    fig.tight_layout()
    save_figure(fig, path)
    return Figure(path.name, "Convergence", "Left: total log-likelihood of each E-step, one line per resolution limit "
                  "(a finer limit adds frequencies, so the values of different lines are not comparable). Right: "
                  "fraction of particles whose most probable class changed from the previous iteration.")
