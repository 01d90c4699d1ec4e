"""`evsys run` / `eval` / `validate` frictions, on real runs of a tiny random Llama (local backend):
--set overrides, error order, the run-directory lock, the last step's benchmark, --overwrite, phase lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_workdir: Callable[[Path], Path]) -> Path:
    """A directory with a tiny model and the walkthrough's data (each test runs in it)."""
    return tiny_workdir(tmp_path_factory.mktemp("frictions"))


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------- overrides


def test_set_round_trips_through_resolved_config(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "base_name", max_steps=5)
    code, out, err = evsys_cli(
        ["run", str(config), "-q", "--set", "algorithm.params.max_steps=1", "--set", "metadata.benchmark[0].limit=1",
         "--set", "algorithm.params.user_template=Q: {question}", "--name", "2024", "--output-dir", "elsewhere"],
    )
    assert code == 0, err
    run_dir = Path("elsewhere/2024")
    assert out.splitlines()[2] == "Logs:      elsewhere (metrics.jsonl, predictions/, summary.md)"
    snapshot = json.loads((run_dir / "resolved_config.json").read_text())
    assert snapshot["overrides"] == [
        "algorithm.params.max_steps=1", "metadata.benchmark[0].limit=1", "algorithm.params.user_template=Q: {question}",
        "name=2024", "output_dir=elsewhere",
    ]
    resolved = snapshot["config"]
    assert resolved["name"] == "2024" and resolved["output_dir"] == "elsewhere"  # typed by the schema: a string
    assert resolved["algorithm"]["params"]["max_steps"] == 1  # an integer, not "1"
    assert resolved["algorithm"]["params"]["user_template"] == "Q: {question}"
    assert resolved["metadata"]["benchmark"][0]["limit"] == 1
    assert [(r["step"], r["split"]) for r in rows(run_dir)] == [(1, "train"), (1, "val")]
    assert not Path("outputs/base_name").exists()
    # the snapshot's overrides, given again, validate to the same config
    args = [item for text in snapshot["overrides"] for item in ("--set", text)]
    code, out, err = evsys_cli(["validate", str(config), *args])
    assert code == 0 and out.startswith(f"OK: {config} (algorithm sdft, backend local, 1 step"), err


def test_a_bad_override_points_at_its_argument(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "bad_set")
    code, out, err = evsys_cli(["run", str(config), "--set", "algorithm.params.max_stpes=10"])
    assert (code, out) == (1, "")
    assert err == "--set algorithm.params.max_stpes=10: unknown key 'max_stpes' (did you mean 'max_steps'?)\n"
    code, _, err = evsys_cli(["validate", str(config), "--set", "algorithm.params.max_steps=many", "--set", "metadata.benchmark[4].limit=1"])
    assert code == 1
    assert err.splitlines() == [
        "--set metadata.benchmark[4].limit=1: metadata.benchmark has 1 item; [4] is not one of them",
        f"FAILED: {config} (1 error)",
    ]
    code, _, err = evsys_cli(["validate", str(config), "--set", "algorithm.params.max_steps=many"])
    assert err.splitlines()[0] == '--set algorithm.params.max_steps=many: Input should be a valid integer, got string "many"'
    code, _, err = evsys_cli(["eval", str(config), "--set", "max_steps"])
    assert (code, err) == (1, "--set max_steps: expected KEY=VALUE, e.g. --set algorithm.params.max_steps=10\n")
    assert not Path("outputs/bad_set").exists()


# ------------------------------------------------------------------------------------ error order


def test_config_and_data_errors_come_before_the_run_directory(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "order")
    Path("outputs/order").mkdir(parents=True, exist_ok=True)
    Path("outputs/order/metrics.jsonl").write_text("")  # an earlier run
    code, _, err = evsys_cli(["run", str(config), "--set", "algorithm.params.topk=0"])
    assert code == 1 and err.startswith("--set algorithm.params.topk=0: ") and "already exists" not in err
    bad = Path("data/bad.jsonl")
    bad.write_text('{"inputs": {"question": "Q?"}, "expected": "A"}\n{"inputs": 3}\n')
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, _, err = evsys_cli(["run", str(config), "--set", "data.path=data/bad.jsonl", *extra])
        assert code == 1
        assert err.splitlines()[0] == "data/bad.jsonl:2: inputs: Input should be a valid object, got integer 3", extra
        assert "already exists" not in err
    code, _, err = evsys_cli(["run", str(config), "-q"])
    assert code == 1 and err == (
        "outputs/order: run directory already exists; pass --resume to continue it, --overwrite to replace it, or change 'name'\n"
    )
    assert Path("outputs/order/metrics.jsonl").read_text() == ""


