"""The SDFT-vs-SFT retention study: `python examples/retention_study/run_study.py`.

A miniature of Shenfeld et al. 2026 ("Self-Distillation Enables Continual Learning") on the bundled
SmolLM2-135M-Instruct: teach 20 made-up capitals with `sft` and with `sdft`, then measure

- new-fact accuracy: greedy answers to paraphrased questions about the made-up capitals
  (benchmark `new_facts`, scored in the run loop after training);
- retention: greedy answers about 20 real capitals, chosen among those the base model answers
  correctly (benchmark `retention`, scored the same way);
- the gold-answer log-probability for both: log p(" <answer>" | question, "The capital of X is"), the
  answer after a fixed answer prefix, so a change of answer format cannot pass for knowledge gained
  or kept. It moves before accuracy does.

Every arm is an ordinary EvSys config under `configs/` (run with `evsys run`, nothing special in the
loop). The driver only runs them, reads their `metrics.jsonl` / `predictions/`, and computes the
log-probabilities from the saved checkpoints (`checkpoints/step_000020`, ..., `checkpoints/final`)
with the study helper `gold_logprobs` below — study code, not part of EvSys: the verifiers score
generated text only.

    python examples/retention_study/run_study.py                 # the 4 main arms, 2 at a time; prints the table
    python examples/retention_study/run_study.py --arms all      # + the SDFT search arms
    python examples/retention_study/run_study.py --arms sft,sdft --jobs 1
    python examples/retention_study/run_study.py --no-train      # re-read finished runs, rebuild the table

The table (markdown) is printed and written to `examples/retention_study/outputs/results.md`
(per-arm details in `results.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = HERE / "configs"
OUTPUTS = HERE / "outputs"
BENCHMARKS = {"new_facts": HERE / "data" / "new_facts", "retention": HERE / "data" / "retention"}
#: Arms in table order: config file stem -> short description for the table.
ARMS: dict[str, str] = {
    "sft": "SFT, lr 5e-4",
    "sdft": "SDFT, lr 5e-4",
    "sft_sentence": "SFT on sentence answers, lr 5e-4",
    "sft_lowlr": "SFT, lr 1e-4",
    "sft_tuned": "SFT, lr 1e-3",
    "sdft_tuned": "SDFT, lr 1e-3, 4 rollouts, T 0.7, 16 tokens",
    "sdft_answer": "SDFT, lr 1e-3, 4 rollouts, T 0.7, 12 tokens, skip 6",
    "sdft_answer_2e3": "SDFT, lr 2e-3, 4 rollouts, T 0.7, 12 tokens, skip 6",
}
#: What one plain `run_study.py` runs: the matched pair and the two SFT controls (under 20 minutes on
#: 2 cores, two arms at a time). `--arms all` adds the SDFT search arms (about 25 minutes more).
DEFAULT_ARMS = ("sft", "sdft", "sft_sentence", "sft_lowlr")
SENTENCE_PREFIXES = ("the capital of", "the capital city of")


# --------------------------------------------------------------------------- measurement (study code)


def load_tasks(name: str) -> list[Any]:
    from evsys.verifiers.tasks import load_benchmark_dir

    return load_benchmark_dir(str(BENCHMARKS[name]))


def teacher_messages(task: Any) -> list[dict[str, str]]:
    """What the sdft teacher (template ``answer_hint``) is shown for this question: the answer, in context."""
    from evsys.algorithms.sdft.params import ANSWER_HINT_TEMPLATE

    text = ANSWER_HINT_TEMPLATE.format(prompt=task.instruction, expected=task.verifier.expected)
    return [{"role": "user", "content": text}]


def gold_logprobs(backend: Any, tasks: list[Any], *, teacher: bool = False) -> list[float]:
    """log p(" " + expected | chat prompt + answer_prefix) for each task, under the backend's current
    weights (adapter on), summed over the answer's tokens; with ``teacher``, the prompt is the sdft
    teacher's (the question plus "The correct answer is ..."). Study code: a plain forward pass."""
    import torch

    from evsys.verifiers.tasks import task_messages

    tokenizer = backend.tokenizer
    rows = []
    for task in tasks:
        messages = teacher_messages(task) if teacher else task_messages(task)
        prefix = list(backend.render_chat(messages, add_generation_prompt=True))
        prefix += tokenizer.encode(task.metadata["answer_prefix"], add_special_tokens=False)
        answer = tokenizer.encode(" " + str(task.verifier.expected), add_special_tokens=False)
        rows.append((prefix, answer))
    # One right-padded batch: attention is causal, so padding after a row cannot change its logits.
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), int(backend.pad_token_id), dtype=torch.long)
    for b, (prefix, answer) in enumerate(rows):
        ids[b, : len(prefix) + len(answer)] = torch.tensor(prefix + answer)
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(input_ids=ids.to(backend.device)).logits.float(), dim=-1)
    return [
        sum(float(logp[b, len(prefix) - 1 + j, tok]) for j, tok in enumerate(answer))
        for b, (prefix, answer) in enumerate(rows)
    ]


