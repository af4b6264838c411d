"""Reconstruct a 3D map from particles with known poses by direct Fourier inversion.

Reads a RELION STAR file, a cryoSPARC .cs file, or an .mrcs stack with cryoDRGN pose and CTF
pickles (--poses, --ctf). Images stream through memory in chunks: each is Fourier transformed,
its origin (rlnOriginX/YAngst) undone, multiplied by its CTF and inserted into a padded 3D
Fourier grid (trilinear, as RELION), with CTF² into a weight grid; symmetry copies are inserted
too. The two half sets (rlnRandomSubset, or alternate particles) are reconstructed separately:

  --ssnr-from-halves (default)  data / (weight + W̄/SSNR), the SSNR per shell from the half-map
                                FSC (FSC/(1-FSC)), as RELION's refinement regularises
  --wiener-constant C           data / (weight + C·W̄) for every shell (C = 1/SSNR)
  --relion-gridding             relion_reconstruct's default (iterative gridding weights, no
                                regularisation), for comparison

W̄ is the mean weight in the shell. Then the inverse FFT, the central crop, the gridding
correction and RELION's soft spherical mask on the box corners give the map.

Writes into the output folder:

  reconstruction.mrc   the map from all particles (pixel size in the header)
  half1.mrc, half2.mrc the half maps
  fsc.csv, fsc.png     the half-map FSC per shell (with --mask: masked, corrected by phase
                       randomisation); resolution at 0.143 and 0.5
  reconstruction.json  resolutions, particles per half, options

and prints one line with the half-map FSC resolution.

Examples:
  cryolab reconstruct particles.star -o recon
  cryolab reconstruct particles.star --symmetry D7 --mask mask.mrc -o recon_d7
  cryolab reconstruct particles.mrcs --poses poses.pkl --ctf ctf.pkl -o recon
"""

from __future__ import annotations


def add_args(parser) -> None:
    parser.add_argument("particles", metavar="PARTICLES",
                        help="particles: RELION .star, cryoSPARC .cs, or .mrcs with --poses/--ctf (cryoDRGN pickles)")
    parser.add_argument("--poses", metavar="PKL", help="cryoDRGN pose pickle (replaces the poses of PARTICLES)")
    parser.add_argument("--ctf", metavar="PKL", help="cryoDRGN CTF pickle (replaces the CTF of PARTICLES)")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å; overrides the metadata and headers")
    parser.add_argument("--project-dir", metavar="DIR",
                        help="folder that relative image paths are resolved against first (RELION project folder)")
    parser.add_argument("--symmetry", default="C1", metavar="GROUP",
                        help="point group, RELION's axes: C1 (default), Cn, Dn, T, O, I (= I2), I1, I3, I4")
    parser.add_argument("--chunk-size", type=int, default=256, metavar="N",
                        help="images read and back-projected at a time by each worker; sets memory, not the result "
                             "(default 256)")
    parser.add_argument("--pad-factor", type=float, default=2.0, metavar="F",
                        help="oversampling of the 3D Fourier grid (default 2, as RELION)")
    parser.add_argument("--interpolation", choices=("linear", "nearest"), default="linear",
                        help="kernel for inserting slices: linear (trilinear, default) or nearest (cruder, faster)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ssnr-from-halves", action="store_true",
                       help="regularise with the SSNR from the half-map FSC (the default)")
    group.add_argument("--wiener-constant", type=float, metavar="C",
                       help="regularise with a constant C = 1/SSNR, relative to the mean weight per shell")
    group.add_argument("--relion-gridding", action="store_true",
                       help="relion_reconstruct's default instead: iterative gridding weights, no regularisation")
    parser.add_argument("--tau2-fudge", type=float, default=1.0, metavar="T",
                        help="multiply the FSC-derived SSNR by T (RELION's --tau2_fudge; default 1)")
    parser.add_argument("--mask", metavar="MASK",
                        help="soft mask (MRC, values in [0, 1], same box and pixel size) for the reported FSC")
    parser.add_argument("--no-ctf", action="store_true", help="do not correct for the CTF even if the particles have one")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads, each back-projecting a block of one half set into its own grids (~105 MB "
                             "each for a box of 128, 800 MB for 256), then finalising maps side by side "
                             "(default: the CPU cores, at most 4)")


