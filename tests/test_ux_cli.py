"""evsys eval / report / export and the CLI's manners, on a real run of a tiny random Llama (local backend)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evsys.cli.main import cli
from evsys.logging.console import ConsoleProgress, choose_mode
from evsys.schema.protocols import EvalResult, RunContext
from evsys.schema.rows import MetricsRow, PredictionRow

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(
    tmp_path_factory: pytest.TempPathFactory, tiny_workdir: Callable[[Path], Path], tiny_config: Callable[..., Path]
) -> Iterator[Path]:
    """A directory with a tiny model, the walkthrough's data and one finished 2-step run (the cwd of each test)."""
    from evsys.cli import run

    directory = tiny_workdir(tmp_path_factory.mktemp("ux"))
    config = tiny_config(directory, tasks=3)
    old = Path.cwd()
    os.chdir(directory)
    try:
        result = run(config)
        assert result.status == "completed"
        yield directory
    finally:
        os.chdir(old)


# ------------------------------------------------------------------------------------------ eval


def test_eval_base_model_writes_the_in_loop_outputs(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, err = evsys_cli(["eval", "tiny_run.yaml", "--overwrite"])
    assert code == 0, err
    directory = Path("outputs/tiny_run/eval/base")
    assert out.splitlines() == [
        "Status:    completed",
        f"Metrics:   {{'val/val/pass@1': {json.loads((directory / 'metrics.jsonl').read_text())['metrics']['val/val/pass@1']!r}}}",
        f"Logs:      {directory} (metrics.jsonl, predictions/, summary.md)",
    ]
    phases = [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[")]
    assert phases[:2] == ["benchmarks: val (3 tasks, every 1 step)", "model: loading tiny on the local backend ..."]
    assert next(line for line in err.splitlines() if not line.startswith("[")) == "eval step 0 | scoring val (3 tasks) ..."
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"], list(r["metrics"])) for r in rows] == [(0, "val", ["val/val/pass@1"])]
    for row in rows:
        MetricsRow.model_validate(row)
    predictions = [json.loads(line) for line in (directory / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [p["task_id"] for p in predictions] == ["val_0", "val_1", "val_2"]
    for row in predictions:
        PredictionRow.model_validate(row)
    summary = (directory / "summary.md").read_text()
    assert "Status: completed" in summary and "- step 0: val/val/pass@1 = " in summary


def test_eval_checkpoint_matches_the_in_loop_evaluation(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    """Scoring checkpoints/final afresh gives the answers the run's last in-loop evaluation gave."""
    code, _, err = evsys_cli(["eval", "tiny_run.yaml", "--checkpoint", "outputs/tiny_run", "--overwrite", "-q"])
    assert code == 0, err
    assert err == ""
    directory = Path("outputs/tiny_run/eval/final")
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(2, "val")]
    in_loop = [json.loads(line) for line in Path("outputs/tiny_run/predictions/val.jsonl").read_text().splitlines()]
    fresh = [json.loads(line) for line in (directory / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [(p["task_id"], p["answer"]) for p in fresh] == [(p["task_id"], p["answer"]) for p in in_loop if p["step"] == 2]


def test_eval_refuses_to_overwrite_and_names_bad_checkpoints(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    evsys_cli(["eval", "tiny_run.yaml", "-o", "evals/again", "-q"])
    code, _, err = evsys_cli(["eval", "tiny_run.yaml", "-o", "evals/again", "-q"])
    assert code == 1
    assert err == "evals/again: already holds an evaluation; pass --overwrite to replace it (or --output DIR)\n"
    code, _, err = evsys_cli(["eval", "tiny_run.yaml", "--checkpoint", "data", "-q"])
    assert code == 1
    assert err.startswith("data: neither a checkpoint directory (adapter_config.json) nor a run directory")


# ---------------------------------------------------------------------------------------- report


def test_report_compares_runs_and_links_from_summary(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    import shutil

    # a second run: the first one's files, with its loss halved
    other = Path("outputs/tiny_run_b")
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree("outputs/tiny_run", other, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    rows = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if "train/mean_loss" in row["metrics"]:
            row["metrics"]["train/mean_loss"] /= 2
    (other / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (other / "summary.md").write_text((other / "summary.md").read_text().replace("# EvSys run: tiny_run", "# EvSys run: tiny_run_b"))
    code, out, err = evsys_cli(["report", "outputs/tiny_run", "outputs/tiny_run_b", "-o", "outputs/compare"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["METRIC", "RUN", "FINAL", "BEST", "BEST", "STEP"]
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["val/val/pass@1", "tiny_run"],
        ["val/val/pass@1", "tiny_run_b"],
        ["train/mean_loss", "tiny_run"],
        ["train/mean_loss", "tiny_run_b"],
    ]
    report = Path("outputs/compare/report.md")
    assert lines[-1].startswith(f"Report:    {report} (")
    text = report.read_text()
    assert "| `val/val/pass@1` | tiny_run | " in text and "![train/mean_loss](plots/train_mean_loss.png)" in text
    png = Path("outputs/compare/plots/train_mean_loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("tiny_run", "tiny_run_b"):
        summary = Path(f"outputs/{name}/summary.md").read_text()
        assert summary.rstrip().endswith("- [../compare/report.md](../compare/report.md): final and best metrics, plots of every metric over steps")
        assert summary.startswith(f"# EvSys run: {name}\n")  # LocalLogger's summary is kept, the link is appended


def test_report_values_are_the_final_and_best(tmp_path: Path) -> None:
    from evsys.cli.report import load_run, summarize

    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"step": 1, "split": "train", "metrics": {"train/mean_loss": 2.0}},
                {"step": 1, "split": "val", "metrics": {"val/val/pass@1": 0.5}},
                {"step": 2, "split": "train", "metrics": {"train/mean_loss": 1.0}},
                {"step": 2, "split": "val", "metrics": {"val/val/pass@1": 0.25}},
                {"step": 3, "split": "train", "metrics": {"train/mean_loss": None}},
            ]
        )
        + "\n{\"step\": 4, \"spl"  # a half-written last line of a crashed run
    )
    rows = {row.metric: row for row in summarize(load_run(tmp_path))}
    loss, score = rows["train/mean_loss"], rows["val/val/pass@1"]
    assert (loss.final, loss.final_step, loss.best, loss.best_step, loss.lower_is_better) == (1.0, 2, 1.0, 2, True)
    assert (score.final, score.final_step, score.best, score.best_step, score.lower_is_better) == (0.25, 2, 0.5, 1, False)


def test_report_lists_constant_metrics_instead_of_plotting_them(tmp_path: Path) -> None:
    from evsys.cli.report import write_report

    rows = [
        {"step": 1, "split": "train", "metrics": {"train/mean_loss": 2.0, "train/skipped": 0.0, "learning_rate": 1e-5}},
        {"step": 2, "split": "train", "metrics": {"train/mean_loss": 1.5, "train/skipped": 0.0, "learning_rate": 1e-5}},
        {"step": 2, "split": "val", "metrics": {"val/val/pass@1": 0.5}},  # one point: drawn, not "constant"
        {"step": 2, "split": "test", "metrics": {"test/t/pass@1": 0.25}},
        {"step": 3, "split": "test", "metrics": {"test/t/pass@1": 0.25}},  # a benchmark score that did not move: drawn
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = write_report([tmp_path])
    assert set(report.plots) == {"train/mean_loss", "val/val/pass@1", "test/t/pass@1"}
    assert report.constant == {"train/skipped": 0.0, "learning_rate": 1e-5}
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["test_t_pass@1.png", "train_mean_loss.png", "val_val_pass@1.png"]
    text = report.markdown.read_text()
    assert text.endswith("![train/mean_loss](plots/train_mean_loss.png)\n\nNot drawn, constant over every step of every run:\n\n- `learning_rate` = 1e-05\n- `train/skipped` = 0\n")
    # a second run where learning_rate differs: no longer constant across the runs, so it is drawn
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "metrics": {"learning_rate": 2e-5}}) + "\n")
    both = write_report([tmp_path, other], tmp_path / "compare")
    assert "learning_rate" in both.plots and set(both.constant) == {"train/skipped"}


@pytest.mark.parametrize("steps", [[3], [1, 2], [0, 5000]])
def test_report_plots_have_whole_step_ticks(steps: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    from evsys.cli.report import RunHistory, draw_metric

    run = RunHistory(Path("run"), "run", {"val/val/pass@1": [(step, 0.25 * (i + 1)) for i, step in enumerate(steps)]})
    figure, axes = plt.subplots()
    try:
        draw_metric(axes, "val/val/pass@1", [run])
        figure.canvas.draw()
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
    finally:
        plt.close(figure)
    assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
    assert set(steps) <= set(ticks) or len(steps) > 1


def test_report_does_not_import_matplotlib_until_it_plots() -> None:
    code = "import sys, evsys.cli.main; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------- export


def _logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_export_merged_loads_with_plain_transformers_and_gives_the_same_logits(in_workdir: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.schema.protocols import BackendSetup

    # an adapter far from zero, so that merging visibly changes the model
    backend = LocalBackend(BackendSetup("tiny", lora_rank=2, seed=0, run_dir=in_workdir / "outputs" / "exported"), LocalBackendParams(device="cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in backend.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    ids = backend.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    trained = _logits(backend.model, ids)
    backend.save_checkpoint("final")
    backend.close()
    base = _logits(AutoModelForCausalLM.from_pretrained("tiny"), ids)
    assert not torch.allclose(trained, base, atol=1e-3)

    code, out, err = evsys_cli(["export", "outputs/exported", "--merge", "-o", "merged", "--overwrite"])
    assert code == 0, err
    assert out == "Merged outputs/exported/checkpoints/final into a transformers model: merged\n"
    merged = AutoModelForCausalLM.from_pretrained("merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, ids), trained, atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained("merged")("Paris")["input_ids"] == AutoTokenizer.from_pretrained("tiny")("Paris")["input_ids"]

    code, out, err = evsys_cli(["export", "outputs/exported", "-o", "adapter", "--overwrite"])
    assert code == 0, err
    assert sorted(p.name for p in Path("adapter").iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("tiny"), "adapter")
    torch.testing.assert_close(_logits(adapted, ids), trained, atol=1e-4, rtol=1e-4)

    code, _, err = evsys_cli(["export", "outputs/exported", "-o", "adapter"])
    assert code == 1 and err.splitlines()[-1] == "adapter: directory is not empty; pass --overwrite to replace it"


# --------------------------------------------------------------------------------------- console


def context(max_steps: int = 3) -> RunContext:
    return RunContext("demo", Path("run"), Path("."), None, max_steps)


def test_progress_mode_follows_the_terminal_and_the_environment() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert choose_mode(Terminal(), {}) == "bar"
    assert choose_mode(io.StringIO(), {}) == "lines"
    assert choose_mode(Terminal(), {"CI": "true"}) == "lines"
    assert choose_mode(Terminal(), {"TERM": "dumb"}) == "lines"
    assert choose_mode(io.StringIO(), {"EVSYS_PROGRESS": "bar"}) == "bar"
    assert choose_mode(Terminal(), {"EVSYS_PROGRESS": "off"}) == "off"


def test_progress_bar_redraws_one_line() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress(stream=stream, mode="bar")
    progress.on_run_start(context())
    progress.on_step_end(1, {"train/mean_loss": 0.5, "train/sampled_tokens_per_s": 200.0, "train/step_seconds": 0.5})
    progress.on_eval_end(EvalResult("val", "val", 1, {"val/val/pass@1": 0.25}, []))
    progress.on_step_end(2, {"train/mean_loss": 0.25})
    progress.on_run_end("completed", {})
    text = stream.getvalue()
    lines = text.split("\n")
    assert lines[0].startswith("\r\x1b[2K[######..............] step 1/3 | loss 0.5000 | 200 tok/s | ")
    assert lines[0].endswith("\r\x1b[2Keval step 1 | val/val/pass@1 0.250")
    assert "step 2/3 | loss 0.2500 | val/val/pass@1 0.250 | " in lines[1]
    assert lines[2].startswith("run completed after ") and lines[3] == ""


def test_progress_lines_have_no_control_characters_and_off_is_silent() -> None:
    stream = io.StringIO()
    progress = ConsoleProgress(stream=stream, mode="lines")
    progress.on_run_start(context(2))
    progress.on_step_end(1, {"train/mean_loss": 0.5, "train/rollout_tokens_per_s": 42.0})
    progress.on_step_end(2, {})
    progress.on_run_end("failed", {}, "RuntimeError: boom")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("step 1/2 | loss 0.5000 | 42 tok/s | 00:00 elapsed, ETA ")
    assert lines[-1].startswith("run failed after ") and lines[-1].endswith(": RuntimeError: boom")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    silent = io.StringIO()
    quiet = ConsoleProgress(stream=silent, mode="off")
    quiet.on_run_start(context())
    quiet.on_step_end(1, {"train/mean_loss": 0.5})
    quiet.on_run_end("completed", {})
    assert silent.getvalue() == ""


# ------------------------------------------------------------------------------------ CLI manners


def test_every_command_has_help_with_examples(evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    assert set(cli.commands) >= {"validate", "run", "eval", "report", "export", "plugins", "schema"}
    for name in ["", *cli.commands]:
        code, out, _ = evsys_cli([name, "--help"] if name else ["--help"])
        assert code == 0
        assert "Examples:" in out and "evsys " in out.split("Examples:", 1)[1], name


def test_version_and_log_level(evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    from importlib import metadata

    code, out, _ = evsys_cli(["--version"])
    assert (code, out) == (0, f"evsys, version {metadata.version('evsys-cli')}\n")
    code, _, err = evsys_cli(["--log-level", "loud", "plugins"])
    assert code == 2 and "Invalid value for '--log-level'" in err
    import logging

    code, _, _ = evsys_cli(["--log-level", "debug", "plugins", "--json"])
    assert code == 0 and logging.getLogger().level == logging.DEBUG
    evsys_cli(["--log-level", "warning", "plugins", "--json"])


def test_shell_completion_script() -> None:
    env = {**os.environ, "_EVSYS_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "evsys.cli.main"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "_EVSYS_COMPLETE=bash_complete" in done.stdout
    env = {**os.environ, "_EVSYS_COMPLETE": "bash_complete", "COMP_WORDS": "evsys ex", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "evsys.cli.main"], env=env, capture_output=True, text=True, check=False)
    assert done.stdout.splitlines() == ["plain,export"]