def greedy_eval(backend: Any, tasks: list[Any], max_new_tokens: int) -> list[dict[str, Any]]:
    """Greedy answers scored by the tasks' verifiers: what the run loop's benchmark does (batches of 16)."""
    from evsys.verifiers.scoring import score_tasks
    from evsys.verifiers.tasks import task_messages, task_prompt

    answers: list[list[str]] = []
    for start in range(0, len(tasks), 16):
        chunk = tasks[start : start + 16]
        groups = backend.sample(
            [backend.render_chat(task_messages(t)) for t in chunk], n=1, max_tokens=max_new_tokens, temperature=0.0
        )
        answers.extend([s.text for s in group] for group in groups)
    result = score_tasks(tasks, answers, ["pass@1"], step=0, prompts=[task_prompt(t) for t in tasks])
    return list(result.predictions)


def make_backend(config: dict[str, Any]) -> Any:
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.schema.protocols import BackendSetup

    params = config["algorithm"]["params"]
    setup = BackendSetup(model_name=config["model"]["name"], lora_rank=int(params.get("lora_rank", 8)), seed=0)
    return LocalBackend(setup, LocalBackendParams(**(config["backend"].get("params") or {})))


# --------------------------------------------------------------------------- arms


@dataclass
class ArmResult:
    name: str
    label: str
    accuracy: dict[str, float] = field(default_factory=dict)
    logprob: dict[str, float] = field(default_factory=dict)  # final mean gold logprob per benchmark
    logprob_curve: dict[str, dict[int, float]] = field(default_factory=dict)  # benchmark -> step -> mean
    lost: list[str] = field(default_factory=list)  # known capitals the base got right and this arm gets wrong
    teacher_logprob: float = float("nan")  # base only: new-fact gold logprob when shown the answer
    sentence_form: float = 0.0  # fraction of retention answers in "The capital of X is ..." form
    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    steps: int = 0


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def sentence_fraction(predictions: list[dict[str, Any]]) -> float:
    return mean([1.0 if str(p["answer"]).strip().lower().startswith(SENTENCE_PREFIXES) else 0.0 for p in predictions])


