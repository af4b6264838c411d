"""Sharpen the average of two half maps: FSC (mask-corrected), FSC weighting, B-factor, low-pass.

As relion_postprocess --auto_bfac (Rosenthal & Henderson 2003): the half maps' FSC (with
--mask, the masked FSC corrected by phase randomisation, Chen et al. 2013) gives the resolution
at FSC = 0.143; the average of the half maps is weighted per shell by sqrt(2·FSC/(1+FSC)); a
straight line through its Guinier plot (ln mean amplitude against 1/d²) between --autob-lowres-A
and the final resolution gives B = 4 × slope, applied as exp(-B·k²/4) (negative B sharpens); the
result is low-pass filtered at the final resolution with a cosine edge two shells wide.

Writes into the output folder:

  postprocess.mrc          sharpened, weighted, filtered map, with the half maps' pixel size
  postprocess_masked.mrc   the same times the mask (with --mask)
  postprocess.json         resolution (RELION's rule and interpolated), B-factor and fit range,
                           slope, intercept and correlation of the fit, mask correction settings
  fsc.csv, fsc.png         FSC curves (unmasked; masked, phase-randomised and corrected with --mask)
  guinier.png              ln amplitude against 1/d²: input, FSC-weighted and sharpened, with the fit

Examples:
  cryolab postprocess half1.mrc half2.mrc --mask mask.mrc -o post
  cryolab postprocess half1.mrc half2.mrc --bfactor -80 -o post_b80
"""

from __future__ import annotations

from cryolab.cli.fsc import add_half_map_args


def parse_bfactor(text: str):
    """``--bfactor``: the word ``auto`` or a number of Å²."""
    if text == "auto":
        return "auto"
    return float(text)


def add_args(parser) -> None:
    add_half_map_args(parser, unfiltered=True)
    parser.add_argument("--mask", metavar="MASK", help="soft mask (MRC, values in [0, 1], same box and pixel size)")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å; overrides the map headers")
    parser.add_argument("--bfactor", type=parse_bfactor, default="auto", metavar="auto|Å²",
                        help="'auto' (default): fit the B-factor on the Guinier plot; or a B-factor in Å² to apply "
                             "as exp(-B k²/4) (negative sharpens, 0 for none)")
    parser.add_argument("--autob-lowres-A", type=float, default=10.0, metavar="Å",
                        help="lowest resolution in Å included in the B-factor fit (default 10)")
    parser.add_argument("--autob-highres-A", type=float, metavar="Å",
                        help="highest resolution in Å included in the fit (default: the final resolution; "
                             "0: every shell with nonzero FSC weight, as RELION's default)")
    parser.add_argument("--lowpass-A", type=float, metavar="Å",
                        help="low-pass filter the result at this resolution in Å (default: the final resolution; 0: no filter)")
    parser.add_argument("--skip-fsc-weighting", action="store_true", help="do not weight shells by sqrt(2 FSC/(1+FSC))")
    parser.add_argument("--randomize-at-fsc", type=float, default=0.8, metavar="FSC",
                        help="with --mask: randomise phases from the shell where the unmasked FSC drops below this (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random phases (with --mask; default 0)")


