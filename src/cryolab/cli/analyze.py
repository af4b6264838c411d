"""Look at the latent space of a trained heterogeneity model: PCA, UMAP, k-means maps, PC trajectories.

Reads a cryolab train-vae output folder (z.npy: the latent mean of every particle, in input
order; checkpoints/epoch_NNN.pt for maps) and writes, like cryoDRGN's analyze:

  pca.npy                (N, zdim) principal coordinates of every particle
  pca.png, pca_hexbin.png, pca_marginals.png, explained_variance.png
                         PC1 vs PC2 as points, as density (log count per hexagon) and with
                         histograms on the margins; variance along each principal axis
  umap.npy, umap.png, umap_hexbin.png, umap_marginals.png
                         the same for a 2D UMAP embedding (seeded; skipped with --skip-umap)
  kmeansK/labels.npy     cluster of each particle (0 … K-1; also labels.txt), k-means with
                         K = --ksample in latent space; clusters numbered by a walk along the
                         minimum spanning tree of the centres (neighbours get consecutive numbers)
  kmeansK/centers.txt    latent of the particle nearest each centre (one row per cluster), and
  kmeansK/centers_ind.txt  that particle's 0-based index
  kmeansK/vol_000.mrc …  the map at each of those latents (voxel size in the header), and
  kmeansK/volumes.png    their projections along z, x and y
  kmeansK/pca.png, umap.png  the clusters and their numbered centres on each embedding
  pcI/z_values.txt, pcI/vol_000.mrc …, pcI/volumes.png
                         maps along principal axis I (I = 1 … --pc) at the 5th, 15th … 95th
                         percentile of the particles' coordinate on it, other axes at the mean
  index.html             all figures with captions

The k-means maps sample the landscape at K well-populated places; they are not K states. A
continuum is cut into K tiles as readily as K discrete states are separated: read the
embeddings (islands or a continuum?) and the cluster sizes before naming states. PC
trajectories are straight lines through latent space and may cross empty regions; use
cryolab traverse for paths through the particles.

Examples:
  cryolab analyze vae -o vae/analyze
  cryolab analyze vae --epoch 10 --ksample 10 --pc 3 -o vae/analyze.10
  cryolab analyze vae --skip-volumes --skip-umap -o quicklook
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("train_dir", metavar="TRAIN_DIR", help="output folder of cryolab train-vae (z.npy, checkpoints/)")
    parser.add_argument("--epoch", type=int, metavar="E",
                        help="analyse epoch E (1-based): latents z.epoch_EEE.npy and checkpoint epoch_EEE.pt (default: the last epoch, z.npy)")
    parser.add_argument("--ksample", type=int, default=20, metavar="K", help="number of k-means clusters, one map each (default 20)")
    parser.add_argument("--pc", type=int, default=2, metavar="P", help="maps along the first P principal axes (default 2; 0 for none)")
    parser.add_argument("--percentiles", type=float, nargs="+", metavar="%",
                        help="percentiles along each principal axis where maps are made (default 5 15 … 95)")
    parser.add_argument("--skip-umap", action="store_true", help="do not compute the UMAP embedding (it takes a minute for 100 000 particles)")
    parser.add_argument("--skip-volumes", action="store_true", help="no maps: embeddings, clusters and plots only (no checkpoint needed)")
    parser.add_argument("--box", type=int, metavar="PX", help="box of the maps in voxels (default the training box; voxel size scaled to match)")
    parser.add_argument("--seed", type=int, default=0, help="random state of k-means and UMAP (default 0)")


def main(args, out) -> None:
    import numpy as np

    from cryolab.errors import InputError
    from cryolab.heterogeneity.analysis import (embedding_hexbin_figure, embedding_marginals_figure, embedding_scatter_figure,
                                                fit_latent_pca, kmeans_latent, pca_project, read_training_latents,
                                                training_volume_generator, umap_embedding)
    from cryolab.heterogeneity.traversal import DEFAULT_PERCENTILES, pc_trajectory, volumes_along
    from cryolab.report import Figure, save_figure, write_index

    if args.ksample < 1:
        raise InputError(f"--ksample must be at least 1, got {args.ksample}")
    if args.pc < 0:
        raise InputError(f"--pc must be >= 0, got {args.pc}")
    percentiles = DEFAULT_PERCENTILES if args.percentiles is None else tuple(args.percentiles)

    z = read_training_latents(args.train_dir, epoch=args.epoch)
    n, zdim = z.shape
    if args.ksample > n:
        raise InputError(f"--ksample {args.ksample} is more than the {n} particles")
    if args.pc > zdim:
        raise InputError(f"--pc {args.pc}: the latent space has only {zdim} dimensions")
    volume_fn = pixel_size_A = None
    if not args.skip_volumes:
        volume_fn, pixel_size_A, epoch = training_volume_generator(args.train_dir, epoch=args.epoch, box_size=args.box)
        if args.epoch is None and epoch != _last_latent_epoch(args.train_dir, epoch):
            raise InputError(f"z.npy is not from the checkpoint's epoch {epoch}; give --epoch", args.train_dir)

    figures: list = []
    pca = fit_latent_pca(z)
    coords = pca_project(z, pca).numpy()
    np.save(out.path("pca.npy"), coords.astype(np.float32))
    ratio = pca.explained_variance_ratio.numpy()
    pc_names = ("PC1", "PC2")
    if zdim == 1:
        plane = np.stack([coords[:, 0], np.zeros(n)], axis=1)
        figures.append(_histogram(out.path("pca.png"), coords[:, 0], "z (1-dimensional latent)"))
    else:
        plane = coords[:, :2]
        pc_names = (f"PC1 ({100 * ratio[0]:.0f} %)", f"PC2 ({100 * ratio[1]:.0f} %)")
        save_figure(embedding_scatter_figure(plane, axis_names=pc_names, title=f"{n} particles, latent PCA"), out.path("pca.png"))
        save_figure(embedding_hexbin_figure(plane, axis_names=pc_names, title="latent PCA, density"), out.path("pca_hexbin.png"))
        save_figure(embedding_marginals_figure(plane, axis_names=pc_names), out.path("pca_marginals.png"))
        figures += [
            Figure("pca.png", "PCA of the latent means", "Every particle's latent mean on the first two principal axes (percent of variance)."),
            Figure("pca_hexbin.png", "PCA, density", "Log particle count per hexagon: where particles pile up when points overlap."),
            Figure("pca_marginals.png", "PCA with marginal histograms",
                   "Separate peaks along an axis suggest discrete states; one broad spread, a continuum (or noise)."),
        ]
    figures.append(_explained_variance(out.path("explained_variance.png"), ratio))

    umap_coords = None
    if not args.skip_umap and zdim > 1 and n >= 4:
        umap_coords = umap_embedding(z, seed=args.seed).numpy()
        np.save(out.path("umap.npy"), umap_coords.astype(np.float32))
        names = ("UMAP1", "UMAP2")
        save_figure(embedding_scatter_figure(umap_coords, axis_names=names, title=f"{n} particles, UMAP"), out.path("umap.png"))
        save_figure(embedding_hexbin_figure(umap_coords, axis_names=names, title="UMAP, density"), out.path("umap_hexbin.png"))
        save_figure(embedding_marginals_figure(umap_coords, axis_names=names), out.path("umap_marginals.png"))
        figures += [
            Figure("umap.png", "UMAP of the latent means",
                   "A 2D embedding that keeps each particle's neighbours: clusters and gaps are real, but sizes and distances between them are not."),
            Figure("umap_hexbin.png", "UMAP, density", "Log particle count per hexagon."),
            Figure("umap_marginals.png", "UMAP with marginal histograms", ""),
        ]

    k = args.ksample
    clusters = kmeans_latent(z, k, seed=args.seed)
    kdir = f"kmeans{k}"
    labels = clusters.labels.numpy()
    np.save(out.path(f"{kdir}/labels.npy"), labels)
    np.savetxt(out.path(f"{kdir}/labels.txt"), labels, fmt="%d")
    centre_idx = clusters.center_particles.numpy()
    np.savetxt(out.path(f"{kdir}/centers.txt"), z[centre_idx], fmt="%.6g")
    np.savetxt(out.path(f"{kdir}/centers_ind.txt"), centre_idx, fmt="%d")
    sizes = np.bincount(labels, minlength=k)
    save_figure(embedding_scatter_figure(plane, labels=labels, annotate=centre_idx, axis_names=pc_names,
                                         title=f"k-means, K = {k}, on PCA"), out.path(f"{kdir}/pca.png"))
    figures.append(Figure(f"{kdir}/pca.png", f"k-means (K = {k}) on PCA",
                          f"Clusters in latent space and the particle nearest each centre (numbered as vol_000 …). "
                          f"Particles per cluster: {', '.join(map(str, sizes))}."))
    if umap_coords is not None:
        save_figure(embedding_scatter_figure(umap_coords, labels=labels, annotate=centre_idx, axis_names=("UMAP1", "UMAP2"),
                                             title=f"k-means, K = {k}, on UMAP"), out.path(f"{kdir}/umap.png"))
        figures.append(Figure(f"{kdir}/umap.png", f"k-means (K = {k}) on UMAP",
                              "The same clusters and centres: compare where the numbered maps sit in the two embeddings."))

    trajectories = []
    for i in range(args.pc):
        z_path, values = pc_trajectory(z, pca, i, percentiles=percentiles)
        np.savetxt(out.path(f"pc{i + 1}/z_values.txt"), z_path.numpy(), fmt="%.6g")
        trajectories.append((i, z_path, values))

    if volume_fn is not None:
        from cryolab.heterogeneity.volumes import write_volumes

        vols = volumes_along(volume_fn, z[centre_idx])
        write_volumes(vols, out.path(kdir), pixel_size_A)
        figures.append(_montage(out.path(f"{kdir}/volumes.png"), vols, [f"{j}: {sizes[j]} ptcls" for j in range(k)],
                                f"k-means maps {kdir}/vol_000 … vol_{k - 1:03d}", pixel_size_A))
        for i, z_path, values in trajectories:
            vols = volumes_along(volume_fn, z_path)
            write_volumes(vols, out.path(f"pc{i + 1}"), pixel_size_A)
            titles = [f"{p:g}th pct ({v:.2f})" for p, v in zip(percentiles, values.tolist())]
            figures.append(_montage(out.path(f"pc{i + 1}/volumes.png"), vols, titles,
                                    f"PC{i + 1} trajectory pc{i + 1}/vol_000 …", pixel_size_A))
    write_index(out.path("index.html"), "cryolab analyze", figures,
                intro=f"{n} particles, latent dimension {zdim}, from {args.train_dir}"
                      + (f" (epoch {args.epoch})" if args.epoch else "")
                      + ". k-means maps sample the landscape at well-populated places; they are not states. "
                      + ("Maps were not made (--skip-volumes)." if volume_fn is None else f"Maps: {pixel_size_A:.3g} Å/voxel."))


def _last_latent_epoch(train_dir, checkpoint_epoch: int) -> int:
    """The epoch z.npy belongs to: config.json's training.epochs, or the checkpoint's when unrecorded."""
    import json
    from pathlib import Path

    path = Path(train_dir) / "config.json"
    try:
        return int(json.loads(path.read_text())["training"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return checkpoint_epoch


def _histogram(path, values, label):
    from cryolab.report import Figure, plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(values, bins=80)
    ax.set_xlabel(label)
    ax.set_ylabel("particles")
    save_figure(fig, path)
    return Figure(path.name, "Latent distribution", "Histogram of the 1-dimensional latent of all particles.")


def _explained_variance(path, ratio):
    from cryolab.report import Figure, plt, save_figure

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(range(1, len(ratio) + 1), 100 * ratio)
    ax.set_xlabel("principal axis")
    ax.set_ylabel("variance explained (%)")
    save_figure(fig, path)
    return Figure(path.name, "Variance along each principal axis",
                  "How much of the latent spread each axis carries; one dominant axis suggests one main degree of freedom.")


def _montage(path, volumes, titles, title, pixel_size_A):
    from cryolab.heterogeneity.movies import trajectory_frames
    from cryolab.plot import image_grid
    from cryolab.report import Figure, save_figure

    images = trajectory_frames(volumes, kind="projection")[:, 0]
    fig = image_grid(list(images), titles, ncols=min(5, len(images)), suptitle=title)
    save_figure(fig, path)
    rel = f"{path.parent.name}/{path.name}"
    return Figure(rel, title, f"Projection of each map along z ({pixel_size_A:.3g} Å/pixel).")
