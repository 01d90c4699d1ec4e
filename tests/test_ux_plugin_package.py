"""examples/plugin_package installed the way a user installs it, and used by a real run.

``pip install --no-deps --no-build-isolation --target SITE examples/plugin_package`` builds the
package with its own build backend (hatchling) from its own pyproject.toml and writes real
``evsys_acme-0.1.0.dist-info`` metadata, entry points included, into SITE — nothing hand-made.
Every check then runs in fresh interpreters with SITE on PYTHONPATH, where ``importlib.metadata``
discovers the entry point exactly as in site-packages; the dev venv provides EvSys itself (the
``--no-deps`` install does not touch it). A config using the verifier, the transform and the
callback is validated (``--deep``) and run for one step on a tiny random model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evsys.schema.plugins import DISABLE_AUTOLOAD_ENV

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "plugin_package"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the build backend of examples/plugin_package (requirements-dev.txt)")
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin_package"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("outputs", "__pycache__", "*.egg-info", "build", "dist"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "evsys_acme-0.1.0.dist-info" / "entry_points.txt").read_text().split() == ["[evsys]", "acme", "=", "evsys_acme.plugin"]
    return target


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "EVSYS_PROGRESS": "lines"}
    env.pop(DISABLE_AUTOLOAD_ENV, None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False, timeout=300)


def test_installed_plugin_is_listed(site: Path, tmp_path: Path) -> None:
    done = run(["-m", "evsys.cli.main", "plugins", "--json"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    mine = {(p["kind"], p["name"]) for p in report["plugins"] if p["distribution"] == "evsys-acme"}
    assert mine == {("verifier_function", "acme_starts_with"), ("transform", "acme_qa_pairs"), ("callback", "acme_event_log")}
    assert report["broken"] == []


def test_plugins_own_tests_pass_against_the_installed_package(site: Path, tmp_path: Path) -> None:
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(PACKAGE / "tests")], site, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_evsys_verify_scores_with_the_plugin_verifier(site: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"task_id": "val_0", "answer": "berlin, of course"}\n{"task_id": "val_1", "answer": "It is Cairo"}\n')
    done = run(["-m", "evsys.verifiers.cli", str(PACKAGE / "data" / "val"), str(predictions), "--metrics", "pass@1"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["metrics"] == {"pass@1": pytest.approx(0.5)}


def test_a_run_uses_the_transform_the_verifier_and_the_callback(site: Path, tmp_path: Path) -> None:
    from evsys.backends.local.testing import build_tiny_model_dir

    build_tiny_model_dir(tmp_path / "tiny")
    shutil.copytree(PACKAGE / "data", tmp_path / "data")
    config = (PACKAGE / "config.yaml").read_text()
    config = config.replace("smollm2-135m-instruct", "tiny").replace("examples/plugin_package/", "")
    config = config.replace("max_steps: 2", "max_steps: 1").replace("topk: 20", "topk: 4\n    max_new_tokens: 4")
    config = config.replace("backend: { kind: local }", "backend: { kind: local, params: { device: cpu } }")
    config = config.replace("metrics: [pass@1]", "metrics: [pass@1]\n      max_new_tokens: 4")
    (tmp_path / "config.yaml").write_text(config)

    done = run(["-m", "evsys.cli.main", "validate", "config.yaml", "--deep"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: config.yaml (algorithm sdft, backend local, 1 step; deep: 4 examples, 1 benchmark with 2 tasks")

    done = run(["-m", "evsys.cli.main", "run", "config.yaml"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Status:    completed" in done.stdout
    run_dir = tmp_path / "outputs" / "acme_demo"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["run_start", "step", "eval", "run_end"]
    assert events[-1]["status"] == "completed"
    predictions = [json.loads(line) for line in (run_dir / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [p["task_id"] for p in predictions] == ["val_0", "val_1"]
    assert all(p["error"] is None for p in predictions)
    # the verifier really scored: re-score the model's answers with the plugin's function
    check = textwrap.dedent(
        """
        import json, sys
        from evsys_acme.verifiers import starts_with
        rows = [json.loads(l) for l in open(sys.argv[1])]
        assert all(r["score"] == starts_with(r["answer"], r["expected"]) for r in rows), rows
        """
    )
    done = run(["-c", check, str(run_dir / "predictions" / "val.jsonl")], site, tmp_path)
    assert done.returncode == 0, done.stderr
