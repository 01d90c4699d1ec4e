"""``--dry-run`` on the tinker backend: the simulated service for a run, and its summary file ``dry_run.md``."""

from __future__ import annotations

import logging

from evsys.backends.tinker.models import model_limits
from evsys.backends.tinker.offline_tokenizer import offline_tokenizer
from evsys.backends.tinker.service_rules import check_model
from evsys.backends.tinker.simulator import SimulatedService
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import BackendSetup

logger = logging.getLogger("evsys.backends.tinker")

DRY_RUN_FILE = "dry_run.md"


def simulated_service(setup: BackendSetup) -> SimulatedService:
    """The simulated service for ``setup``'s model, with its offline tokenizer; one line when there is none."""
    check_model(setup.model_name, model_limits(setup.model_name))
    tokenizer = offline_tokenizer(setup.model_name)
    if tokenizer is None:
        raise EvsysError(
            f"--dry-run: no offline tokenizer for '{setup.model_name}' (tml-renderers renders the Qwen3 and "
            "Qwen3.5 families here; pip install 'evsys-backends[tinker]' installs it)"
        )
    return SimulatedService(tokenizer=tokenizer, seed=setup.seed)


def summary_text(service: SimulatedService, setup: BackendSetup, *, failed: bool = False) -> str:
    """The dry run's summary as Markdown: what was asked of the simulated service."""
    lines = [
        "# Dry run on the simulated Tinker service",
        "",
        f"model: {setup.model_name} (LoRA rank {setup.lora_rank}); every request was checked against the service's rules"
        + (" until the run failed" if failed else ""),
        "",
        *(f"- {line}" for line in service.tally.summary_lines()),
        *([f"- files: {setup.run_dir}"] if setup.run_dir is not None else []),
        "",
        "No request reached the real service; metrics and predictions come from a seeded pseudo-model.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(service: SimulatedService, setup: BackendSetup, *, failed: bool = False) -> None:
    """Write ``dry_run.md`` to the run directory (and log its facts)."""
    text = summary_text(service, setup, failed=failed)
    for line in service.tally.summary_lines():
        logger.info("dry run: %s", line)
    if setup.run_dir is not None:
        setup.run_dir.mkdir(parents=True, exist_ok=True)
        (setup.run_dir / DRY_RUN_FILE).write_text(text, encoding="utf-8")
