"""Maps and a movie along a trajectory through latent space: a principal axis, a graph path, or a line.

Reads a cryolab train-vae output folder (z.npy, checkpoints/) and decodes maps along one of:

  --pc P                 principal axis P (1 = PC1) of the latent means, at percentiles of the
                         particles' coordinate on it (--percentiles, default --frames points from
                         the 5th to the 95th); the other axes at the mean. A straight line: it
                         may cross regions no particle occupies.
  --path-from I --path-to J [--path-via K …]
                         the shortest path between particles I and J (0-based rows of z.npy)
                         through a graph joining every particle to its --knn nearest neighbours
                         in latent space (Dijkstra). It stays where particles are; its length is a
                         latent distance, not a time or an energy. --frames path particles, evenly
                         spaced along it, are decoded.
  --z-start Z --z-end Z  a straight line between two latent coordinates (zdim numbers each).

Writes into the output folder:

  z_trajectory.txt       the latents decoded, one row per frame
  path_indices.txt       (graph path) every particle on the path, 0-based, in order;
  frame_indices.txt      the particles decoded as frames
  vol_000.mrc …          one map per frame (voxel size in the header)
  trajectory.gif / .mp4  (--movie) projections along z, y and x (or central sections, with
                         --movie-kind slice) of every map on one grey scale, with a bar showing
                         the position along the trajectory; MP4 needs imageio-ffmpeg
  frames.png             the same projections as a montage
  trajectory.png         the trajectory on the PC1/PC2 plane of the latent means
  index.html

Examples:
  cryolab traverse vae --pc 1 -o pc1
  cryolab traverse vae --path-from 12 --path-to 4031 --knn 10 --frames 12 -o path
  cryolab traverse vae --z-start "-1,0,0,0,0,0,0,0" --z-end "1,0,0,0,0,0,0,0" --movie-kind slice -o line
"""

from __future__ import annotations


