"""Train a cryoDRGN-style variational autoencoder on posed particles: a latent space of conformations.

Each particle image is encoded into a Gaussian latent coordinate z (--zdim numbers); a decoder,
a coordinate network over 3D Fourier space with a positional encoding of the frequency and z
as inputs, gives the map at z; the image is rendered as the map's central slice at the
particle's pose (RELION matrix A, docs/conventions.md), times its CTF, shifted by its origin,
and compared with the image's Fourier transform within the disc of radius box/2 (Gaussian
likelihood); a KL term weighted by --beta keeps z near a standard normal (the variational
autoencoder objective). --zdim 0 gives a homogeneous neural reconstruction. Poses and CTFs
are taken as given (refine them first). Images should be normalised as RELION and cryolab
simulate write them (background mean 0, standard deviation 1, protein white); the model also
scales them by their RMS value. The library: cryolab.heterogeneity (model, training, volumes).

Input: a RELION .star or cryoSPARC .cs particle file (poses and CTF in it), or an .mrcs stack
with cryoDRGN pose and CTF pickles (--poses, --ctf). Images are streamed from disk in random
minibatches (--preload reads them all into memory first).

Writes into the output folder:

  z.npy               (N, zdim) latent means of all particles in input order (last epoch);
                      cryolab analyze reads it
  z_logvar.npy        (N, zdim) their log-variances
  z.epoch_001.npy …   latent means after every epoch
  checkpoints/epoch_001.pt …   model, Adam state, random state after every epoch (1-based);
                      written straight into the output folder as each epoch ends, so an
                      interrupted run can be resumed (--resume) — the rest appears when the
                      command finishes
  config.json         model architecture (for cryolab eval-vol) and training settings
  train_log.csv       epoch, loss, reconstruction, kl, seconds
  learning_curve.png, index.html

The same --seed, data and options give the same result (on one device and thread count).

Examples:
  cryolab train-vae sim/particles.star --zdim 8 -n 20 -o vae
  cryolab train-vae particles.mrcs --poses pose.pkl --ctf ctf.pkl --zdim 1 -n 10 -o vae
  cryolab train-vae sim/particles.star --zdim 8 -n 30 -o vae --resume       # 20 more epochs
  cryolab train-vae sim/particles.star --zdim 0 -n 10 -o homo               # homogeneous map
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("particles", metavar="PARTICLES", help="particle file: RELION .star, cryoSPARC .cs, or .mrcs with --poses/--ctf")
    parser.add_argument("--poses", metavar="PKL", help="cryoDRGN pose pickle (rotation matrices, shifts as fraction of the box); replaces the file's poses")
    parser.add_argument("--ctf", metavar="PKL", help="cryoDRGN CTF pickle; replaces the file's CTF parameters")
    parser.add_argument("--no-ctf", action="store_true", help="images have no CTF (e.g. simulated without one)")
    parser.add_argument("--zdim", type=int, default=8, help="latent dimension (default 8); 0: homogeneous reconstruction, no encoder")
    parser.add_argument("-n", "--epochs", type=int, default=20, metavar="EPOCHS",
                        help="train up to this epoch (default 20); with --resume, the total including earlier epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed: initial weights, minibatch order, latent samples (default 0)")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å, overriding the metadata / MRC header")
    parser.add_argument("--project-dir", metavar="DIR", help="folder that relative image paths in the STAR/.cs file are resolved against first")

    t = parser.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=16, metavar="B", help="particles per minibatch (default 16)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=float, metavar="β",
                   help="weight of the KL term per Fourier coefficient, as cryoDRGN's --beta (default 1/zdim; "
                        "0.5 is the exact evidence lower bound for images of unit noise)")
    t.add_argument("--pixel-fraction", type=float, default=0.25, metavar="F",
                   help="evaluate the decoder at a fraction F of each minibatch's Fourier points, a new draw every "
                        "minibatch (the lowest frequencies always, a random subset of the rest): an unbiased estimate "
                        "of the loss at about F times the cost (default 0.25, which separated the states and improved "
                        "the map faster per unit of time than 0.5 or 1 in benchmarks/vae.py); 1: all points")
    t.add_argument("--preload", action="store_true", help="read all images into memory first (default: stream minibatches from disk)")
    t.add_argument("--resume", nargs="?", const="last", metavar="EPOCH",
                   help="continue from OUTDIR/checkpoints/epoch_EPOCH.pt (default: the last one); the architecture options must be the same")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default cpu)")
    t.add_argument("--threads", type=int, metavar="T",
                   help="CPU threads (default: the cores not busy with other work, from the load average, at least 1)")

    m = parser.add_argument_group("model")
    m.add_argument("--enc-dim", type=int, default=256, metavar="W", help="encoder width (default 256)")
    m.add_argument("--enc-layers", type=int, default=3, metavar="L", help="encoder residual layers of width × width (default 3)")
    m.add_argument("--dec-dim", type=int, default=256, metavar="W", help="decoder width (default 256)")
    m.add_argument("--dec-layers", type=int, default=3, metavar="L", help="decoder residual layers of width × width (default 3)")
    m.add_argument("--pe-type", choices=["gaussian", "geom_lowf", "geom_full"], default="gaussian",
                   help="positional encoding of the frequency: random Gaussian Fourier features (gaussian, default, as "
                        "cryoDRGN's), or per-axis geometric angular frequencies 1 … box/2 (geom_lowf) or 1 … π·box (geom_full)")
    m.add_argument("--pe-dim", type=int, metavar="K", help="frequencies per axis in the positional encoding (default box/2)")
    m.add_argument("--feat-sigma", type=float, default=0.5, metavar="σ",
                   help="scale of the gaussian encoding's frequencies in units of box/2 (default 0.5)")
    m.add_argument("--downsample", type=int, metavar="PX",
                   help="train on images Fourier-cropped to PX pixels (faster; pixel size grows by box/PX)")
    m.add_argument("--enc-mask-radius", type=float, metavar="PX",
                   help="radius in pixels (of the training box) of the disc of pixels the encoder sees (default box/2)")


def _config_from_args(args, box_size: int, pixel_size_A: float):
    from cryolab.heterogeneity import HetModelConfig

    return HetModelConfig(
        box_size=box_size, pixel_size_A=pixel_size_A, zdim=args.zdim,
        encoder_layers=args.enc_layers, encoder_width=args.enc_dim,
        decoder_layers=args.dec_layers, decoder_width=args.dec_dim,
        pe_type=args.pe_type, pe_dim=args.pe_dim, feat_sigma=args.feat_sigma,
        downsample=args.downsample, enc_mask_radius=args.enc_mask_radius,
    )


def main(args, out) -> None:
    import csv
    import json
    from pathlib import Path

    import numpy as np
    import torch

    from cryolab.errors import InputError
    from cryolab.heterogeneity import ParticleData, choose_num_threads, find_checkpoint, train_vae
    from cryolab.io import read_particles

    if args.zdim < 0:
        raise InputError(f"--zdim must be >= 0, got {args.zdim}")
    if args.epochs < 1:
        raise InputError(f"-n must be a positive number of epochs, got {args.epochs}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    if not args.lr > 0:
        raise InputError(f"--lr must be positive, got {args.lr}")
    if args.beta is not None and not args.beta >= 0:
        raise InputError(f"--beta must be >= 0, got {args.beta}")
    if not 0 < args.pixel_fraction <= 1:
        raise InputError(f"--pixel-fraction must be in (0, 1], got {args.pixel_fraction}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be positive, got {args.threads}")
    if args.no_ctf and args.ctf:
        raise InputError("--no-ctf and --ctf contradict each other")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no GPU")

    particles = read_particles(args.particles, pixel_size_A=args.pixel_size, poses=args.poses, ctf=args.ctf,
                               project_dir=args.project_dir)
    table = particles.table
    if not all(c in table.columns for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
        hint = "give --poses PKL" if Path(args.particles).suffix.lower() in (".mrcs", ".mrc") else "refine them first or give --poses PKL"
        raise InputError(f"particles have no poses (rlnAngleRot/Tilt/Psi); {hint}", args.particles)
    n, ny, nx = particles.images.shape
    if ny != nx:
        raise InputError(f"particle images must be square, got {nx}x{ny}", args.particles)
    config = _config_from_args(args, nx, particles.pixel_size_A)
    data = ParticleData.from_particles(particles, use_ctf=not args.no_ctf, preload=args.preload)

    checkpoints = Path(args.outdir) / "checkpoints"
    resume_from = None
    if args.resume is not None:
        try:
            epoch = None if args.resume == "last" else int(args.resume)
        except ValueError:
            raise InputError(f"--resume takes an epoch number, got {args.resume!r}") from None
        resume_from = find_checkpoint(checkpoints, epoch)
        from cryolab.heterogeneity import read_checkpoint

        done = int(read_checkpoint(resume_from)["epoch"])
        if done >= args.epochs:
            raise InputError(f"the checkpoint is of epoch {done}: give -n larger than {done} to train more", resume_from)

    threads = args.threads or choose_num_threads()
    torch.set_num_threads(threads)

    def on_epoch(stats, z_mu, z_logvar, model):
        np.save(out.path(f"z.epoch_{stats.epoch:03d}.npy"), z_mu)

    result = train_vae(data, config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, beta=args.beta,
                       seed=args.seed, device=args.device, checkpoint_dir=checkpoints, resume_from=resume_from,
                       pixel_fraction=args.pixel_fraction, on_epoch=on_epoch)

    np.save(out.path("z.npy"), result.z_mu)
    np.save(out.path("z_logvar.npy"), result.z_logvar)
    beta = args.beta if args.beta is not None else (1.0 / args.zdim if args.zdim else 0.0)
    settings = {
        "model": config.to_dict(),
        "training": {"particles": str(args.particles), "n_particles": n, "epochs": result.epoch,
                     "batch_size": args.batch_size, "lr": args.lr, "beta": beta, "seed": args.seed,
                     "pixel_fraction": args.pixel_fraction, "preload": args.preload,
                     "use_ctf": not args.no_ctf, "device": args.device, "threads": threads,
                     "data_scale": float(result.model.data_scale),
                     "resumed_from": None if resume_from is None else str(resume_from)},
        "checkpoint": f"checkpoints/epoch_{result.epoch:03d}.pt",
    }
    out.path("config.json").write_text(json.dumps(settings, indent=2) + "\n")
    with open(out.path("train_log.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "loss", "reconstruction", "kl", "seconds"])
        writer.writeheader()
        for row in result.history:
            writer.writerow({k: row[k] for k in writer.fieldnames})
    _learning_curve(out.path("learning_curve.png"), result.history, args.zdim)
    from cryolab.report import Figure, write_index

    write_index(out.path("index.html"), "cryolab train-vae",
                [Figure("learning_curve.png", "Learning curve",
                        "Mean loss per epoch: reconstruction (mean squared error per Fourier coefficient, normalised "
                        "units; about 1 for pure noise) plus β·KL per coefficient; the KL divergence (nats per particle) "
                        "on the right axis.")],
                intro=f"{n} particles, zdim {args.zdim}, {result.epoch} epochs. Latent means: z.npy; "
                      f"maps: cryolab eval-vol checkpoints/epoch_{result.epoch:03d}.pt --z ...")


def _learning_curve(path, history, zdim):
    from cryolab.report import plt, save_figure

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="loss")
    ax.plot(epochs, [h["reconstruction"] for h in history], "s--", label="reconstruction (MSE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("per Fourier coefficient (normalised units)")
    if zdim > 0:
        right = ax.twinx()
        right.plot(epochs, [h["kl"] for h in history], "^:", color="C2", label="KL")
        right.set_ylabel("KL (nats per particle)", color="C2")
    ax.legend(loc="upper right")
    ax.set_title("train-vae learning curve")
    save_figure(fig, path)
