"""The ``cryolab`` command line: ``cryolab <command> [options]``.

Each command is one module in this package with a module docstring (its ``--help``),
``add_args(parser)`` and ``main(args, out)``. Every command takes ``-o/--outdir`` and writes
into it atomically: files are staged in a hidden folder and moved into place only when the
command succeeds, together with a ``run.json`` (arguments, cryolab version, time). Bad input
ends with a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cryolab.cli._output import OutputFolder

# Command name -> module. Modules import heavy dependencies inside main(), so --help is quick.
COMMANDS = {
    "class2d": "cryolab.cli.class2d",
    "demo": "cryolab.cli.demo",
    "simulate": "cryolab.cli.simulate",
    "nma": "cryolab.cli.nma",
    "fsc": "cryolab.cli.fsc",
    "mask": "cryolab.cli.mask",
    "postprocess": "cryolab.cli.postprocess",
    "local-res": "cryolab.cli.local_res",
    "reconstruct": "cryolab.cli.reconstruct",
    "train-vae": "cryolab.cli.train_vae",
    "eval-vol": "cryolab.cli.eval_vol",
    "analyze": "cryolab.cli.analyze",
    "traverse": "cryolab.cli.traverse",
    "select": "cryolab.cli.select",
}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryolab", description=_first_line(__doc__))
    from cryolab import __version__

    parser.add_argument("--version", action="version", version=f"cryolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, module_path in COMMANDS.items():
        module = importlib.import_module(module_path)
        p = sub.add_parser(
            name,
            help=_first_line(module.__doc__),
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_args(p)
        p.add_argument("-o", "--outdir", required=True, help="output folder (created; existing files of the same name are replaced)")
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cryolab`` console script; returns the exit status."""
    from cryolab.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with OutputFolder(args.outdir, command=args.command, args=args) as out:
            args._module.main(args, out)
    except InputError as exc:
        print(f"cryolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"cryolab {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryolab {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