def main(args, out) -> None:
    import importlib
    import json
    import math
    import threading

    from cryolab.cli.fsc import fsc_figure, fsc_table
    from cryolab.errors import InputError
    from cryolab.io import read_mrc, read_particles, write_mrc
    from cryolab.masks import check_mask
    from cryolab.reconstruct import reconstruct_from_particles, symmetry_order
    from cryolab.validate import fsc_resolution, fsc_shell_frequencies, masked_fsc_corrected

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise InputError(f"--pixel-size must be positive, got {args.pixel_size}")
    if args.chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if not args.pad_factor >= 1:
        raise InputError(f"--pad-factor must be >= 1, got {args.pad_factor}")
    if args.wiener_constant is not None and not (args.wiener_constant >= 0 and math.isfinite(args.wiener_constant)):
        raise InputError(f"--wiener-constant must be >= 0, got {args.wiener_constant}")
    if not args.tau2_fudge > 0:
        raise InputError(f"--tau2-fudge must be positive, got {args.tau2_fudge}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    symmetry_order(args.symmetry)  # an unknown group fails before any work

    particles = read_particles(args.particles, project_dir=args.project_dir, pixel_size_A=args.pixel_size,
                               poses=args.poses, ctf=args.ctf)
    n_images, ny, nx = particles.images.shape
    pixel_size_A = particles.pixel_size_A
    mask = None
    if args.mask is not None:
        mask_mrc = read_mrc(args.mask)
        mask = check_mask(mask_mrc.data, (nx, nx, nx), pixel_size_A=pixel_size_A,
                          mask_pixel_size_A=mask_mrc.pixel_size_A, path=args.mask)

    if args.relion_gridding:
        regularisation = "relion"
    elif args.wiener_constant is not None:
        regularisation = "wiener"
    else:
        regularisation = "ssnr-from-halves"
    kwargs = {"wiener_constant": args.wiener_constant} if args.wiener_constant is not None else {}
    # matplotlib takes ~0.5 s to import; the back-projection runs in numba and torch code that
    # releases the GIL, so the plotting modules load alongside it instead of after it
    preload = threading.Thread(target=importlib.import_module, args=("cryolab.plot",), daemon=True)
    preload.start()
    result = reconstruct_from_particles(
        particles, chunk_size=args.chunk_size, pad_factor=args.pad_factor, interpolation=args.interpolation,
        symmetry=args.symmetry, regularisation=regularisation, tau2_fudge=args.tau2_fudge,
        use_ctf=False if args.no_ctf else None, workers=args.workers, **kwargs)

    write_mrc(out.path("reconstruction.mrc"), result.volume, pixel_size_A)
    write_mrc(out.path("half1.mrc"), result.half1, pixel_size_A)
    write_mrc(out.path("half2.mrc"), result.half2, pixel_size_A)

    box = result.volume.shape[-1]
    frequencies = fsc_shell_frequencies(box, pixel_size_A)
    if mask is None:
        reported = result.fsc
        columns = {"fsc": result.fsc}
        curves = {"half maps, unmasked": (result.fsc, "C0-")}
    else:
        masked = masked_fsc_corrected(result.half1, result.half2, mask)
        reported = masked.corrected
        columns = {"fsc": masked.unmasked, "fsc_masked": masked.masked,
                   "fsc_phase_randomized_masked": masked.randomized_masked, "fsc_corrected": masked.corrected}
        curves = {"unmasked": (masked.unmasked, "C2-"), "masked": (masked.masked, "C0-"),
                  "phase-randomised, masked": (masked.randomized_masked, "C1-"),
                  "corrected (reported)": (masked.corrected, "k-")}
    if result.ssnr is not None:
        columns["ssnr_full_map"] = result.ssnr[: len(frequencies)]
    res143 = fsc_resolution(reported, box, pixel_size_A, 0.143)
    res05 = fsc_resolution(reported, box, pixel_size_A, 0.5)
    fsc_table(frequencies, box, pixel_size_A, columns).to_csv(out.path("fsc.csv"), index=False, float_format="%.6g")
    preload.join()
    fsc_figure(out.path("fsc.png"), frequencies, curves, res143,
               title=f"{result.n_particles[0]} + {result.n_particles[1]} particles, {args.symmetry}, {box}³ at {pixel_size_A:g} Å/px")

    def finite(x):
        return round(float(x), 4) if math.isfinite(x) else None

    summary = {
        "particles": {"half1": result.n_particles[0], "half2": result.n_particles[1], "source": str(args.particles)},
        "box_size": int(box),
        "pixel_size_A": float(pixel_size_A),
        "symmetry": args.symmetry,
        "pad_factor": args.pad_factor,
        "interpolation": args.interpolation,
        "regularisation": regularisation,
        "wiener_constant": args.wiener_constant,
        "tau2_fudge": args.tau2_fudge,
        "ctf_corrected": not args.no_ctf and all(c in particles.table.columns for c in ("rlnDefocusU", "rlnDefocusV")),
        "fsc_curve": "corrected masked FSC" if mask is not None else "unmasked FSC",
        "resolution_A_fsc_0.143": finite(res143.resolution_A),
        "resolution_A_fsc_0.143_interpolated": finite(res143.interpolated_resolution_A),
        "resolution_A_fsc_0.5": finite(res05.resolution_A),
        "mask": None if args.mask is None else str(args.mask),
    }
    out.path("reconstruction.json").write_text(json.dumps(summary, indent=2) + "\n")
    where = "masked, corrected" if mask is not None else "unmasked"
    print(f"half-map FSC ({where}): {res143.resolution_A:.2f} Å at 0.143, {res05.resolution_A:.2f} Å at 0.5 "
          f"({result.n_particles[0]} + {result.n_particles[1]} particles, {args.symmetry}, {regularisation})")