# ------------------------------------------------------------------------------- run-directory lock


@pytest.fixture
def finished_run(in_workdir: Path, tiny_config: Callable[..., Path]) -> Iterator[Path]:
    """A completed 2-step run, its config path."""
    from evsys.cli import run

    config = tiny_config(in_workdir, "locked")
    result = run(config, overwrite=True)
    assert result.status == "completed"
    yield config


def hold_lock(directory: Path) -> subprocess.Popen[str]:
    """Another live process holding ``directory``'s lock (as a running `evsys run` does)."""
    code = (
        "import sys, time; from pathlib import Path; from evsys.engine.rundir import DirectoryLock\n"
        f"DirectoryLock(Path({str(directory)!r})).acquire(); print('locked', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_a_directory_in_use_is_refused_naming_the_pid_and_a_dead_holder_blocks_nothing(
    finished_run: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    run_dir = Path("outputs/locked")
    before = (run_dir / "metrics.jsonl").read_text()
    holder = hold_lock(run_dir)
    try:
        expected = f"outputs/locked: in use by another evsys process (pid {holder.pid}); wait for it to end or stop it, or change 'name'\n"
        for args in (["run", str(finished_run)], ["run", str(finished_run), "--resume"], ["run", str(finished_run), "--overwrite"]):
            code, _, err = evsys_cli([*args, "-q"])
            assert (code, err) == (1, expected), args
        code, _, err = evsys_cli(["eval", str(finished_run), "-q"])  # into outputs/locked/eval/base
        assert (code, err) == (1, expected)
        assert not (run_dir / "eval").exists()
        assert (run_dir / "metrics.jsonl").read_text() == before
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.wait()
    code, _, err = evsys_cli(["run", str(finished_run), "--resume", "-q"])
    assert code == 1 and "this run already completed all 2 steps; nothing to resume" in err
    code, _, err = evsys_cli(["eval", str(finished_run), "-q"])
    assert code == 0, err
    assert (run_dir / ".evsys.lock").read_text() == ""  # released: no pid left behind


def test_two_runs_started_together_one_is_refused(in_workdir: Path, tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "twice", max_steps=2)
    env = {**os.environ, "EVSYS_PROGRESS": "off"}
    command = [sys.executable, "-m", "evsys.cli.main", "run", str(config), "-q"]
    first = subprocess.Popen(command, cwd=in_workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, cwd=in_workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = sorted([(p.wait(timeout=600), p.stderr.read(), p.pid) for p in (first, second)])  # type: ignore[union-attr]
    (ok, ok_err, _), (refused, refused_err, _) = outcomes
    assert ok == 0, ok_err
    assert refused == 1
    assert refused_err.startswith("outputs/twice: ")
    assert "in use by another evsys process (pid " in refused_err or "run directory already exists" in refused_err
    assert [(r["step"], r["split"]) for r in rows(in_workdir / "outputs/twice")] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]


# -------------------------------------------------------------- the last step's benchmark, summary steps


def test_in_loop_benchmark_also_scores_the_last_step_and_summary_names_steps(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "every2", max_steps=3, run_every=2)
    code, _, err = evsys_cli(["run", str(config), "--overwrite", "-q"])
    assert code == 0, err
    run_dir = Path("outputs/every2")
    assert [(r["step"], r["split"]) for r in rows(run_dir)] == [(1, "train"), (2, "train"), (2, "val"), (3, "train"), (3, "val")]
    summary = (run_dir / "summary.md").read_text()
    final = summary.split("## Final metrics\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.rsplit(" ", 2)[-2:] for line in final] == [["(step", "3)"], ["(step", "3)"]]
    assert final[0].startswith("- train/mean_loss: ") and final[1].startswith("- val/val/pass@1: ")
    # max_steps a multiple of run_every: no second evaluation of the last step
    config = tiny_config(in_workdir, "every2", max_steps=2, run_every=2)
    code, _, err = evsys_cli(["run", str(config), "--overwrite", "-q"])
    assert code == 0, err
    assert [(r["step"], r["split"]) for r in rows(run_dir)] == [(1, "train"), (2, "train"), (2, "val")]


# ------------------------------------------------------------------------------------- --overwrite


def test_overwrite_clears_what_evsys_wrote_and_nothing_else(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "cleared", max_steps=1)
    assert evsys_cli(["run", str(config), "--overwrite", "-q"])[0] == 0
    run_dir = Path("outputs/cleared")
    assert evsys_cli(["eval", str(config), "-q"])[0] == 0
    assert evsys_cli(["report", str(run_dir)])[0] == 0
    assert (run_dir / "report.md").is_file() and any((run_dir / "plots").iterdir()) and (run_dir / "eval" / "base").is_dir()
    (run_dir / "notes.txt").write_text("mine")
    for store in ("tensorboard", "wandb", "mlartifacts"):  # the trackers' default stores
        (run_dir / store).mkdir()
        (run_dir / store / "events").write_text("old run")
    (run_dir / "mlflow.db").write_text("old run")
    code, _, err = evsys_cli(["run", str(config), "--overwrite", "-q"])
    assert code == 0, err
    left = sorted(p.name for p in run_dir.iterdir())
    assert left == [".evsys.lock", "checkpoints", "metrics.jsonl", "notes.txt", "predictions", "resolved_config.json", "summary.md"]
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_an_evaluation_of_the_base_model_does_not_make_the_run_directory_used(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]], tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(in_workdir, "base_first", max_steps=1)
    assert evsys_cli(["eval", str(config), "-q"])[0] == 0
    code, _, err = evsys_cli(["run", str(config), "-q"])
    assert code == 0, err
    assert (Path("outputs/base_first/eval/base/metrics.jsonl")).is_file()


# ------------------------------------------------------------------------------------ phase lines


def test_a_run_says_what_it_does_before_step_one(
    in_workdir: Path,
    evsys_cli: Callable[[list[str]], tuple[int, str, str]],
    caplog: pytest.LogCaptureFixture,
    tiny_config: Callable[..., Path],
) -> None:
    import logging

    config = tiny_config(in_workdir, "talks", max_steps=1)
    with caplog.at_level(logging.INFO, logger="evsys.engine.loop"):
        code, _, err = evsys_cli(["--log-level", "info", "run", str(config), "--overwrite"])
    evsys_cli(["--log-level", "warning", "plugins", "--json"])
    assert code == 0, err
    lines = err.splitlines()
    shown = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    model_dir = (in_workdir / "tiny").resolve()
    # the backend's auto settings depend on this machine's CPU: the line names them, resolved_config.json records them
    backend_line = shown.pop(4)
    resolved = json.loads(Path("outputs/talks/resolved_config.json").read_text())["backend_resolved"]
    weights, checkpointing = resolved["rollout_weights"], resolved["gradient_checkpointing"]
    assert weights["requested"] == checkpointing["requested"] == "auto"
    value = str(checkpointing["value"]).lower() if isinstance(checkpointing["value"], bool) else checkpointing["value"]
    assert backend_line == (
        f"backend: rollout_weights {weights['value']} (auto: {weights['reason']}); "
        f"gradient_checkpointing {value} (auto: {checkpointing['reason']})"
    )
    assert shown[:6] == [
        "data: 40 training examples from data/train.jsonl",
        "benchmarks: val (2 tasks, every 1 step)",
        "model: loading tiny on the local backend ...",
        f"model: tiny from {model_dir} (0 MB of weights)",
        "training: steps 1-1 of 1 ...",
        "step 1: first rollout, 1 prompt x 1 sample, up to 4 new tokens each ...",
    ]
    durations = [r.getMessage() for r in caplog.records if r.name == "evsys.engine.loop"]  # --log-level info shows them
    assert [message.split(" took ")[0] for message in durations] == ["data", "benchmarks", "model"]
    assert all(message.endswith(" s") for message in durations)
    step = next(line for line in lines if line.startswith("step 1/1 | "))
    assert " tok/s | " in step
    metrics = rows(Path("outputs/talks"))[0]["metrics"]
    assert metrics["train/sampled_tokens_per_s"] > 0


def test_elapsed_counts_from_the_start_and_the_eta_from_measured_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from evsys.logging import console
    from evsys.schema.protocols import RunContext

    clock = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    progress = console.ConsoleProgress(stream=stream, mode="lines", started=40.0)  # the process started 60 s ago
    progress.on_phase("model: loading tiny ...")
    clock[0] = 130.0  # 30 s of model loading
    progress.on_run_start(RunContext("demo", Path("run"), Path("."), None, 10))
    clock[0] = 150.0  # two steps of 10 s
    progress.on_step_end(1, {"train/mean_loss": 1.0, "train/step_seconds": 10.0})
    progress.on_step_end(2, {"train/mean_loss": 0.5, "train/sampled_tokens_per_s": 25.0, "train/answer_tokens": 900.0, "train/step_seconds": 10.0})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[01:00] model: loading tiny ..."
    assert lines[1] == "step 1/10 | loss 1.0000 | 01:50 elapsed, ETA 03:00"  # no sampling, no tok/s; 9 steps of 20 s
    assert lines[2] == "step 2/10 | loss 0.5000 | 25 tok/s | 01:50 elapsed, ETA 01:20"  # 8 steps of 10 s
