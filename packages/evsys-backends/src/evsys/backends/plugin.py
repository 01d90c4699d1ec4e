"""Registers the built-in backends. Imports no torch: targets load only when a run needs them."""

from __future__ import annotations

from evsys.backends.local.params import LocalBackendParams
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``local`` (torch + transformers + peft) and ``tinker`` (the remote service)."""
    register.backend(
        "local",
        "evsys.backends.local.backend:LocalBackend",
        params=LocalBackendParams,
        requires=("torch", "transformers", "peft"),
        install_hint="pip install evsys-backends (with torch==2.13.0 installed first for the CPU build)",
        checker="evsys.backends.local.resolve:check_model_name",
        description="torch + transformers + peft on this machine (CPU, or CUDA when present).",
    )
    register.backend(
        "tinker",
        "evsys.backends.tinker.backend:TinkerBackend",
        params=TinkerBackendParams,
        requires=("tinker",),
        install_hint="pip install 'evsys-backends[tinker]'",
        checker="evsys.backends.tinker.checks:check_model_name",
        prompt_checker="evsys.backends.tinker.checks:check_prompt_lengths",
        description="The remote Tinker training service (needs TINKER_API_KEY).",
    )
