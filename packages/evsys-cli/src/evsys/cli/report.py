"""Run reports: final and best metrics of one or more run directories, and PNG plots over steps.

:func:`write_report` reads each run's ``metrics.jsonl`` (train rows and benchmark rows alike),
writes ``report.md`` with a table and ``plots/<metric>.png`` (one plot per metric, every run a line
on it; a metric that never changes is listed with its value instead of drawn), and adds a link to
the report at the end of each run's ``summary.md``. matplotlib is imported only when plots are
drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evsys.schema.errors import EvsysError

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.md"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
REPORT_LINK_HEADING = "## Report"
#: a metric whose last path part contains one of these is better when lower
LOWER_IS_BETTER = ("loss", "error", "seconds", "entropy", "kl", "perplexity", "stderr")


@dataclass
class RunHistory:
    """Every metric of one run directory as ``{metric: [(step, value), ...]}`` in file order."""

    directory: Path
    label: str
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)


@dataclass
class MetricSummary:
    """One row of the report table."""

    run: str
    metric: str
    final: float
    final_step: int
    best: float
    best_step: int
    lower_is_better: bool


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (losses, errors, timings)."""
    last = metric.rsplit("/", 1)[-1].lower()
    return any(word in last for word in LOWER_IS_BETTER)


def load_run(directory: str | Path, label: str | None = None) -> RunHistory:
    """Read ``<directory>/metrics.jsonl``; rows that are not valid JSON objects and non-numeric values are skipped."""
    path = Path(directory)
    metrics_file = path / METRICS_FILE
    if not metrics_file.is_file():
        raise EvsysError(f"{path}: not a run directory (no {METRICS_FILE})")
    history = RunHistory(path, label or path.name)
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a crashed run
        if not isinstance(row, dict) or not isinstance(row.get("metrics"), dict):
            continue
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for key, value in row["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            history.series.setdefault(key, []).append((step, float(value)))
            history.splits.setdefault(key, str(row.get("split", "")))
    return history


def unique_labels(directories: list[Path]) -> list[str]:
    """Short names for the runs: the directory name, with parents added until they differ."""
    parts = [d.resolve().parts for d in directories]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in directories]


def summarize(history: RunHistory) -> list[MetricSummary]:
    """Final (last logged) and best value of every metric of one run."""
    rows = []
    for metric, points in history.series.items():
        lower = lower_is_better(metric)
        pick = min if lower else max
        best_step, best = pick(points, key=lambda point: point[1])
        final_step, final = points[-1]
        rows.append(MetricSummary(history.label, metric, final, final_step, best, best_step, lower))
    return rows


def headline(metric: str, history: RunHistory) -> bool:
    """Metrics shown in the table by default: benchmark metrics and ``train/mean_loss``."""
    return metric == "train/mean_loss" or history.splits.get(metric, "train") != "train"


def metric_order(metric: str) -> tuple[int, str]:
    """Benchmark metrics first, then ``train/mean_loss``, then the other train metrics."""
    rank = 1 if metric == "train/mean_loss" else 2 if metric.startswith("train/") else 0
    return rank, metric


def _plot_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@^-]+", "_", metric).strip("_") + ".png"


def constant_metrics(runs: list[RunHistory]) -> dict[str, float]:
    """Metrics logged at least twice with one value in every run (``train/skipped``, a fixed ``learning_rate``): ``{metric: value}``.

    Headline metrics (benchmark metrics, ``train/mean_loss``) are never listed: a benchmark score that
    did not move is a result worth its plot. A metric logged once is not constant either.
    """
    values: dict[str, list[float]] = {}
    for run in runs:
        for metric, points in run.series.items():
            if not headline(metric, run):
                values.setdefault(metric, []).extend(value for _, value in points)
    headlines = {metric for run in runs for metric in run.series if headline(metric, run)}
    return {
        metric: seen[0]
        for metric, seen in values.items()
        if metric not in headlines and len(seen) > 1 and len(set(seen)) == 1
    }


def draw_metric(axes: Any, metric: str, runs: list[RunHistory]) -> None:
    """Draw ``metric`` of every run on ``axes`` (a matplotlib Axes), with whole-number step ticks only."""
    from matplotlib.ticker import MaxNLocator

    for run in runs:
        points = run.series.get(metric)
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="o", markersize=3, label=run.label)
    axes.set_title(metric)
    axes.set_xlabel("step")
    # min_n_ticks=1: with one step in view, MaxNLocator would otherwise fall back to fractional ticks
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.grid(True, alpha=0.3)
    if len(runs) > 1:
        axes.legend(fontsize="small")


