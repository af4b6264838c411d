"""Build a small illustrated report from built-in data: CTF, images at several defoci, Fourier views.

Writes PNG figures and an index.html into the output folder:

  ctf_profiles.png   1D CTF (sin χ) against spatial frequency (1/Å, top axis in Å) for a few
                     defocus values at the chosen voltage (no envelope)
  ctf_2d.png         2D CTFs (centred, Thon rings) including an astigmatic one
  images.png         the built-in adenylate kinase (open, 4AKE) projected along z, and the same
                     projection modulated by each CTF: underfocus (positive defocus) shows protein
                     white with a dark fringe, overfocus inverts the low-frequency contrast
  fourier.png        log amplitude of the Fourier transforms of the clean and CTF-modulated
                     images, axes in 1/Å

Example:  cryolab demo -o demo_out
"""

from __future__ import annotations


def add_args(parser) -> None:
    parser.add_argument("--pixel-size", type=float, default=1.0, metavar="Å", help="pixel size of the images in Å (default 1.0)")
    parser.add_argument("--box", type=int, default=128, metavar="PX", help="image size in pixels (default 128)")
    parser.add_argument("--voltage", type=float, default=300.0, metavar="kV", help="acceleration voltage in kV (default 300)")
    parser.add_argument(
        "--defocus",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0, 3.0],
        metavar="µm",
        help="defocus values in µm, positive = underfocus (default 0.5 1 2 3)",
    )


def main(args, out) -> None:
    import torch

    from cryolab.atoms import builtin_model, project_atoms
    from cryolab.ctf import CTFParams
    from cryolab.errors import InputError
    from cryolab.report import write_index

    if args.pixel_size <= 0:
        raise InputError(f"--pixel-size must be positive, got {args.pixel_size}")
    if args.box < 16:
        raise InputError(f"--box must be at least 16 pixels, got {args.box}")
    if args.voltage <= 0:
        raise InputError(f"--voltage must be positive, got {args.voltage}")

    defocus_A = [d * 1e4 for d in args.defocus]
    params = CTFParams(
        defocus_u_A=torch.tensor(defocus_A, dtype=torch.float64),
        defocus_v_A=torch.tensor(defocus_A, dtype=torch.float64),
        defocus_angle_deg=0.0,
        voltage_kV=args.voltage,
    )
    labels = [f"{d:g} µm" for d in args.defocus]

    model = builtin_model("adk_open")
    identity = torch.eye(3)
    clean = project_atoms(model, identity, args.box, args.pixel_size)

    figures = [
        _ctf_profiles_figure(out.path("ctf_profiles.png"), params, labels, args.pixel_size),
        _ctf_2d_figure(out.path("ctf_2d.png"), params, labels, args.box, args.pixel_size, args.voltage),
        _images_figure(out.path("images.png"), clean, params, labels, args.pixel_size),
        _fourier_figure(out.path("fourier.png"), clean, params, labels, args.pixel_size),
    ]
    write_index(
        out.path("index.html"),
        "cryolab demo",
        figures,
        intro=f"Built-in adenylate kinase (PDB 4AKE chain A), box {args.box} px at {args.pixel_size:g} Å/px, {args.voltage:g} kV. "
        "Conventions: docs/conventions.md (RELION CTF sign: positive defocus = underfocus, CTF(0) = +Q0).",
    )


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
    return Figure(path.name, "CTF profiles", "sin χ(k) for each defocus (no envelope). Higher defocus: more low-frequency contrast, faster oscillation.")


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
    return Figure(path.name, "2D CTFs", "Centred 2D CTF out to 1/(8 Å) (red positive, blue negative). For the astigmatic one, defocus U (2.5 µm) lies along the direction 30° from x, where the rings are densest.")


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
    return Figure(path.name, "Images at several defoci", "Projected potential of adenylate kinase, then modulated by each CTF (applied on a 2× padded canvas). Protein is white.")


def _fourier_figure(path, clean, params, labels, pixel_size_A):
    import torch

    from cryolab.fourier import fft_centered
    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure
    from cryolab.simulate.ctf_sampling import apply_ctf_padded

    modulated = apply_ctf_padded(clean[None], params[-1:], pixel_size_A)[0]
    spectra = [torch.log1p(fft_centered(img, 2).abs()) for img in (clean, modulated)]
    half = 0.5 / pixel_size_A
    fig = image_grid(spectra, ["|F| of projection", f"|F| after CTF ({labels[-1]})"], ncols=2, cmap="magma", extent=(-half, half, -half, half), panel_size=4)
    for ax in fig.axes:
        ax.axis("on")
        ax.set_xlabel("kx (1/Å)")
        ax.set_ylabel("ky (1/Å)")
    save_figure(fig, path)
    return Figure(path.name, "Fourier space", "log(1 + |F|) of the clean and CTF-modulated images: the CTF's zeros appear as Thon rings.")
