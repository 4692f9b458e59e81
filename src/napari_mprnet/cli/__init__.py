"""The ``napari-mprnet`` command line: one sub-module per sub-command."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

#: Sub-command modules; each defines ``add_parser(subparsers)`` which sets ``handler``.
SUBCOMMANDS = ("restore", "demo", "finetune", "export")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-mprnet",
        description="MPRNet image restoration (denoise, deblur, derain) for batches of "
        "images, on a GPU node or a laptop. Run 'napari-mprnet COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
