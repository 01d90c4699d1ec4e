"""Run the walkthrough's Tinker config for 2 steps and record every request's shape and response's fields.

    python scripts/record_tinker_session.py                      # the real service: needs TINKER_API_KEY
    python scripts/record_tinker_session.py --dry-run            # the simulated service, offline
    python scripts/record_tinker_session.py CONFIG --out FILE

The record (JSONL, no token ids or texts) is checked by ``evsys.backends.tinker.recording.replay``;
packages/evsys-backends/tests/test_tinker_recording.py replays it (EVSYS_TINKER_RECORD=FILE) and the
shipped sample packages/evsys-backends/tests/data/tinker_record_sample.jsonl (made with --dry-run).
Outputs of the run go to a temporary directory; only the record is kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from evsys.backends.tinker.recording import replay
from evsys.cli.errors import report_errors
from evsys.engine.api import run

DEFAULT_CONFIG = "examples/sdft_walkthrough/config.yaml"


def main(argv: list[str] | None = None) -> int:
    """Record a 2-step session of CONFIG to --out; prints the replay's request counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument("--out", default="tinker_record.jsonl", help="the record file (default: tinker_record.jsonl)")
    parser.add_argument("--dry-run", action="store_true", help="record the simulated service instead of the real one")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    with report_errors() as outcome, tempfile.TemporaryDirectory(prefix="evsys-record-") as scratch:
        config["output_dir"] = scratch
        config["algorithm"]["params"]["max_steps"] = args.steps
        config.setdefault("backend", {}).setdefault("params", {})["record_requests"] = str(out)
        path = Path(scratch) / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = run(str(path), dry_run=args.dry_run)
        counts = replay(out)
        print(f"{result.status}: recorded {sum(counts.values())} requests to {out} ({counts}); replay OK")
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
