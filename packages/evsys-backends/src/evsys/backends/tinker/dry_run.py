"""``--dry-run`` on the tinker backend: the simulated service for a run, and its summary file ``dry_run.md``."""

from __future__ import annotations

import logging
from typing import Any

from evsys.backends.tinker.catalog import model_limits
from evsys.backends.tinker.service_rules import check_model
from evsys.backends.tinker.simulator import SimulatedService
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import BackendSetup

logger = logging.getLogger("evsys.backends.tinker")

DRY_RUN_FILE = "dry_run.md"


def simulated_service(setup: BackendSetup, renderer: Any) -> SimulatedService:
    """The simulated service for ``setup``'s model (limits from the model catalog), whose tokenizer and
    stop token are those of the run's ``tml-renderers`` renderer (a
    :class:`~evsys.backends.tinker.renderers.RendererChat`); one line when the run renders with the
    Hugging Face template (``renderer`` None), whose tokenizer only the hub has."""
    check_model(setup.model_name, model_limits(setup.model_name))
    if renderer is None:
        raise EvsysError(
            f"--dry-run renders offline with tml-renderers, and '{setup.model_name}' uses its Hugging Face chat "
            "template (backend.params.renderer, or a model tml-renderers does not cover), which needs the hub"
        )
    return SimulatedService(tokenizer=renderer.tokenizer, seed=setup.seed)


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
