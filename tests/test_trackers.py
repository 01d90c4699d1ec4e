"""The tracker callbacks on a real (tiny) run, each read back with the tracker's own reader.

One 2-step SDFT run with ``tensorboard``, ``wandb`` (offline) and ``mlflow`` (sqlite under the run
directory) next to ``local_logger``; then every metric of ``metrics.jsonl`` must be in TensorBoard's
event files (``EventAccumulator``), in the W&B transaction log (``wandb leet inspect --json``, W&B's
own .wandb reader) and in the MLflow store (``MlflowClient``), at its step, with the same value; each
also holds the resolved config and the final summary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from evsys.cli.main import main
from evsys.logging.tracker import flatten

TRACKERS = ("tensorboard", "wandb", "mlflow")


def expected_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of metrics.jsonl (nulls left out, as the trackers leave them out)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row["metrics"].items():
            if value is not None:
                series.setdefault(key, []).append((row["step"], float(value)))
    return series


def json_block(markdown: str) -> Any:
    """The JSON inside the ```json fence of a text the TensorBoard tracker wrote."""
    return json.loads(markdown.split("```json\n", 1)[1].rsplit("\n```", 1)[0])


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> Path:
    """A finished 2-step run with every tracker on; returns its run directory."""
    directory = tmp_path_factory.mktemp("trackers")
    config = tiny_run(
        directory,
        tiny_model_dir,
        params={"max_steps": 2, "save_every": 1},
        benchmark={"run_every": 1},
        extra={
            "metadata": {"tags": ["tiny"]},
            "callbacks": [
                {"kind": "local_logger"},
                {"kind": "tensorboard"},
                {"kind": "wandb", "params": {"project": "evsys-tests"}},
                {"kind": "mlflow", "params": {"experiment_name": "tiny-sdft"}},
            ],
        },
    )
    for variable in ("WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI"):
        os.environ.pop(variable, None)
    assert main(["run", str(config)]) == 0
    return directory / "outputs" / "tiny"


@pytest.fixture(scope="module")
def resolved(tracked_run: Path) -> dict[str, Any]:
    return json.loads((tracked_run / "resolved_config.json").read_text())["config"]


def test_every_tracker_writes_under_the_run_directory(tracked_run: Path) -> None:
    assert list((tracked_run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tracked_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (tracked_run / "mlflow.db").is_file() and (tracked_run / "mlartifacts").is_dir()
    assert not Path("mlruns").exists() and not Path("mlartifacts").exists() and not Path("wandb").exists()


# --------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files_match_metrics_jsonl(tracked_run: Path, resolved: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={SCALARS: 0, TENSORS: 0})
    events.Reload()
    expected = expected_series(tracked_run)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in points], tag
        for (_, got), (_, want) in zip(logged, points, strict=True):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6), tag  # TensorBoard scalars are float32

    def text(tag: str) -> str:
        (event,) = events.Tensors(tag)
        return tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8")

    assert json_block(text("config")) == resolved
    summary = json_block(text("summary"))
    assert summary["status"] == "completed" and summary["steps"] == 2 and summary["max_steps"] == 2
    assert summary["final_metrics"]["train/mean_loss"] == pytest.approx(expected["train/mean_loss"][-1][1])


# --------------------------------------------------------------------------------------- W&B


def wandb_records(run_dir: Path, log: Path | None = None) -> list[dict[str, Any]]:
    """The offline run's records (or ``log``'s), decoded by W&B's own .wandb reader (``wandb leet inspect --json``)."""
    if log is None:
        (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    executable = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    done = subprocess.run([executable, "leet", "inspect", "--json", str(log)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_matches_metrics_jsonl(tracked_run: Path, resolved: dict[str, Any]) -> None:
    records = wandb_records(tracked_run)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["project"] == "evsys-tests" and run["display_name"] == "tiny" and run["tags"] == ["tiny"]
    config = {key: value for key, value in run["config"]["update"].items() if key != "_wandb"}
    assert config == resolved

    logged: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record["type"] == "history":
            item = record["history"]["item"]
            for key, value in item.items():
                if not key.startswith("_"):
                    logged.setdefault(key, []).append((int(item["_step"]), float(value)))
    assert logged == expected_series(tracked_run)

    summary: dict[str, Any] = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["train/mean_loss"] == expected_series(tracked_run)["train/mean_loss"][-1][1]
    assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [0]


# --------------------------------------------------------------------------------------- MLflow


def test_mlflow_run_matches_metrics_jsonl(tracked_run: Path, resolved: dict[str, Any], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from evsys.logging.mlflow_tracker import mlflow_name

    client = MlflowClient(tracking_uri=f"sqlite:///{(tracked_run / 'mlflow.db').as_posix()}")
    experiment = client.get_experiment_by_name("tiny-sdft")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.tags["evsys.status"] == "completed"

    expected = expected_series(tracked_run)
    assert set(run.data.metrics) == {mlflow_name(key) for key in expected}
    for key, points in expected.items():
        history = sorted(client.get_metric_history(run.info.run_id, mlflow_name(key)), key=lambda m: (m.step, m.timestamp))
        assert [(metric.step, metric.value) for metric in history] == points, key

    flat = {mlflow_name(key): value for key, value in flatten(resolved).items()}
    assert set(run.data.params) == set(flat)
    assert run.data.params["algorithm.params.learning_rate"] == json.dumps(resolved["algorithm"]["params"]["learning_rate"])
    assert run.data.params["name"] == "tiny"

    config = json.loads(Path(client.download_artifacts(run.info.run_id, "resolved_config.json", str(tmp_path))).read_text())
    assert config == resolved
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["final_metrics"]["train/mean_loss"] == expected["train/mean_loss"][-1][1]


def test_mlflow_names_keep_metric_names_apart() -> None:
    from evsys.logging.mlflow_tracker import mlflow_name

    assert mlflow_name("val/gsm8k/pass@1") == "val/gsm8k/pass_at_1"
    assert mlflow_name("val/gsm8k/pass^4") == "val/gsm8k/pass_hat_4"
    assert mlflow_name("train/mean_loss") == "train/mean_loss"
    assert mlflow_name("odd{key}") == "odd_key_"


# --------------------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_missing_tracker_package_is_one_line_in_validate_deep_and_run(
    tracker: str, tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import evsys.schema.registry as registry_module

    installed = registry_module.module_installed
    monkeypatch.setattr(registry_module, "module_installed", lambda module: module != tracker and installed(module))
    config = tiny_run(tmp_path, tiny_model_dir, params={"max_steps": 1}, extra={"callbacks": [{"kind": "local_logger"}, {"kind": tracker}]})
    line = config.read_text().splitlines().index(f"- kind: {tracker}") + 1
    message = f": callbacks[1].kind: callback '{tracker}' needs {tracker}, not installed: pip install 'evsys-logging[{tracker}]'"
    want = re.compile(re.escape(f"{config}:{line}:") + r"\d+" + re.escape(message))

    assert main(["validate", str(config), "--deep"]) == 1
    out, err = capsys.readouterr()
    assert [text for text in (out + err).splitlines() if want.fullmatch(text)], out + err

    assert main(["run", str(config)]) == 1
    out, err = capsys.readouterr()
    assert [text for text in err.splitlines() if want.fullmatch(text)], err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs" / "tiny" / "checkpoints").exists()  # refused before the model loads


def test_validating_a_config_with_trackers_imports_none_of_them(tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> None:
    config = tiny_run(tmp_path, tiny_model_dir, extra={"callbacks": [{"kind": kind} for kind in ("local_logger", *TRACKERS)]})
    probe = (
        "import sys; from evsys.cli.main import main; code = main(['validate', sys.argv[1], '--deep']); "
        "heavy = [m for m in ('torch', 'tensorboard', 'wandb', 'mlflow') if m in sys.modules]; "
        "assert code == 0 and not heavy, (code, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------------------- resume, failure, secrets
# The callbacks driven directly, as the run loop drives them (no model): an attempt interrupted after
# its checkpoint at step 1 has logged steps 1-3; the resumed attempt redoes steps 2-3.


def context(run_dir: Path, resumed_from_step: int = 0) -> Any:
    from evsys.schema.protocols import RunContext

    return RunContext("attempts", run_dir, run_dir.parent, {"name": "attempts"}, 3, resumed_from_step)


def two_attempts(callback_class: type, run_dir: Path, end: str = "completed", error: str | None = None) -> tuple[Any, Any]:
    """Attempt 1 logs steps 1-3 (loss = step) and is interrupted; attempt 2 resumes after step 1 (loss = 10 * step)."""
    first = callback_class()
    first.on_run_start(context(run_dir))
    for step in (1, 2, 3):
        first.on_step_end(step, {"train/mean_loss": float(step)})
        if step == 1:
            state = first.state_dict()
    first.on_run_end("interrupted", {"train/mean_loss": 3.0}, "interrupted by the user")
    second = callback_class()
    second.load_state_dict(state)
    second.on_run_start(context(run_dir, resumed_from_step=1))
    for step in (2, 3):
        second.on_step_end(step, {"train/mean_loss": 10.0 * step})
    second.on_run_end(end, {"train/mean_loss": 30.0}, error)
    return first, second


def test_tensorboard_resume_drops_the_steps_redone(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evsys.logging.tensorboard_tracker import TensorBoardTracker

    two_attempts(TensorBoardTracker, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/mean_loss")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    # a run started again from step 1 (--overwrite) hides every step of the earlier one
    again = TensorBoardTracker()
    again.on_run_start(context(tmp_path))
    again.on_step_end(1, {"train/mean_loss": 100.0})
    again.on_run_end("completed", {})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/mean_loss")] == [(1, 100.0)]


def test_mlflow_resume_continues_the_run_and_a_failure_marks_it_failed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from evsys.logging.mlflow_tracker import MlflowTracker

    first, second = two_attempts(MlflowTracker, tmp_path, end="failed", error="RuntimeError: out of memory")
    assert first.run_id == second.run_id
    client = MlflowClient(tracking_uri=first.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("evsys").experiment_id])
    assert run.info.run_id == first.run_id and run.info.status == "FAILED" and run.data.tags["evsys.status"] == "failed"
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path / "dl"))).read_text())
    assert summary == {"status": "failed", "steps": 3, "max_steps": 3, "final_metrics": {"train/mean_loss": 30.0}, "error": "RuntimeError: out of memory"}
    # MLflow keeps every value logged (it cannot delete a step): steps 2-3 hold both attempts' values
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/mean_loss"))
    assert history == [(1, 1.0), (2, 2.0), (2, 20.0), (3, 3.0), (3, 30.0)]


def test_wandb_resume_reuses_the_run_id_and_a_failure_exits_non_zero(tmp_path: Path) -> None:
    from evsys.logging.wandb_tracker import WandbTracker

    first, second = two_attempts(WandbTracker, tmp_path, end="failed", error="RuntimeError: out of memory")
    assert first.run_id == second.run_id
    # W&B names each attempt offline-run-<time>-<id>, adding -1 when two start in the same second
    logs = sorted(tmp_path.glob(f"wandb/offline-run-*-{first.run_id}*/run-{first.run_id}.wandb"))
    assert len(logs) == 2
    resumed = wandb_records(tmp_path, logs[1])
    (run,) = [r["run"] for r in resumed if r["type"] == "run"]
    assert run["resume"] is True and run["run_id"] == first.run_id
    history = [(r["history"]["item"]["_step"], r["history"]["item"]["train/mean_loss"]) for r in resumed if r["type"] == "history"]
    assert history == [(2, 20), (3, 30)]
    summary: dict[str, Any] = {}
    for record in resumed:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: out of memory"
    assert [r["exit"].get("exit_code", 0) for r in resumed if r["type"] == "exit"] == [1]


def test_secret_values_stay_out_of_the_tracker_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
    from tensorboard.util import tensor_util

    from evsys.logging.tensorboard_tracker import TensorBoardTracker

    monkeypatch.setenv("TINKER_API_KEY", "tml-secret-value-1234")
    callback = TensorBoardTracker()
    callback.on_run_start(context(tmp_path))
    callback.on_run_end("failed", {}, "401 Unauthorized for key tml-secret-value-1234")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={TENSORS: 0})
    events.Reload()
    (event,) = events.Tensors("summary")
    text = tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8")
    assert json_block(text)["error"] == "401 Unauthorized for key ***"


@pytest.mark.parametrize("tracker", TRACKERS)
def test_trackers_keep_the_callback_contract(tracker: str, tmp_path: Path) -> None:
    from evsys.schema.plugins import default_registry
    from evsys.testing import check_callback

    registration = default_registry().get("callback", tracker)
    callback = registration.load()(registration.params())
    check_callback(callback, run_dir=tmp_path)  # a NaN loss and a missing metric are left out, not an error
    assert callback.run_id or tracker == "tensorboard"
