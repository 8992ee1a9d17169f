"""``python -m backend``: command-line entry point (serve, matte, batch)."""

from __future__ import annotations

import argparse
import sys

from backend import __version__


def build_parser() -> argparse.ArgumentParser:
    from backend.serving.cli import add_subcommands

    parser = argparse.ArgumentParser(prog="python -m backend", description="DFIMat backend")
    parser.add_argument("--version", action="version", version=f"dfimat-backend {__version__}")
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