def main(args, out) -> None:
    import json
    import math

    from cryolab.cli.fsc import fsc_figure, fsc_table, read_half_maps
    from cryolab.errors import InputError
    from cryolab.io import write_mrc
    from cryolab.postprocess import postprocess
    from cryolab.validate import fsc_shell_frequencies

    if not args.autob_lowres_A > 0:
        raise InputError(f"--autob-lowres-A must be positive, got {args.autob_lowres_A}")
    if args.autob_highres_A is not None and args.autob_highres_A < 0:
        raise InputError(f"--autob-highres-A must be >= 0, got {args.autob_highres_A}")
    if args.lowpass_A is not None and args.lowpass_A < 0:
        raise InputError(f"--lowpass-A must be >= 0, got {args.lowpass_A}")
    if not math.isfinite(args.bfactor if args.bfactor != "auto" else 0.0):
        raise InputError(f"--bfactor must be 'auto' or a finite number of Å², got {args.bfactor}")
    if not 0 < args.randomize_at_fsc < 1:
        raise InputError(f"--randomize-at-fsc must be between 0 and 1, got {args.randomize_at_fsc}")
    map_a, map_b, mask, pixel_size_A = read_half_maps(args.half1, args.half2, args.mask, args.pixel_size)
    lowpass = "resolution" if args.lowpass_A is None else (None if args.lowpass_A == 0 else args.lowpass_A)
    result = postprocess(map_a, map_b, pixel_size_A, mask=mask, b_factor_A2=args.bfactor, autob_lowres_A=args.autob_lowres_A,
                         autob_highres_A=args.autob_highres_A, fsc_weighting=not args.skip_fsc_weighting, lowpass_A=lowpass,
                         randomize_at_fsc=args.randomize_at_fsc, seed=args.seed)

    write_mrc(out.path("postprocess.mrc"), result.map, pixel_size_A)
    if result.masked_map is not None:
        write_mrc(out.path("postprocess_masked.mrc"), result.masked_map, pixel_size_A)

    n = map_a.shape[0]
    frequencies = fsc_shell_frequencies(n, pixel_size_A)
    if result.masked is None:
        columns = {"fsc": result.fsc_unmasked}
        curves = {"unmasked": (result.fsc_unmasked, "C0-")}
    else:
        m = result.masked
        columns = {"fsc": m.unmasked, "fsc_masked": m.masked, "fsc_phase_randomized_masked": m.randomized_masked, "fsc_corrected": m.corrected}
        curves = {"unmasked": (m.unmasked, "C2-"), "masked": (m.masked, "C0-"),
                  f"phase-randomised beyond shell {m.randomize_from_shell}, masked": (m.randomized_masked, "C1-"),
                  "corrected (reported)": (m.corrected, "k-")}
    fsc_table(frequencies, n, pixel_size_A, columns).to_csv(out.path("fsc.csv"), index=False, float_format="%.6g")
    fsc_figure(out.path("fsc.png"), frequencies, curves, result.resolution, title=f"{n}³ box, {pixel_size_A:g} Å/px")
    _guinier_figure(out.path("guinier.png"), result)

    def clean(x):
        return None if x is None or not math.isfinite(x) else round(float(x), 4)

    res = result.resolution
    summary = {
        "box_size": n,
        "pixel_size_A": pixel_size_A,
        "resolution_A": clean(res.resolution_A),
        "resolution_interpolated_A": clean(res.interpolated_resolution_A),
        "fsc_threshold": res.threshold,
        "fsc_curve": ("corrected masked FSC" if result.masked is not None and result.fsc_final is result.masked.corrected
                      else "unmasked FSC"),
        "bfactor_A2": clean(result.b_factor_A2),
        "bfactor_mode": "auto" if result.bfactor_fit is not None else "given",
        "fsc_weighting": not args.skip_fsc_weighting,
        "lowpass_A": clean(result.lowpass_A),
    }
    if result.bfactor_fit is not None:
        fit = result.bfactor_fit
        summary["bfactor_fit"] = {"lowres_A": clean(fit.lowres_A), "highres_A": clean(fit.highres_A), "n_shells": fit.n_points,
                                  "slope": round(fit.slope, 4), "intercept": round(fit.intercept, 4),
                                  "correlation": round(fit.correlation, 4)}
    if result.masked is not None:
        summary["mask"] = {"file": str(args.mask), "randomize_from_shell": result.masked.randomize_from_shell,
                           "randomize_from_A": clean(n * pixel_size_A / result.masked.randomize_from_shell), "seed": args.seed}
    out.path("postprocess.json").write_text(json.dumps(summary, indent=2) + "\n")


def _guinier_figure(path, result):
    from cryolab.plot import guinier_figure
    from cryolab.report import save_figure

    save_figure(guinier_figure(result), path)
