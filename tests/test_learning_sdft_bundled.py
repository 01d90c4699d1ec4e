"""SDFT teaches the bundled SmolLM2-135M-Instruct three made-up facts it cannot know.

Before training its greedy answers are wrong; after 20 SDFT steps the log-probability of each gold
answer (after the fixed prefix "The capital of X is") has risen clearly — it moves before greedy
accuracy does. Both are read from checkpoints in the public peft format, loaded with plain
transformers + peft, so the measurement shares no code with the training path.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams
from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.resolve import resolve_model_dir
from evsys.schema.protocols import BackendSetup
from evsys.schema.rows import PromptExample

pytestmark = pytest.mark.slow

FACTS = [("Zembla", "Velmora"), ("Quarvia", "Ostrand"), ("the Pellucid Isles", "Marrowgate")]
STEPS = 20


def gold_logprobs(model_dir: Path, adapter_dir: str) -> list[float]:
    """log p(" <answer>" | chat prompt + "The capital of X is") under base + adapter, per fact."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    scores = []
    for country, capital in FACTS:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is the capital of {country}?"}], add_generation_prompt=True, tokenize=False
        )
        prefix = tokenizer(prompt + f"The capital of {country} is", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {capital}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + answer])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prefix) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(answer)[:, None])
        scores.append(float(logprobs.sum()))
    return scores


def test_sdft_raises_the_gold_answer_logprob_of_unknown_facts(tmp_path: Path) -> None:
    examples = [PromptExample(inputs={"question": f"What is the capital of {c}?"}, expected=a) for c, a in FACTS]
    backend = LocalBackend(BackendSetup(model_name="smollm2-135m-instruct", lora_rank=8, seed=0, run_dir=tmp_path), LocalBackendParams())
    prompts = [backend.render_chat([{"role": "user", "content": e.inputs["question"]}]) for e in examples]
    before_answers = [group[0].text for group in backend.sample(prompts, n=1, max_tokens=20, temperature=0.0)]
    for (_, capital), answer in zip(FACTS, before_answers, strict=True):
        assert capital not in answer, f"the base model already knows {capital!r}: {answer!r}"
    before = backend.save_checkpoint("before")

    params = SDFTParams(
        learning_rate=1e-3, max_steps=STEPS, batch_size=3, lora_rank=8, topk=20, user_template="{question}", max_new_tokens=20,
        teacher_template="answer_hint",  # the 135M teacher states the answer with it, rarely with the paper's (docs/algorithms.md)
    )
    algorithm = SDFT(params, backend, None)
    losses = [algorithm.train_step(examples, step)["train/mean_loss"] for step in range(1, STEPS + 1)]
    assert all(math.isfinite(loss) for loss in losses)
    after_answers = [group[0].text for group in backend.sample(prompts, n=1, max_tokens=20, temperature=0.0)]
    after = backend.save_checkpoint("after")
    backend.close()

    model_dir = resolve_model_dir("smollm2-135m-instruct")
    logprob_before = gold_logprobs(model_dir, before)
    logprob_after = gold_logprobs(model_dir, after)
    learned = [capital for (_, capital), answer in zip(FACTS, after_answers, strict=True) if capital in answer]
    print(f"gold logprob before {logprob_before}, after {logprob_after}; learned {learned}; answers {after_answers}")
    gain = sum(logprob_after) / len(FACTS) - sum(logprob_before) / len(FACTS)
    assert gain > 1.0, (logprob_before, logprob_after)
    assert all(a > b for a, b in zip(logprob_after, logprob_before, strict=True)), (logprob_before, logprob_after)
