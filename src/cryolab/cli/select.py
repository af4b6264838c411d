"""Select particles from the latent space of a trained heterogeneity model and write them as a STAR subset.

Reads a cryolab train-vae output folder (z.npy: one latent mean per particle, in input order)
and the particle file the model was trained on (--particles; its rows must match z.npy), and
selects particles by one of:

  --kmeans K --clusters C …   k-means clusters of the latent means (0-based ids, as cryolab
                              analyze numbers them with the same --seed), or --labels FILE
                              --clusters C … with a labels file (analyze's kmeansK/labels.npy)
  --polygon "x1,y1 x2,y2 …"   the particles inside a polygon (a lasso) drawn on a 2D embedding:
                              --embedding umap (default; seeded UMAP) or pca (PC1, PC2), or the
                              coordinates in --embedding-file (analyze's umap.npy / pca.npy) —
                              the polygon must refer to the same embedding you looked at
  --outliers F                the fraction F (0–1) of particles whose latents lie farthest from
                              the rest (--outlier-method mahalanobis: distance from the mean in
                              units of the latent covariance; knn: mean distance to the --knn
                              nearest particles) — candidate junk

--invert keeps the complement (e.g. everything but the outliers).

Writes into the output folder:

  particles.star      the selected rows of the particle file, every column kept, image names
                      unchanged (they still point at the original images; relative names
                      resolve from the same project directory, or give --absolute-paths)
  indices.txt, indices.npy   the selected particles, 0-based, sorted
  selection.png       the selection on the embedding (or the outlier scores' histogram)
  index.html

Examples:
  cryolab select vae --particles sim/particles.star --kmeans 20 --clusters 3 4 -o state_a
  cryolab select vae --particles sim/particles.star --polygon "1,2 4,2 4,6 1,6" --embedding-file vae/analyze/umap.npy -o lasso
  cryolab select vae --particles sim/particles.star --outliers 0.05 --invert -o clean
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("train_dir", metavar="TRAIN_DIR", help="output folder of cryolab train-vae (z.npy)")
    parser.add_argument("--particles", required=True, metavar="STAR", help="the RELION .star particle file the model was trained on")
    parser.add_argument("--epoch", type=int, metavar="E", help="latents of epoch E (1-based, z.epoch_EEE.npy; default z.npy, the last)")
    mode = parser.add_argument_group("selection (choose one)")
    mode.add_argument("--kmeans", type=int, metavar="K", help="k-means clusters in latent space (with --clusters)")
    mode.add_argument("--labels", metavar="FILE", help="cluster labels per particle (.npy or text, e.g. analyze's kmeansK/labels.npy) instead of --kmeans")
    mode.add_argument("--clusters", type=int, nargs="+", metavar="C", help="cluster ids to keep (0-based)")
    mode.add_argument("--polygon", metavar='"X,Y X,Y …"', help="vertices of a polygon in embedding coordinates (at least 3)")
    mode.add_argument("--embedding", choices=["umap", "pca"], default="umap", help="embedding the polygon is drawn on (default umap)")
    mode.add_argument("--embedding-file", metavar="NPY", help="(N, 2) embedding coordinates to use instead of recomputing (analyze's umap.npy or pca.npy)")
    mode.add_argument("--outliers", type=float, metavar="F", help="select the fraction F (0–1) of most outlying latents")
    mode.add_argument("--outlier-method", choices=["mahalanobis", "knn"], default="mahalanobis",
                      help="outlier score: mahalanobis (default; one blob) or knn (several clusters)")
    mode.add_argument("--knn", type=int, default=10, metavar="K", help="neighbours for --outlier-method knn (default 10)")
    parser.add_argument("--invert", action="store_true", help="keep the particles NOT selected")
    parser.add_argument("--absolute-paths", action="store_true",
                        help="write image names with absolute paths (resolved as cryolab reads them), so the subset works from any folder")
    parser.add_argument("--seed", type=int, default=0, help="random state of k-means and UMAP (default 0, as cryolab analyze)")


def main(args, out) -> None:
    from cryolab.errors import InputError
    from cryolab.heterogeneity.analysis import read_training_latents
    from cryolab.heterogeneity.selection import invert_selection, subset_table, write_index_file
    from cryolab.io import read_star, write_star
    from cryolab.report import Figure, write_index

    modes = [args.kmeans is not None or args.labels is not None or args.clusters is not None, args.polygon is not None,
             args.outliers is not None]
    if sum(modes) != 1:
        raise InputError("choose one selection: --kmeans K --clusters C …, --polygon \"x,y …\", or --outliers F")
    table = read_star(args.particles)
    z = read_training_latents(args.train_dir, epoch=args.epoch)
    n = len(table)
    if z.shape[0] != n:
        raise InputError(f"{z.shape[0]} latents in {args.train_dir} but {n} particles in the file; select from the particle file the model was trained on",
                         args.particles)

    if modes[0]:
        selected, figure = _by_cluster(args, z)
        what = f"clusters {' '.join(map(str, args.clusters))}"
    elif modes[1]:
        selected, figure = _by_polygon(args, z)
        what = f"inside the polygon on the {'given' if args.embedding_file else args.embedding} embedding"
    else:
        selected, figure = _by_outliers(args, z)
        what = f"the {args.outliers:g} most outlying latents ({args.outlier_method})"
    chosen = selected.numpy()
    if args.invert:
        chosen = invert_selection(chosen, n).numpy()
        what = f"all but {what}"
    if chosen.size == 0:
        raise InputError(f"the selection ({what}) contains no particles")

    subset = subset_table(table, chosen)
    if args.absolute_paths:
        subset = _absolute_image_names(subset)
    write_star(out.path("particles.star"), subset)
    write_index_file(out.path("indices.txt"), chosen)
    write_index_file(out.path("indices.npy"), chosen)
    figure(out.path("selection.png"), chosen)
    write_index(out.path("index.html"), "cryolab select",
                [Figure("selection.png", "Selection", f"{chosen.size} of {n} particles: {what}.")],
                intro=f"{chosen.size} of {n} particles selected ({what}); particles.star keeps every column of {args.particles}.")


def _by_cluster(args, z):
    from cryolab.errors import InputError
    from cryolab.heterogeneity.analysis import fit_latent_pca, kmeans_latent, pca_project
    from cryolab.heterogeneity.selection import read_index_file, select_clusters

    if args.clusters is None:
        raise InputError("give the cluster ids to keep: --clusters C …")
    if (args.kmeans is None) == (args.labels is None):
        raise InputError("give either --kmeans K or --labels FILE with --clusters")
    if args.labels is not None:
        labels = read_index_file(args.labels).numpy()  # integer per particle, same format as indices
        if labels.size != z.shape[0]:
            raise InputError(f"{labels.size} labels but {z.shape[0]} particles", args.labels)
    else:
        if not 1 <= args.kmeans <= z.shape[0]:
            raise InputError(f"--kmeans must be between 1 and the number of particles ({z.shape[0]}), got {args.kmeans}")
        labels = kmeans_latent(z, args.kmeans, seed=args.seed).labels.numpy()
    selected = select_clusters(labels, args.clusters)
    plane = pca_project(z, fit_latent_pca(z)).numpy()

    def figure(path, chosen):
        _selection_plot(path, plane, chosen, ("PC1", "PC2"), labels=labels)

    return selected, figure


def _by_polygon(args, z):
    import numpy as np

    from cryolab.errors import InputError
    from cryolab.heterogeneity.analysis import fit_latent_pca, pca_project, umap_embedding
    from cryolab.heterogeneity.selection import parse_polygon, select_in_polygon

    polygon = parse_polygon(args.polygon)
    if args.embedding_file is not None:
        from pathlib import Path

        path = Path(args.embedding_file)
        if not path.is_file():
            raise InputError("embedding file not found", path)
        try:
            coords = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot read embedding as .npy: {type(exc).__name__}", path) from None
        if coords.ndim != 2 or coords.shape[0] != z.shape[0] or coords.shape[1] < 2:
            raise InputError(f"embedding must be (N = {z.shape[0]}, 2), got shape {coords.shape}", path)
        coords = coords[:, :2]
        names = (f"{path.stem}1", f"{path.stem}2")
    elif args.embedding == "umap":
        coords = umap_embedding(z, seed=args.seed).numpy()
        names = ("UMAP1", "UMAP2")
    else:
        if z.shape[1] < 2:
            raise InputError("a PCA plane needs a latent space of at least 2 dimensions")
        coords = pca_project(z, fit_latent_pca(z)).numpy()[:, :2]
        names = ("PC1", "PC2")
    selected = select_in_polygon(coords, polygon)

    def figure(path, chosen):
        _selection_plot(path, coords, chosen, names, polygon=polygon.numpy())

    return selected, figure


def _by_outliers(args, z):
    from cryolab.heterogeneity.selection import latent_outlier_scores, select_outliers

    selected = select_outliers(z, args.outliers, method=args.outlier_method, n_neighbors=args.knn)
    scores = latent_outlier_scores(z, method=args.outlier_method, n_neighbors=args.knn).numpy()

    def figure(path, chosen):
        from cryolab.report import plt, save_figure

        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.hist(scores, bins=80, log=True, color="0.6")
        threshold = scores[selected.numpy()].min()
        ax.axvline(threshold, color="C3", label=f"selected: score ≥ {threshold:.3g}")
        ax.set_xlabel(f"latent outlier score ({args.outlier_method})")
        ax.set_ylabel("particles")
        ax.legend()
        save_figure(fig, path)

    return selected, figure


def _selection_plot(path, coords, chosen, names, *, labels=None, polygon=None):
    import numpy as np

    from cryolab.report import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    mask = np.zeros(len(coords), dtype=bool)
    mask[chosen] = True
    size = float(np.clip(3000.0 / len(coords), 0.5, 12))
    ax.scatter(coords[~mask, 0], coords[~mask, 1], s=size, c="0.75", lw=0, rasterized=True, label="not selected")
    ax.scatter(coords[mask, 0], coords[mask, 1], s=size, c="C3", lw=0, rasterized=True, label=f"selected ({mask.sum()})")
    if polygon is not None:
        closed = np.vstack([polygon, polygon[:1]])
        ax.plot(closed[:, 0], closed[:, 1], "k-", lw=1)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(loc="best", fontsize=8, markerscale=3)
    save_figure(fig, path)


def _absolute_image_names(table):
    from cryolab.io import format_image_names, parse_image_names, resolve_image_path

    source = table.attrs.get("cryolab_source")
    frames, names = parse_image_names(table["rlnImageName"].to_numpy(), source=source)
    resolved = {name: str(resolve_image_path(name, source=source).resolve()) for name in dict.fromkeys(names)}
    table = table.copy()
    table["rlnImageName"] = format_image_names(frames, [resolved[name] for name in names])
    return table