def measure_base(config: dict[str, Any]) -> tuple[ArmResult, dict[str, list[dict[str, Any]]]]:
    started = time.perf_counter()
    backend = make_backend(config)
    result = ArmResult("base", "base model (no training)")
    predictions: dict[str, list[dict[str, Any]]] = {}
    max_new = {b["name"]: int(b.get("max_new_tokens", 64)) for b in config["metadata"]["benchmark"]}
    try:
        for name in BENCHMARKS:
            tasks = load_tasks(name)
            predictions[name] = greedy_eval(backend, tasks, max_new[name])
            result.accuracy[name] = mean([1.0 if p["passed"] else 0.0 for p in predictions[name]])
            result.logprob[name] = mean(gold_logprobs(backend, tasks))
            result.logprob_curve[name] = {0: result.logprob[name]}
        result.teacher_logprob = mean(gold_logprobs(backend, load_tasks("new_facts"), teacher=True))
    finally:
        backend.close()
    result.sentence_form = sentence_fraction(predictions["retention"])
    result.measure_seconds = time.perf_counter() - started
    base_dir = OUTPUTS / "base" / "predictions"  # the base model's answers, beside the arms' own
    base_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in predictions.items():
        (base_dir / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return result, predictions


def train_arm(name: str) -> float:
    """Run one arm's config with `evsys run` in a child process; returns its wall time in seconds."""
    config_path = CONFIGS / f"{name}.yaml"
    run_dir = OUTPUTS / name
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (run_dir / "run.log").open("w") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "evsys.cli.main", "run", str(config_path.relative_to(REPO)), "--overwrite", "-q"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            check=False,
        )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"arm '{name}' failed (exit {completed.returncode}); see {run_dir / 'run.log'}")
    (run_dir / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def measure_arm(name: str, base_predictions: dict[str, list[dict[str, Any]]]) -> ArmResult:
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    run_dir = OUTPUTS / config["name"]
    result = ArmResult(name, ARMS.get(name, name), steps=int(config["algorithm"]["params"]["max_steps"]))
    if not (run_dir / "metrics.jsonl").is_file():
        raise SystemExit(f"arm '{name}' has not run yet ({run_dir} holds no metrics.jsonl); drop --no-train")
    seconds_file = run_dir / "train_seconds.txt"
    result.train_seconds = float(seconds_file.read_text()) if seconds_file.exists() else float("nan")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        for bench in BENCHMARKS:
            key = f"test/{bench}/pass@1"
            if key in row["metrics"]:
                result.accuracy[bench] = float(row["metrics"][key])
    predictions = {
        bench: [json.loads(line) for line in (run_dir / "predictions" / f"{bench}.jsonl").read_text().splitlines()]
        for bench in BENCHMARKS
    }
    base_ok = {p["task_id"] for p in base_predictions["retention"] if p["passed"]}
    result.lost = sorted(
        (str(p["expected"]) for p in predictions["retention"] if p["task_id"] in base_ok and not p["passed"]),
    )
    result.sentence_form = sentence_fraction(predictions["retention"])

    started = time.perf_counter()
    backend = make_backend(config)
    try:
        checkpoints = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
        checkpoints.append(run_dir / "checkpoints" / "final")
        tasks = {bench: load_tasks(bench) for bench in BENCHMARKS}
        for checkpoint in checkpoints:
            backend.load_checkpoint(str(checkpoint))
            step = result.steps if checkpoint.name == "final" else int(checkpoint.name.removeprefix("step_"))
            for bench, bench_tasks in tasks.items():
                result.logprob_curve.setdefault(bench, {})[step] = mean(gold_logprobs(backend, bench_tasks))
        result.logprob = {bench: curve[result.steps] for bench, curve in result.logprob_curve.items()}
    finally:
        backend.close()
    result.measure_seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- table


def table(results: list[ArmResult]) -> str:
    lines = [
        "| arm (60 steps each) | new facts acc | new facts gold logprob (steps 0 → 20 → 40 → 60) | retention acc | retention gold logprob | known capitals lost | sentence-form answers | forgetting per nat learned | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    known = round(results[0].accuracy["retention"] * len(load_tasks("retention")))  # base-correct known capitals
    for r in results:
        curve = r.logprob_curve.get("new_facts", {})
        trace = (
            " → ".join(f"{curve[s]:.1f}" for s in sorted(curve)) if len(curve) > 1 else f"{r.logprob['new_facts']:.1f}"
        )
        lost = f"{len(r.lost)} of {known}" + (f" ({', '.join(r.lost)})" if 0 < len(r.lost) <= 5 else "")
        train = "—" if r.name == "base" else f"{r.train_seconds / 60:.1f} min"
        learned = r.logprob["new_facts"] - results[0].logprob["new_facts"]
        forgot = results[0].logprob["retention"] - r.logprob["retention"]
        ratio = f"{forgot / learned:.2f}" if r.name != "base" and learned > 0 else "—"
        lines.append(
            f"| {r.label} | {r.accuracy['new_facts']:.2f} | {trace} | {r.accuracy['retention']:.2f} | "
            f"{r.logprob['retention']:.2f} | {lost if r.name != 'base' else '—'} | {r.sentence_form:.2f} | {ratio} | {train} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help=f"comma-separated config names, or 'all' (default: {','.join(DEFAULT_ARMS)}; all: {','.join(ARMS)})",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="arms trained at once (each uses one CPU thread); default 2"
    )
    parser.add_argument("--no-train", action="store_true", help="only re-measure finished runs and rebuild the table")
    parser.add_argument("--out", default=str(OUTPUTS / "results.md"), help="where to write the markdown table")
    args = parser.parse_args(argv)
    arms = list(ARMS) if args.arms.strip() == "all" else [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in arms:
        if not (CONFIGS / f"{arm}.yaml").is_file():
            parser.error(f"no config {CONFIGS / arm}.yaml")
    os.chdir(REPO)
    started = time.perf_counter()

    first = yaml.safe_load((CONFIGS / f"{arms[0]}.yaml").read_text())
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {} if args.no_train else {arm: pool.submit(train_arm, arm) for arm in arms}
        base, base_predictions = measure_base(first)  # in this process, while the arms train
        print(f"base measured in {base.measure_seconds:.0f} s", file=sys.stderr, flush=True)
        for arm, future in futures.items():
            print(f"{arm}: trained in {future.result():.0f} s", file=sys.stderr, flush=True)
    results = [base] + [measure_arm(arm, base_predictions) for arm in arms]
    for result in results[1:]:  # every curve starts at the base model (step 0)
        for bench, value in base.logprob.items():
            result.logprob_curve.setdefault(bench, {})[0] = value
    total = time.perf_counter() - started

    text = table(results)
    footer = (
        f"\nWhole study: {total / 60:.1f} min wall time "
        f"({'measuring only' if args.no_train else f'{len(arms)} arms, {args.jobs} at a time'}); "
        'gold logprob = mean over tasks of log p(answer | question, "The capital of X is"), '
        "new facts at steps 0 → 20 → 40 → ... → final; forgetting per nat learned = retention gold logprob lost "
        "/ new-facts gold logprob gained. "
        f"The sdft teacher (the base model shown the answer) gives the new facts {base.teacher_logprob:.1f}.\n"
    )
    print(text + "\n" + footer)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n" + footer)
    details = [r.__dict__ for r in results]
    out.with_suffix(".json").write_text(json.dumps({"total_seconds": total, "arms": details}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
