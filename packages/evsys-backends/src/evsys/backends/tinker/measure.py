"""Token lengths of chats rendered by a ``tml-renderers`` renderer, in a child process.

``evsys validate --deep`` must not import torch, and ``tml-renderers``' native code needs it loaded,
so :func:`measure_chats` runs ``python -m evsys.backends.tinker.measure RENDERER`` with the chats as
JSON on stdin and reads the longest of each kind back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evsys.schema.protocols import Message

MEASURE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Longest:
    """The longest chat of one kind: its token count and its index among the chats given."""

    tokens: int
    index: int


def measure_chats(
    renderer: str,
    prompts: Mapping[str, Sequence[Sequence[Message]]],
    trained: Sequence[Sequence[Message]] = (),
    *,
    timeout_s: float = MEASURE_TIMEOUT_S,
) -> dict[str, Longest]:
    """The longest rendered chat per kind: ``prompts[kind]`` as generation prompts, ``trained`` (key ``"sft"``)
    as training examples. Raises :class:`RuntimeError` with one line when the child fails."""
    payload = json.dumps({"prompts": prompts, "sft": trained})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "evsys.backends.tinker.measure", renderer],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"tokenizing with renderer '{renderer}' took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"tokenizing with renderer '{renderer}' failed: {lines[-1] if lines else done.returncode}")
    rows = json.loads(done.stdout)
    return {kind: Longest(int(value[0]), int(value[1])) for kind, value in rows.items()}


def _longest(lengths: Sequence[int]) -> list[int] | None:
    if not lengths:
        return None
    index = max(range(len(lengths)), key=lambda i: lengths[i])
    return [lengths[index], index]


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry: render the chats on stdin with the named renderer; print ``{kind: [tokens, index]}``."""
    from evsys.backends.tinker.renderers import RendererChat

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m evsys.backends.tinker.measure RENDERER < chats.json", file=sys.stderr)
        return 2
    chat = RendererChat(args[0])
    payload = json.loads(sys.stdin.read())
    out: dict[str, list[int]] = {}
    for kind, chats in payload.get("prompts", {}).items():
        found = _longest([len(chat.render_prompt(messages)) for messages in chats])
        if found is not None:
            out[kind] = found
    trained = [max((len(tokens) for tokens, _ in chat.render_sft(messages)), default=0) for messages in payload.get("sft", [])]
    found = _longest(trained)
    if found is not None:
        out["sft"] = found
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
