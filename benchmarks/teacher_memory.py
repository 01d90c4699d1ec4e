"""Peak RSS of an SDFT step against training the student alone (the teacher must cost no second copy).

    python benchmarks/teacher_memory.py            # both sides, each in a fresh interpreter

Side ``sdft``: rollout, teacher top-k (adapter disabled), (N, K) distillation, AdamW.
Side ``student``: the same rollout, then cross-entropy on its own tokens and AdamW — no teacher.
Each side runs 3 steps at batch 1 and 8 with 32 new tokens on the bundled model; VmHWM is read at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import peak_rss_mib


def run_side(side: str, batch: int, steps: int) -> dict[str, float]:
    from evsys.algorithms.sdft.algorithm import SDFT
    from evsys.algorithms.sdft.params import SDFTParams
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.schema.protocols import BackendSetup, Datum
    from evsys.schema.rows import PromptExample

    examples = [PromptExample(inputs={"question": f"What is the capital of country {i}?"}, expected="Paris") for i in range(batch)]
    backend = LocalBackend(BackendSetup(model_name="smollm2-135m-instruct", lora_rank=1, seed=0), LocalBackendParams())
    params = SDFTParams(learning_rate=1e-4, max_steps=steps, batch_size=batch, lora_rank=1, topk=20, user_template="{question}", max_new_tokens=32)
    algorithm = SDFT(params, backend, None)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if side == "sdft":
            algorithm.train_step(examples, step)
            continue
        prompts = [backend.render_chat([{"role": "user", "content": e.inputs["question"]}]) for e in examples]
        rollouts = backend.sample(prompts, n=1, max_tokens=32, temperature=1.0, seed=step)
        datums = []
        for prompt, (rollout,) in zip(prompts, rollouts, strict=True):
            tokens = prompt + rollout.tokens
            weights = [0.0] * (len(prompt) - 1) + [1.0] * len(rollout.tokens)
            datums.append(Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=weights))
        backend.forward_backward(datums, "cross_entropy")
        backend.optim_step(learning_rate=1e-4)
    return {"side": side, "batch": batch, "s_per_step": (time.perf_counter() - started) / steps, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=["sdft", "student", "both"], default="both")
    parser.add_argument("--batch", type=int, default=0, help="0: both 1 and 8")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.side != "both" and args.batch:
        print(json.dumps(run_side(args.side, args.batch, args.steps)))
        return
    for batch in [args.batch] if args.batch else [1, 8]:
        results = {}
        for side in ("student", "sdft"):
            out = subprocess.run(
                [sys.executable, __file__, "--side", side, "--batch", str(batch), "--steps", str(args.steps)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = results["sdft"]["peak_rss_mib"] / results["student"]["peak_rss_mib"]
        print(
            f"batch {batch}: SDFT {results['sdft']['peak_rss_mib']:.0f} MiB, {results['sdft']['s_per_step']:.2f} s/step; "
            f"student alone {results['student']['peak_rss_mib']:.0f} MiB, {results['student']['s_per_step']:.2f} s/step; "
            f"RSS ratio {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
