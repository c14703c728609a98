"""The ``meanfield-gan`` command line.

Each subcommand lives in its own module, which provides ``configure_parser(parser)`` and
``cli_main(args) -> int``; modules are imported only when their subcommand runs, so
``meanfield-gan --help`` stays fast. Bad input raises :class:`ValueError` (or
:class:`FileNotFoundError`/:class:`FileExistsError`), which is printed as one line
``meanfield-gan: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("meanfield_gan.io.runfile",
            "run a TOML configuration and write an H5MD trajectory file"),
    "rate": ("meanfield_gan.studies.rate", "the C/N convergence-rate study of SGD to the WGAN-PDE"),
    "toy": ("meanfield_gan.studies.toy",
            "the explicit periodic example (step generator, ReLU critic)"),
    "coagulation": ("meanfield_gan.studies.coagulation",
                    "coagulation of the critic at the boundary of the box"),
    "bimodal": ("meanfield_gan.studies.bimodal",
                "bimodal Gaussian GAN: optimal vs first-order dynamics"),
    "ring": ("meanfield_gan.studies.ring", "8-Gaussian ring: WGAN vs WGAN-GP vs non-saturating"),
    "vanishing": ("meanfield_gan.studies.vanishing",
                  "vanishing generator gradients: a frozen generator, a fresh critic"),
    "modecollapse": ("meanfield_gan.studies.collapse_objectives",
                     "mode collapse on a bimodal target across GAN objectives"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser; with ``only``, import just that subcommand's module."""
    parser = argparse.ArgumentParser(
        prog="meanfield-gan",
        description="Mean-field particle simulations of GAN training dynamics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meanfield-gan`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.cli_main(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"meanfield-gan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("meanfield-gan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
