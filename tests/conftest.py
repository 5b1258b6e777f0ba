import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run 10-40x faster on one thread than on two busy cores; the setting is restored afterwards.

    Modules of many tiny-model calls use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo() -> dict[str, Any]:
    """Tiny models built on first use and kept for the module (a family's cases run one after another)."""
    return {}
