"""The `gprune` command line. Each sub-command lives in its own module and registers itself here.

Building the parser imports neither torch nor transformers (the command modules import them inside their
handlers, and ``gprune/__init__`` loads its names lazily), so ``gprune --help`` and ``--version`` answer in
well under a second; a command needs a supported transformers unless it sets ``needs_transformers=False``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gprune.errors import UserError

COMMAND_MODULES: list[str] = [
    "gprune.cli_demo",
    "gprune.cli_run",
    "gprune.cli_flops",
    "gprune.cli_bench",
    "gprune.cli_eval",
    "gprune.cli_visualize",
    "gprune.cli_env",
]


def package_version() -> str:
    """gprune's installed version, from its metadata (no import of the package's modules)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gprune")
    except PackageNotFoundError:  # a source tree without installation
        return "0.0.0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprune",
        description="Training-free visual token pruning for multimodal LLMs (G-Prune, AAAI 2025). "
        "Options shared by the commands (--keep, --method, --positions, --device, --dtype, --json) mean the "
        "same everywhere; see README.md, 'One vocabulary'.",
    )
    parser.add_argument("--version", action="version", version=f"gprune {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if getattr(args, "needs_transformers", True):
            from gprune.integrations.hf_version import require_transformers

            require_transformers()
        return int(args.handler(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"gprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
