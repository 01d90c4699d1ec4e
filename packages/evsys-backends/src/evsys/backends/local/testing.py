"""Tiny random models and a byte-level tokenizer, built offline, for tests of anything on the local backend.

``build_tiny_model_dir(path)`` writes a directory that ``model.name`` can point at: a two-layer
Llama (or, with ``architecture=``, any of :data:`ARCHITECTURES`) with random weights and a 259-token byte-level tokenizer (every byte, plus ``<|endoftext|>``,
``<|im_start|>`` and ``<|im_end|>``) with a ChatML chat template, whose EOS and pad token are both
``<|im_end|>`` (as in SmolLM2). It loads in well under a second and its text is gibberish.
"""

from __future__ import annotations

from pathlib import Path

#: ``model_type`` values :func:`build_tiny_model_dir` can build
ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3", "gpt2")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer() -> object:
    """A byte-level BPE tokenizer with no merges (one token per byte) and ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model_dir(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    initializer_range: float = 0.2,
    tie_word_embeddings: bool = False,
    architecture: str = "llama",
) -> Path:
    """Write a tiny random model of ``architecture`` (a ``model_type`` in :data:`ARCHITECTURES`;
    ``save_pretrained`` layout) plus tokenizer to ``path``; return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")  # type: ignore[attr-defined]
    bos = tokenizer.convert_tokens_to_ids("<|im_start|>")  # type: ignore[attr-defined]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    shape: dict[str, object] = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    if architecture == "gpt2":  # GPT-2's own names for the same sizes
        shape = {"n_embd": hidden_size, "n_inner": 2 * hidden_size, "n_layer": num_layers, "n_head": 4, "n_positions": 512}
    if architecture in ("qwen3", "gemma2"):
        shape["head_dim"] = hidden_size // 4
    config = AutoConfig.for_model(
        architecture,
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        initializer_range=initializer_range,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        **shape,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    return out
