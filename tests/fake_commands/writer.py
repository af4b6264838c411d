"""Write two files, then fail when asked (a test double for the CLI framework).

Used by tests/test_cli.py only.
"""

from cryolab.errors import InputError


def add_args(parser):
    parser.add_argument("input", help="a name")
    parser.add_argument("--fail", choices=["none", "input", "missing"], default="none", help="how to fail")


def main(args, out):
    out.path("a.txt").write_text(args.input)
    out.path("sub/b.txt").write_text("b")
    if args.fail == "input":
        raise InputError("not a valid thing", args.input)
    if args.fail == "missing":
        open("/nonexistent/file.mrc")
