"""Read a program's stdout and stderr until they close, its deadline passes or its output passes the cap.

Standard library only and self-contained: the pooled sandbox's supervisor, which cannot import evsys
inside the sandbox, runs this file's source ahead of its own (:data:`evsys.verifiers.sandbox_pool.SUPERVISOR`).
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable, Mapping

#: After the program has exited, how long a descendant that still holds its output open keeps the run going.
EXIT_GRACE_S = 0.2


def pump_output(
    out: int,
    err: int,
    *,
    deadline: float,
    max_output: int,
    exited: Callable[[], bool],
    others: Mapping[int, Callable[[], bool]] | None = None,
    poll_s: float = 0.1,
) -> tuple[bytes, bytes, bool, bool]:
    """Read the descriptors ``out`` and ``err`` until both close; returns ``(stdout, stderr, timed_out, exceeded)``.

    Stops early at ``deadline`` (``time.monotonic()``; ``timed_out``), once more than ``max_output``
    bytes came in all (``exceeded``), or :data:`EXIT_GRACE_S` after ``exited()`` first says the program
    has exited (a background child holding the output open does not hold the run). ``others`` are more
    descriptors to watch: each one's handler runs when it is readable and returns False to stop watching it.
    """
    handlers = dict(others or {})
    chunks: dict[int, list[bytes]] = {out: [], err: []}
    total, timed_out, exceeded = 0, False, False
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in (out, err, *handlers):
            selector.register(fd, selectors.EVENT_READ)
        while out in selector.get_map() or err in selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is not None and now - exited_at > EXIT_GRACE_S:
                break
            for key, _ in selector.select(min(deadline - now, poll_s)):
                handler = handlers.get(key.fd)
                if handler is not None:
                    if not handler():
                        selector.unregister(key.fd)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    continue
                chunks[key.fd].append(data)
                total += len(data)
                exceeded = exceeded or total > max_output
            if exceeded:
                break
            if exited_at is None and exited():
                exited_at = time.monotonic()
    return b"".join(chunks[out]), b"".join(chunks[err]), timed_out, exceeded
