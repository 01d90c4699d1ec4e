"""Where SDFT's teacher signal sits in a rollout: `python examples/retention_study/teacher_signal.py`.

Study code. For each of the 20 made-up facts, the base model (the student at step 0) rolls out once on
the training question, exactly as `sdft` does (temperature 1.0, up to 32 tokens), and the sdft teacher
(`answer_hint`: the question plus "The correct answer is Velmora.") scores it: top-20 next-token
logprobs at every rollout position. Per position, the distillation gap is what `sdft` minimizes above
the teacher's entropy: sum_k q(k) (log q(k) - log p_student(k)), q the teacher's top-20 renormalized.
Printed: how often a rollout contains the answer, how much of the gap sits at positions where the
teacher's top token is a token of the gold answer (the only positions that carry the fact), and the
teacher's probability of the answer's first token there.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_study import make_backend  # noqa: E402

from evsys.algorithms.common import render_user_prompt  # noqa: E402
from evsys.algorithms.sdft.params import ANSWER_HINT_TEMPLATE  # noqa: E402
from evsys.data.examples import load_examples  # noqa: E402
from evsys.schema.rows import PromptExample  # noqa: E402


def main() -> int:
    import yaml

    config = yaml.safe_load((HERE / "configs" / "sdft.yaml").read_text())
    backend = make_backend(config)
    tokenizer = backend.tokenizer
    examples = load_examples(str(HERE / "data" / "train.jsonl"), (PromptExample,))
    prompts = [render_user_prompt(backend, "{question}", ex.inputs) for ex in examples]
    rollouts = backend.sample(prompts, n=1, max_tokens=32, temperature=1.0, seed=0)
    total_gap = answer_gap = 0.0
    positions = answer_positions = contains = 0
    first_token_probs = []
    for ex, prompt, (sample,) in zip(examples, prompts, rollouts, strict=True):
        gold = str(ex.expected)
        gold_ids = set(tokenizer.encode(" " + gold, add_special_tokens=False))
        first_id = tokenizer.encode(" " + gold, add_special_tokens=False)[0]
        contains += gold.lower() in sample.text.lower()
        teacher_text = ANSWER_HINT_TEMPLATE.format(prompt=ex.inputs["question"], expected=gold)
        teacher_prompt = backend.render_chat([{"role": "user", "content": teacher_text}])
        (teacher,) = backend.topk_logprobs([teacher_prompt + sample.tokens], k=20, from_position=len(teacher_prompt))
        ids = torch.tensor([prompt + sample.tokens])
        with torch.no_grad():
            student = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), dim=-1)
        for t, (top_ids, top_lps) in enumerate(zip(teacher.token_ids, teacher.logprobs, strict=True)):
            norm = math.log(sum(math.exp(lp) for lp in top_lps))
            q = [math.exp(lp - norm) for lp in top_lps]
            row = student[len(prompt) - 1 + t]
            gap = sum(qk * (math.log(qk) - float(row[i])) for qk, i in zip(q, top_ids, strict=True) if qk > 0)
            total_gap += gap
            positions += 1
            if top_ids[0] in gold_ids:
                answer_gap += gap
                answer_positions += 1
                if top_ids[0] == first_id:
                    first_token_probs.append(math.exp(top_lps[0]))
        print(f"{gold:>10} | {sample.text[:70]!r}")
    print()
    print(f"rollouts containing the answer: {contains} of {len(examples)}")
    print(f"distilled positions: {positions} ({positions / len(examples):.1f} per rollout)")
    print(
        f"positions where the teacher's top token is an answer token: {answer_positions} "
        f"({answer_positions / len(examples):.2f} per rollout)"
    )
    print(f"share of the distillation gap at those positions: {answer_gap / total_gap:.1%}")
    if first_token_probs:
        print(
            f"teacher's probability of the answer's first token there: mean {sum(first_token_probs) / len(first_token_probs):.2f}"
        )
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
