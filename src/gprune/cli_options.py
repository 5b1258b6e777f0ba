"""The one vocabulary of the command line: names, forms and defaults every `gprune` command shares.

Why a module of its own: `run`, `demo`, `flops`, `bench`, `eval`, `visualize` and the lmms-eval
``model_args`` used to spell one idea five ways (``--keep-ratio``, ``--keep 0.5 0.33``, ``--keep 0.5,0.33``,
``keep_ratio=``...) with three different defaults. Every command now takes its options from here, so they
cannot drift apart again; README.md ("One vocabulary") documents the table.

This module imports neither torch nor transformers: building the parser for ``gprune --help`` stays fast.
The few names copied from heavier modules (method names, position modes, G-Prune's defaults) are checked
against their sources in tests/test_cli_vocabulary.py.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gprune.errors import UserError

Keep = float | int

DEFAULT_KEEP: float = 0.5
"""The keep default everywhere (API, CLI, lmms-eval): the released G-Prune code's ratio and `GPruneConfig`'s."""

DEFAULT_METHOD = "gprune"
EXAMPLE_METHODS: tuple[str, ...] = ("gprune", "gprune-paper", "random", "l2norm", "uniform", "divprune", "dart")
"""Methods named in ``--help`` (all registered; a test checks). The full list is checked when a command runs:
an unknown name is refused with every registered one and the closest named."""

POSITION_MODES: tuple[str, ...] = ("original", "compact")
DEFAULT_POSITIONS = "original"
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
DEFAULT_DEVICE = "auto"
DEFAULT_SIMILARITY_THRESHOLD = 0.5  # gprune.core's defaults (the released code's), copied to keep torch out
DEFAULT_TEMPERATURE = 0.03
DEFAULT_ITERATIONS = 5

KEEP_FORMS = "a ratio in (0, 1] such as 0.5 (1.0 = no pruning) or a token budget per image such as 640"
AMBIGUOUS_ONE = (
    "keep 1 is ambiguous: write 1.0 to keep every visual token (no pruning), or a budget of 2 or more tokens "
    "(a one-token budget is GPruneConfig(keep=1) in Python)"
)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def deprecated(old: str, new: str) -> None:
    """Say on stderr that `old` still works in this release but will go in the next; `new` replaces it."""
    print(f"gprune: warning: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)


def parse_keep(text: str | float | int, *, name: str = "--keep") -> Keep:
    """One keep value: a ratio (has a decimal point or exponent) or a token budget (a whole number >= 2).

    ``1`` alone is refused: users write it meaning both "keep all" (1.0) and "one token", and guessing
    either silently gives a wrong result.
    """
    if isinstance(text, bool):
        raise UserError(f"{name}: expected {KEEP_FORMS}, got {text!r}")
    if isinstance(text, (int, float)):
        value: Keep = text
    else:
        word = text.strip()
        try:
            value = int(word) if word.lstrip("+-").isdigit() else float(word)
        except ValueError:
            raise UserError(f"{name}: expected {KEEP_FORMS}, got {text!r}") from None
    if isinstance(value, int):
        if value == 1:
            raise UserError(f"{name}: {AMBIGUOUS_ONE}")
        if value < 1:
            raise UserError(f"{name}: a token budget must be >= 2 (or a ratio in (0, 1]), got {value}")
        return value
    if not 0.0 < value <= 1.0:  # also rejects nan and inf
        raise UserError(f"{name}: a ratio must be in (0, 1] (or a whole number for a token budget), got {text}")
    return float(value)


def split_list(values: str | Sequence[str]) -> list[str]:
    """``["0.5", "0.33"]`` or ``["0.5,0.33"]`` (or a mix) -> ``["0.5", "0.33"]``: both list forms are accepted."""
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_keep_list(values: str | Sequence[str], *, name: str = "--keep") -> list[Keep]:
    """Keep values separated by spaces, commas or both."""
    parts = split_list(values)
    if not parts:
        raise UserError(f"{name}: give at least one value: {KEEP_FORMS}")
    return [parse_keep(part, name=name) for part in parts]


def check_method(name: str, available: Sequence[str]) -> str:
    """`name` if it is a registered method, else a `UserError` with a suggestion and the list."""
    if name in available:
        return name
    raise UserError(f"unknown method {name!r}{did_you_mean(name, available)}; available: {', '.join(available)}")


# ---------------------------------------------------------------------------------------------- arguments

KEEP_HELP = f"{KEEP_FORMS} (default {DEFAULT_KEEP})"


def add_keep_argument(
    p: argparse.ArgumentParser, *, sweep: bool = False, default: Sequence[Keep] | None = None
) -> None:
    """``--keep`` (one value, or for a sweeping command several, space- or comma-separated), plus the old
    ``--keep-ratio`` / ``--keep-tokens`` spellings, hidden and deprecated."""
    if sweep:
        shown = " ".join(f"{k:g}" if isinstance(k, float) else str(k) for k in (default or [DEFAULT_KEEP]))
        p.add_argument(
            "--keep", nargs="+", default=None, metavar="KEEP",
            help=f"keep settings to compare, space- or comma-separated: each {KEEP_FORMS} (default {shown})",
        )  # fmt: skip
        p.add_argument("--keep-ratio", nargs="+", default=None, help=argparse.SUPPRESS)
        p.add_argument("--keep-tokens", nargs="+", default=None, help=argparse.SUPPRESS)
    else:
        p.add_argument("--keep", default=None, metavar="KEEP", help=KEEP_HELP)
        p.add_argument("--keep-ratio", default=None, help=argparse.SUPPRESS)
        p.add_argument("--keep-tokens", default=None, help=argparse.SUPPRESS)
    p.set_defaults(keep_sweep=sweep, keep_default=list(default) if default else [DEFAULT_KEEP])


def _old_keep_values(args: argparse.Namespace) -> list[Keep]:
    """Values of the deprecated flags, read as they always were (a ratio, or a token count, 1 included)."""
    values: list[Keep] = []
    for flag, attr, cast in (("--keep-ratio", "keep_ratio", float), ("--keep-tokens", "keep_tokens", int)):
        raw = getattr(args, attr, None)
        if raw is None:
            continue
        deprecated(flag, "--keep (a ratio like 0.5 or a token budget like 640)")
        for part in split_list(raw):
            try:
                value = cast(part)
            except ValueError:
                kind = "ratio" if cast is float else "whole number"
                raise UserError(f"{flag}: expected a {kind}, got {part!r}") from None
            if cast is int and value == 1:
                values.append(1)  # the old flag said "tokens" explicitly: one token is what was asked for
            else:
                values.append(parse_keep(value, name=flag))
    return values


def keeps_from_args(args: argparse.Namespace) -> list[Keep]:
    """Every keep setting the command line asks for (the default when none), validated."""
    new = parse_keep_list(args.keep) if args.keep is not None else []
    old = _old_keep_values(args)
    if new and old:
        raise UserError("give --keep only (--keep-ratio / --keep-tokens are its deprecated spellings)")
    keeps = new or old or list(args.keep_default)
    if not args.keep_sweep and len(keeps) > 1:
        raise UserError(f"--keep takes one value here, got {len(keeps)}: {keeps}")
    return keeps


def keep_from_args(args: argparse.Namespace) -> Keep:
    """The single keep setting of a non-sweeping command."""
    return keeps_from_args(args)[0]


def add_method_argument(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """``--method`` (checked against the registry when the command runs, with a "did you mean")."""
    names = ", ".join(EXAMPLE_METHODS) + ", ... (gprune.available_methods())"
    if sweep:
        p.add_argument(
            "--method", nargs="+", default=None, metavar="METHOD",
            help=f"methods to compare, space- or comma-separated: {names} (default {DEFAULT_METHOD})",
        )  # fmt: skip
        p.add_argument("--methods", nargs="+", default=None, help=argparse.SUPPRESS)
    else:
        p.add_argument("--method", default=DEFAULT_METHOD, help=f"token selector: {names} (default %(default)s)")


def methods_from_args(args: argparse.Namespace, available: Sequence[str]) -> list[str]:
    """The methods of a sweeping command, checked against `available`."""
    if args.method is not None and args.methods is not None:
        raise UserError("give --method only (--methods is its deprecated spelling)")
    raw = args.method
    if raw is None and args.methods is not None:
        deprecated("--methods", "--method")
        raw = args.methods
    names = split_list(raw) if raw is not None else [DEFAULT_METHOD]
    if not names:
        raise UserError("--method: give at least one method")
    return [check_method(name, available) for name in names]


def add_graph_arguments(p: argparse.ArgumentParser) -> None:
    """G-Prune's graph parameters (the released code's defaults; `gprune.core`)."""
    p.add_argument(
        "--similarity-threshold", type=float, default=DEFAULT_SIMILARITY_THRESHOLD,
        help="cosine threshold s for graph edges (default %(default)s, the released code's; the paper's best: 0.7)",
    )  # fmt: skip
    p.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help="softmax temperature tau (default %(default)s)"
    )
    p.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help="propagation steps T (default %(default)s)"
    )


def add_positions_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--positions", choices=POSITION_MODES, default=DEFAULT_POSITIONS,
        help="RoPE positions of kept tokens: original (the released code's, default) or compact (renumbered)",
    )  # fmt: skip


MODEL_OPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("--device", "device", DEFAULT_DEVICE),
    ("--dtype", "dtype", "auto"),
    ("--attn-implementation", "attn_implementation", None),
    ("--trust-remote-code", "trust_remote_code", False),
)
"""(flag, argparse dest, default) of the options `add_model_arguments` defines: the keywords of
`gprune.cli_model.load_pretrained`."""


def add_model_arguments(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """How a checkpoint loads: the names transformers users know from ``from_pretrained``.

    Every command that loads a checkpoint (`run`, `demo`, `eval`, `visualize --model`) takes these; read
    them back with `model_options_from_args`.
    """
    defaults = {dest: default for _, dest, default in MODEL_OPTIONS}
    p.add_argument(
        "--device", default=defaults["device"],
        help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda, cuda:1, mps (default auto)",
    )  # fmt: skip
    p.add_argument(
        "--dtype", default=defaults["dtype"], choices=DTYPES,
        help="weights' dtype: auto = float16 on a GPU, float32 on cpu (default auto)",
    )  # fmt: skip
    p.add_argument(
        "--attn-implementation", default=defaults["attn_implementation"], metavar="NAME",
        help="attention kernel passed to from_pretrained: sdpa, eager, flash_attention_2, ... (default: transformers')",
    )  # fmt: skip
    p.add_argument(
        "--trust-remote-code", action="store_true", default=defaults["trust_remote_code"],
        help="run a checkpoint's own Python code (from_pretrained(trust_remote_code=True)); only for ones you trust",
    )  # fmt: skip
    if seed:
        add_seed_argument(p)


def model_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The loading options of `add_model_arguments` as keywords of `gprune.cli_model.load_pretrained`."""
    return {dest: getattr(args, dest) for _, dest, _ in MODEL_OPTIONS}


