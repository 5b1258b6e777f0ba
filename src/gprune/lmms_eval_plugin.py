"""Deprecated location of the lmms-eval plugin: it lives in `gprune.integrations.lmms_eval` now.

Kept for one release so existing imports keep working; the `lmms_eval.models` entry point already
points at the new module.
"""

import warnings

from gprune.integrations.lmms_eval import *  # noqa: F403
from gprune.integrations.lmms_eval import GPruneLMM, manifest  # noqa: F401

warnings.warn(
    "gprune.lmms_eval_plugin moved to gprune.integrations.lmms_eval; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
