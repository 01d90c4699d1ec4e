"""``math_equiv``'s engine: Math-Verify in long-lived worker processes, with a timeout the parent enforces.

A worker is ``python -m evsys.verifiers.math_worker``, reading one JSON request per line on stdin and
answering one JSON line on stdout. The parent waits at most ``timeout`` seconds for an answer; a
worker that overruns is killed (its whole process group) and replaced. Workers are plain child
processes, never forked from the parent, so a parent holding a CUDA context is safe.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["available", "shutdown", "verify"]

INSTALL_HINT = "math_equiv needs the optional extra: pip install 'evsys-verifiers[math]'"
_STARTUP_TIMEOUT = 60.0


def available() -> bool:
    """Whether Math-Verify is installed."""
    return importlib.util.find_spec("math_verify") is not None


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evsys.verifiers.math_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._buffer = b""
        hello = self._read_line(_STARTUP_TIMEOUT)
        if hello is None or not hello.get("ready"):
            self.kill()
            detail = (hello or {}).get("error", "the worker did not start")
            raise RuntimeError(f"{INSTALL_HINT} ({detail})")

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            data = os.read(fd, 65536)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read_line(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


_LOCK = threading.Lock()
_IDLE: list[_Worker] = []


def _take() -> _Worker:
    with _LOCK:
        if _IDLE:
            return _IDLE.pop()
    return _Worker()


def verify(output: str, golds: list[str], *, timeout: float = 10.0) -> float:
    """1.0 when Math-Verify finds ``output`` equivalent to one of ``golds``; ``TimeoutError`` past ``timeout``."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    worker = _take()
    try:
        answer = worker.ask({"output": output, "golds": golds}, timeout)
    except (BrokenPipeError, OSError, ValueError):
        answer = None
    if answer is None:
        worker.kill()
        if worker.proc.returncode is not None and worker.proc.returncode >= 0:
            raise RuntimeError("the Math-Verify worker exited")
        raise TimeoutError(f"math_equiv took over {timeout:g}s")
    with _LOCK:
        _IDLE.append(worker)
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return float(answer["score"])


def shutdown() -> None:
    """Stop every idle worker (also done at exit)."""
    with _LOCK:
        workers = list(_IDLE)
        _IDLE.clear()
    for worker in workers:
        worker.kill()


atexit.register(shutdown)


def _serve() -> None:
    def send(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        from math_verify import parse
        from math_verify import verify as mv_verify
    except Exception as exc:
        send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    send({"ready": True})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer = parse(request["output"])
            score = 0.0
            if answer:
                for gold in request["golds"]:
                    parsed = parse(gold) or parse(f"${gold}$")
                    if parsed and mv_verify(parsed, answer):
                        score = 1.0
                        break
            send({"score": score})
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    _serve()
