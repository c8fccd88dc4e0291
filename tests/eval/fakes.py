"""A scripted task and rollout engine, so runner tests can check metrics against hand-computed values."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.rewards.base import RewardResult
from rlvr.rollout.base import RolloutBatch


@dataclass
class Example:
    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict)


class EchoTask:
    """Correct when the last word of the response is the answer; format is right when it starts with 'A'."""

    name = "echo"

    def __init__(self, with_format: bool = True, with_extractor: bool = True):
        self.with_format = with_format
        if not with_extractor:
            self.extract_answer = None

    def messages(self, example):
        return [{"role": "user", "content": example.question}]

    def extract_answer(self, response: str):
        words = response.split()
        return words[-1] if words else None

    def score(self, response: str, example) -> RewardResult:
        correct = self.extract_answer(response) == example.answer if self.extract_answer else False
        components = {"answer": float(correct)}
        reward = float(correct)
        if self.with_format:
            components["format"] = float(response.startswith("A"))
            reward += 0.1 * components["format"]
        return RewardResult(reward=reward, correct=correct, components=components)


class ScriptedEngine:
    """Answers prompt i (in order of first sight) with `scripts[i]`; 'length' when a response has >= 3 tokens."""

    def __init__(self, tokenizer, scripts: list[list[str]]):
        self.tokenizer = tokenizer
        self.scripts = scripts
        self.calls: list[tuple[list[list[int]], object]] = []
        self._next = 0

    def generate(self, prompt_ids, params):
        self.calls.append((prompt_ids, params))
        responses, lengths, reasons, prompts = [], [], [], []
        for prompt in prompt_ids:
            script = self.scripts[self._next]
            self._next += 1
            assert len(script) == params.n
            for text in script:
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                responses.append(ids)
                prompts.append(list(prompt))
                lengths.append(len(ids))
                reasons.append("length" if len(ids) >= 3 else "stop")
        return RolloutBatch(prompt_index=[s // params.n for s in range(len(responses))], prompt_ids=prompts,
                            response_ids=responses, sampler_logprobs=[[0.0] * len(r) for r in responses],
                            finish_reasons=reasons, response_lengths=lengths, num_generated_tokens=sum(lengths))
