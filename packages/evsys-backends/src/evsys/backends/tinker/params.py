"""Params of the ``tinker`` backend (``backend.params`` in a run config). Imports no SDK."""

from __future__ import annotations

from pydantic import Field, field_validator

from evsys.backends.tinker.renderers import HF_TEMPLATE, TML_RENDERERS, unknown_renderer_message
from evsys.schema.config import StrictModel


class TinkerBackendParams(StrictModel):
    """How EvSys talks to the Tinker service. The API key is never a param: it comes from the environment."""

    base_url: str | None = Field(
        default=None,
        description="Tinker API URL; null: the SDK's default (TINKER_BASE_URL, then the production service).",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a request that failed with a transient error (connection, timeout, 408/409/429/5xx).",
    )
    retry_backoff_s: float = Field(
        default=2.0, ge=0, description="Wait before the first retry, in seconds; doubles on each further retry."
    )
    retry_backoff_max_s: float = Field(default=60.0, ge=0, description="Longest wait between two retries, in seconds.")
    retry_total_s: float = Field(
        default=600.0,
        gt=0,
        description="Bound on the time one request may spend retrying, in seconds; past it the error is raised.",
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Wait at most this long for one result, in seconds (then it counts as a transient error); "
        "null: wait as long as the SDK does.",
    )
    teacher_concurrency: int = Field(
        default=1024,
        ge=1,
        description="Teacher (top-k logprob) and sampling requests in flight at once (the default covers a "
        "batch of 32 prompts x 4 rollouts and more, so a step keeps the service busy).",
    )
    teacher_suffix_only: bool = Field(
        default=False,
        description="Ask the service to score only the positions from from_position on (prompt_logprobs_last_n), "
        "letting it serve the prefix from its cache; off: score the whole sequence, as the SDFT recipe does.",
    )
    pipeline_optim_step: bool = Field(
        default=True,
        description="Submit optim_step before waiting for the forward_backward result (the loss resolves lazily), "
        "so the two requests reach the service back to back.",
    )
    max_steps_off_policy: int = Field(
        default=0,
        ge=0,
        le=1,
        description="1: sample step t+1 while step t trains (one step off policy, as tinker-cookbook's async "
        "option; train/off_policy_steps records the staleness of each step's samples); 0: every step samples "
        "the weights the previous step produced.",
    )
    checkpoint_ttl_s: int | None = Field(
        default=None,
        ge=3600,
        description="Time to live of saved checkpoints on the service, in seconds; null: they never expire.",
    )
    record_requests: str | None = Field(
        default=None,
        description="Write every request's shape and every response's fields (no token ids or texts) to this "
        "JSONL file (relative paths: from the working directory); scripts/record_tinker_session.py uses it and "
        "evsys.backends.tinker.recording.replay checks a record against the service's rules. null: no record.",
    )
    renderer: str | None = Field(
        default=None,
        description="How chats become tokens: a tinker-cookbook renderer name that tml-renderers provides "
        "(qwen3_5_disable_thinking, qwen3_5, qwen3, qwen3_disable_thinking, qwen3_instruct, ...; naming one that "
        f"thinks turns thinking on) or '{HF_TEMPLATE}' (the model's Hugging Face chat template); null: the "
        "model's cookbook renderer with thinking off, or the Hugging Face template for models tml-renderers "
        "does not cover.",
    )
    display_name: str | None = Field(
        default=None, description="Name shown for the session in the Tinker console; null: the run's model name."
    )

    @field_validator("renderer")
    @classmethod
    def _known_renderer(cls, value: str | None) -> str | None:
        if value is not None and value != HF_TEMPLATE and value not in TML_RENDERERS:
            raise ValueError(unknown_renderer_message(value))
        return value