def add_args(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("train_dir", metavar="TRAIN_DIR", help="output folder of cryolab train-vae (z.npy, checkpoints/)")
    mode = parser.add_argument_group("trajectory (choose one)")
    mode.add_argument("--pc", type=int, metavar="P", help="principal axis P of the latent means (1-based: 1 = PC1)")
    mode.add_argument("--percentiles", type=float, nargs="+", metavar="%",
                      help="with --pc: percentiles (0–100) of the particles' PC coordinate to decode (default: --frames points from 5 to 95)")
    mode.add_argument("--path-from", type=int, metavar="I", help="graph path: first particle (0-based row of z.npy)")
    mode.add_argument("--path-to", type=int, metavar="J", help="graph path: last particle (0-based)")
    mode.add_argument("--path-via", type=int, nargs="+", default=[], metavar="K", help="graph path: particles to pass through, in order (0-based)")
    mode.add_argument("--knn", type=int, default=10, metavar="K", help="graph path: neighbours joined to each particle (default 10)")
    mode.add_argument("--max-edge", type=float, metavar="D",
                      help="graph path: drop edges longer than D (latent units), so the path cannot jump sparse gaps")
    mode.add_argument("--z-start", metavar="Z1,Z2,...", help="line: first latent coordinate (zdim numbers, commas)")
    mode.add_argument("--z-end", metavar="Z1,Z2,...", help="line: last latent coordinate")
    parser.add_argument("--frames", type=int, default=10, metavar="M", help="maps to decode along the trajectory (default 10)")
    parser.add_argument("--epoch", type=int, metavar="E", help="use epoch E (1-based): z.epoch_EEE.npy and epoch_EEE.pt (default the last)")
    parser.add_argument("--box", type=int, metavar="PX", help="box of the maps in voxels (default the training box)")
    parser.add_argument("--movie", choices=["gif", "mp4", "none"], default="gif", help="movie format (default gif; mp4 needs imageio-ffmpeg)")
    parser.add_argument("--movie-kind", choices=["projection", "slice"], default="projection",
                        help="movie frames: projections along z, y, x (default) or central sections through the box")
    parser.add_argument("--fps", type=float, default=5.0, help="movie frames per second (default 5)")
    parser.add_argument("--bounce", action="store_true", help="play the movie forward then backward")
    parser.add_argument("--skip-volumes", action="store_true", help="write the trajectory's latents and plot only (no checkpoint needed)")


def _parse_z(text: str, zdim: int, name: str):
    import numpy as np

    from cryolab.errors import InputError

    try:
        values = np.array([float(v) for v in text.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise InputError(f"{name}: expected {zdim} numbers separated by commas, got {text!r}") from None
    if values.size != zdim or not np.all(np.isfinite(values)):
        raise InputError(f"{name}: expected {zdim} finite numbers (the latent dimension), got {values.size}")
    return values


def main(args, out) -> None:
    import numpy as np

    from cryolab.errors import InputError
    from cryolab.heterogeneity.analysis import fit_latent_pca, pca_project, read_training_latents, training_volume_generator
    from cryolab.heterogeneity.traversal import graph_path, linear_trajectory, pc_trajectory, resample_path, volumes_along
    from cryolab.report import Figure, write_index

    modes = [args.pc is not None, args.path_from is not None or args.path_to is not None, args.z_start is not None or args.z_end is not None]
    if sum(modes) != 1:
        raise InputError("choose one trajectory: --pc P, --path-from I --path-to J, or --z-start Z --z-end Z")
    if args.frames < 2:
        raise InputError(f"--frames must be at least 2, got {args.frames}")
    if args.fps <= 0:
        raise InputError(f"--fps must be positive, got {args.fps}")
    if args.movie == "mp4" and not args.skip_volumes:
        from cryolab.heterogeneity.movies import mp4_available

        if not mp4_available():
            raise InputError("--movie mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); use --movie gif")

    z = read_training_latents(args.train_dir, epoch=args.epoch)
    n, zdim = z.shape
    pca = fit_latent_pca(z)
    path_nodes = frame_nodes = None
    if modes[0]:
        if not 1 <= args.pc <= zdim:
            raise InputError(f"--pc must be between 1 and the latent dimension {zdim}, got {args.pc}")
        percentiles = args.percentiles if args.percentiles is not None else np.linspace(5, 95, args.frames).tolist()
        z_traj, values = pc_trajectory(z, pca, args.pc - 1, percentiles=percentiles)
        titles = [f"{p:g}th pct" for p in percentiles]
        description = f"principal axis {args.pc} at percentiles {', '.join(f'{p:g}' for p in percentiles)}"
    elif modes[1]:
        if args.path_from is None or args.path_to is None:
            raise InputError("a graph path needs both --path-from and --path-to")
        if args.knn < 1:
            raise InputError(f"--knn must be at least 1, got {args.knn}")
        anchors = [args.path_from, *args.path_via, args.path_to]
        path = graph_path(z, anchors, n_neighbors=args.knn, max_distance=args.max_edge)
        picks = resample_path(path.cumulative_distance, args.frames).numpy()
        path_nodes = path.indices.numpy()
        frame_nodes = path_nodes[picks]
        z_traj = z[frame_nodes]
        titles = [f"particle {i}" for i in frame_nodes]
        np.savetxt(out.path("path_indices.txt"), path_nodes, fmt="%d")
        np.savetxt(out.path("frame_indices.txt"), frame_nodes, fmt="%d")
        description = (f"shortest path through the {args.knn}-nearest-neighbour graph from particle {anchors[0]} to {anchors[-1]}: "
                       f"{len(path_nodes)} particles, latent length {float(path.cumulative_distance[-1]):.3g}")
    else:
        if args.z_start is None or args.z_end is None:
            raise InputError("a line needs both --z-start and --z-end")
        z_traj = linear_trajectory(_parse_z(args.z_start, zdim, "--z-start"), _parse_z(args.z_end, zdim, "--z-end"), args.frames)
        titles = [f"t = {t:.2f}" for t in np.linspace(0, 1, args.frames)]
        description = "straight line between the given latent coordinates"
    z_traj = np.asarray(z_traj, dtype=np.float32)
    np.savetxt(out.path("z_trajectory.txt"), z_traj, fmt="%.6g")

    figures = [_trajectory_figure(out.path("trajectory.png"), pca_project(z, pca).numpy(), pca_project(z_traj, pca).numpy(),
                                  path_nodes, description)]
    if not args.skip_volumes:
        from cryolab.heterogeneity.movies import frames_to_uint8, trajectory_frames, write_movie
        from cryolab.heterogeneity.volumes import write_volumes
        from cryolab.plot import image_grid
        from cryolab.report import save_figure

        volume_fn, pixel_size_A, _ = training_volume_generator(args.train_dir, epoch=args.epoch, box_size=args.box)
        vols = volumes_along(volume_fn, z_traj)
        write_volumes(vols, out.path("."), pixel_size_A)
        frames = trajectory_frames(vols, kind=args.movie_kind)
        save_figure(image_grid(list(frames[:, 0]), titles, ncols=min(5, len(frames)),
                               suptitle=f"{'projections' if args.movie_kind == 'projection' else 'central xy sections'} along the trajectory"),
                    out.path("frames.png"))
        figures.append(Figure("frames.png", "Maps along the trajectory",
                              f"Each frame's map seen along z ({pixel_size_A:.3g} Å/pixel); files vol_000.mrc … in the same order."))
        if args.movie != "none":
            count = write_movie(out.path(f"trajectory.{args.movie}"), frames_to_uint8(frames), fps=args.fps, bounce=args.bounce)
            if args.movie == "gif":  # an <img> shows a GIF; an MP4 opens from the folder
                figures.append(Figure("trajectory.gif", "Movie",
                                      f"{count} frames: views along z, y and x side by side on one grey scale; the bar shows the position along the trajectory."))
    write_index(out.path("index.html"), "cryolab traverse", figures, intro=f"{n} particles, latent dimension {zdim}: {description}.")


def _trajectory_figure(path, plane, traj, path_nodes, description):
    import numpy as np

    from cryolab.heterogeneity.analysis import embedding_scatter_figure
    from cryolab.report import Figure, save_figure

    if plane.shape[1] == 1:
        plane = np.concatenate([plane, np.zeros_like(plane)], axis=1)
        traj = np.concatenate([traj, np.zeros_like(traj)], axis=1)
    fig = embedding_scatter_figure(plane[:, :2], axis_names=("PC1", "PC2" if plane.shape[1] > 1 else "-"))
    ax = fig.axes[0]
    if path_nodes is not None:
        ax.plot(plane[path_nodes, 0], plane[path_nodes, 1], "-", color="0.3", lw=1, label="graph path")
    ax.plot(traj[:, 0], traj[:, 1], "o-", color="C3", ms=5, lw=1.5, label="frames")
    ax.annotate("start", traj[0, :2], xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)
    return Figure(path.name, "Trajectory on the latent PCA", description + ". The first frame is labelled 'start'.")