def plot_metrics(runs: list[RunHistory], directory: Path) -> dict[str, Path]:
    """One PNG per metric under ``directory``, each run a line over steps; returns ``{metric: file}``.

    Metrics of :func:`constant_metrics` get no plot.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    constant = constant_metrics(runs)
    metrics = sorted({metric for run in runs for metric in run.series if metric not in constant}, key=metric_order)
    written: dict[str, Path] = {}
    for metric in metrics:
        figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
        try:
            draw_metric(axes, metric, runs)
            figure.tight_layout()
            target = directory / _plot_name(metric)
            figure.savefig(target)
            written[metric] = target
        finally:
            plt.close(figure)
    return written


def _number(value: float) -> str:
    return f"{value:.4f}" if not float(value).is_integer() else f"{value:g}"


def table_rows(runs: list[RunHistory], *, all_metrics: bool = False) -> list[MetricSummary]:
    """The table: headline metrics (or every metric), grouped by metric, runs in the order given."""
    rows = [row for run in runs for row in summarize(run) if all_metrics or headline(row.metric, run)]
    return sorted(rows, key=lambda row: metric_order(row.metric))


def format_table(rows: list[MetricSummary]) -> list[str]:
    """Plain-text table for the terminal."""
    headers = ("METRIC", "RUN", "FINAL", "BEST", "BEST STEP")
    cells = [(r.metric, r.run, f"{_number(r.final)} @{r.final_step}", _number(r.best), str(r.best_step)) for r in rows]
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [headers, *cells]]


def render_markdown(
    runs: list[RunHistory],
    rows: list[MetricSummary],
    plots: dict[str, Path],
    directory: Path,
    constant: dict[str, float] | None = None,
) -> str:
    """``report.md``: the runs, the table of final and best values, every plot, then the metrics not drawn because constant."""
    lines = ["# EvSys report", "", "Runs:", ""]
    for run in runs:
        link = Path(os.path.relpath(run.directory / SUMMARY_FILE, directory)).as_posix()
        lines.append(f"- `{run.label}`: [{SUMMARY_FILE}]({link})")
    lines += ["", "## Final and best metrics", ""]
    lines += ["| metric | run | final (step) | best | best step |", "|---|---|---|---|---|"]
    for row in rows:
        arrow = "min" if row.lower_is_better else "max"
        lines.append(f"| `{row.metric}` | {row.run} | {_number(row.final)} ({row.final_step}) | {_number(row.best)} ({arrow}) | {row.best_step} |")
    if not rows:
        lines.append("| (no metrics) | | | | |")
    lines += ["", "## Plots", ""]
    for metric, path in plots.items():
        relative = Path(os.path.relpath(path, directory)).as_posix()
        lines += [f"### `{metric}`", "", f"![{metric}]({relative})", ""]
    if not plots and not constant:
        lines.append("(plots were not drawn)")
    if constant:
        lines += [""] if lines[-1] else []
        lines += ["Not drawn, constant over every step of every run:", ""]
        lines += [f"- `{metric}` = {value:.6g}" for metric, value in sorted(constant.items(), key=lambda item: metric_order(item[0]))]
    return "\n".join(lines).rstrip() + "\n"


def link_from_summary(run_dir: Path, report: Path) -> bool:
    """Append a link to ``report`` at the end of ``run_dir/summary.md`` (once); False if there is no summary."""
    summary = run_dir / SUMMARY_FILE
    if not summary.is_file():
        return False
    relative = Path(os.path.relpath(report, run_dir)).as_posix()
    line = f"- [{relative}]({relative}): final and best metrics, plots of every metric over steps"
    text = summary.read_text(encoding="utf-8").rstrip("\n")
    if line in text:
        return True
    if REPORT_LINK_HEADING not in text:
        text += f"\n\n{REPORT_LINK_HEADING}\n"
    summary.write_text(text + "\n" + line + "\n", encoding="utf-8")
    return True


def default_report_dir(directories: list[Path]) -> Path:
    """One run: the run directory. Several: ``report/`` in their common parent directory."""
    if len(directories) == 1:
        return directories[0]
    common = Path(os.path.commonpath([str(d.resolve()) for d in directories]))
    return common / "report"


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    markdown: Path
    plots: dict[str, Path]
    rows: list[MetricSummary]
    linked: list[Path]
    constant: dict[str, float] = field(default_factory=dict)


def write_report(
    run_dirs: list[str | Path], output: str | Path | None = None, *, plots: bool = True, all_metrics: bool = False
) -> Report:
    """Write ``report.md`` (+ ``plots/``) for ``run_dirs`` into ``output`` and link it from each run's ``summary.md``."""
    if not run_dirs:
        raise EvsysError("give at least one run directory")
    directories = [Path(d) for d in run_dirs]
    labels = unique_labels(directories)
    runs = [load_run(d, label) for d, label in zip(directories, labels, strict=True)]
    target = Path(output) if output is not None else default_report_dir(directories)
    target.mkdir(parents=True, exist_ok=True)
    drawn = plot_metrics(runs, target / PLOTS_DIR) if plots else {}
    constant = constant_metrics(runs) if plots else {}
    rows = table_rows(runs, all_metrics=all_metrics)
    markdown = target / REPORT_FILE
    markdown.write_text(render_markdown(runs, rows, drawn, target, constant), encoding="utf-8")
    linked = [d for d in directories if link_from_summary(d, markdown)]
    return Report(markdown, drawn, rows, linked, constant)