def model_options_given(args: argparse.Namespace) -> list[str]:
    """The loading flags set to something other than their default (for commands where they may not apply)."""
    return [flag for flag, dest, default in MODEL_OPTIONS if getattr(args, dest, default) != default]


def add_seed_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed for torch, numpy and Python's random, and for seeded methods such as random (default 0)",
    )  # fmt: skip


def add_video_window_argument(p: argparse.ArgumentParser) -> None:
    """``--video-window K``: how a ``--video``'s frames group into graphs (`gprune.video.video_layout`)."""
    p.add_argument(
        "--video-window", type=int, default=1, metavar="K",
        help="with --video: frames per graph as pruning groups them (default 1: each frame its own graph; 0: the "
        "whole video as one graph, scored in bounded memory when large); a ratio keeps that share of each graph, "
        "a token budget is per video",
    )  # fmt: skip


def parse_video(text: str) -> tuple[int, int, int]:
    """``FRAMESxHxW`` (frames that reach the video processor, frame height and width in pixels)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise UserError(f"--video: expected FRAMESxHxW such as 16x448x448 (frames, height, width), got {text!r}")
    if values[0] < 1:
        raise UserError(f"--video: a video needs at least one frame, got {values[0]} in {text!r}")
    if min(values[1:]) < 1:
        raise UserError(f"--video: frame height and width must be positive pixels, got {text!r}")
    return values[0], values[1], values[2]


def video_from_args(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """``--video`` as (frames, height, width), or None; ``--video-window`` without a video is refused."""
    if args.video is None:
        if args.video_window != 1:
            raise UserError("--video-window groups the frames of a --video: give --video FRAMESxHxW or leave it out")
        return None
    return parse_video(args.video)


def add_json_argument(p: argparse.ArgumentParser) -> None:
    """``--json [PATH]``: the same in every command (see `write_json`)."""
    p.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="PATH",
        help="machine-readable output: --json alone prints JSON to stdout instead of the text report; "
        "--json PATH prints the text report and writes the JSON to PATH",
    )


def json_to_stdout(args: argparse.Namespace) -> bool:
    """Whether stdout carries JSON only (then the text report is not printed)."""
    return getattr(args, "json", None) == "-"


def write_json(args: argparse.Namespace, data: Any) -> None:
    """Write `data` where ``--json`` asked: stdout (``--json`` / ``--json -``) or a file (``--json PATH``)."""
    target = getattr(args, "json", None)
    if target is None:
        return
    text = json.dumps(data, indent=2, default=str)
    if target == "-":
        print(text)
        return
    path = Path(target).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"--json: folder {path.parent} does not exist")
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)


def text_output(args: argparse.Namespace) -> TextIO:
    """Where the text report goes: stdout, or nowhere when stdout carries JSON (a pipe then parses cleanly)."""
    return io.StringIO() if json_to_stdout(args) else sys.stdout
