"""Deprecation warnings that the ML stack raises about itself, silenced where we load it."""

from __future__ import annotations

import warnings


def quiet_upstream_deprecations() -> None:
    """TRL and PEFT still call transformers' `is_gradient_checkpointing` (deprecated in
    transformers 5): a FutureWarning in every training run and adapter load that is theirs
    to change, and that buries a demo's progress lines."""
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
    )
