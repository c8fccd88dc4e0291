"""Knights and knaves puzzles from reasoning-gym, as in Logic-RL (Xie et al., 2025).

Puzzles come from `reasoning_gym.create_dataset("knights_knaves", n_people, depth_constraint,
width_constraint, seed, size)`, whose item i is generated from `Random(seed + i)`: the number of
inhabitants, how deeply statements nest, and how many clauses they join are the difficulty knobs
(Logic-RL trains on 3 to 7 people). Each puzzle has exactly one solution. The question text is
reasoning-gym's, which ends with the expected answer format ('Format your answer like: "A is a
knight/knave, and B is a knight/knave"'); the role words vary per puzzle (knight/knave,
saint/sinner, ...), and rlvr.rewards.knights_knaves understands all of them.

Splits: train uses seeds seed + i, test seeds seed + 10^9 + i. A puzzle's logical structure (its
statements over person indices, whatever the names) is hashed into train or test, so no held-out
structure is ever trained on, even under other names; within a split, question texts are distinct.
`Example.answer` is {name: True if truth-teller}; `meta["answer_text"]` is reasoning-gym's answer.
reasoning-gym is imported on first use (it takes a few seconds).

Grading: rlvr.rewards.knights_knaves. With `answer_in_tags`, all of the last <answer> tag is read,
every line of it (Logic-RL's one-person-per-line answers); without, the last <answer> block, else
the last non-empty line. `format_rule` picks the format reward added with `format_weight`: "r1"
(default, rlvr's strict R1 rule) or "logic_rl" (Logic-RL's published rule: the four tags once
each and in order, other text allowed around them); see rlvr.rewards.format.
"""

from __future__ import annotations

from typing import Any

from rlvr.rewards.base import CompositeReward
from rlvr.rewards.format import FORMAT_RULES
from rlvr.rewards.knights_knaves import knights_knaves_answer_text, knights_knaves_reward, parse_knights_knaves
from rlvr.tasks.base import TASKS, Example, Task, hash_unit

_TEST_SEED_OFFSET = 10**9


@TASKS.register("knights_knaves")
class KnightsKnavesTask(Task):
    name = "knights_knaves"
    max_new_tokens = 512

    def __init__(
        self,
        *,
        n_people: int = 3,
        depth_constraint: int = 2,
        width_constraint: int = 2,
        train_size: int = 1000,
        test_size: int = 200,
        test_fraction: float = 0.2,
        seed: int = 0,
        format_rule: str = "r1",
        **common: Any,
    ):
        """format_rule: "r1" or "logic_rl", the format reward weighted by `format_weight` (module docstring)."""
        super().__init__(**common)
        if format_rule not in FORMAT_RULES:
            raise ValueError(f"unknown format_rule {format_rule!r}; known: {', '.join(FORMAT_RULES)}")
        self.format_rule = format_rule
        if "format" in self.reward.components:
            components = dict(self.reward.components)
            components["format"] = (FORMAT_RULES[format_rule], self.format_weight)
            self.reward = CompositeReward(components, correct_from="answer")
        if n_people < 2 or depth_constraint < 1 or width_constraint < 2:
            # width < 2 crashes reasoning-gym's sampler ("and"/"or" join at least two clauses)
            raise ValueError(
                "need n_people >= 2, depth_constraint >= 1 and width_constraint >= 2; got "
                f"n_people={n_people}, depth_constraint={depth_constraint}, width_constraint={width_constraint}"
            )
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
        self.difficulty = dict(n_people=n_people, depth_constraint=depth_constraint, width_constraint=width_constraint)
        self.sizes = {"train": train_size, "test": test_size}
        self.test_fraction, self.seed = test_fraction, seed

    def _build(self, split: str) -> list[Example]:
        import reasoning_gym

        base_seed = self.seed + (_TEST_SEED_OFFSET if split == "test" else 0)
        want, out, seen, failures = self.sizes[split], [], set(), 0
        dataset = reasoning_gym.create_dataset("knights_knaves", seed=base_seed, size=_TEST_SEED_OFFSET, **self.difficulty)
        for idx in range(20 * want + 100):
            try:
                item = dataset[idx]
            except IndexError:  # reasoning-gym gave up finding a puzzle with one solution for this seed
                failures += 1
                if failures >= 20 and failures > 4 * len(out):
                    raise ValueError(
                        f"reasoning-gym finds almost no knights-and-knaves puzzles with a unique solution for "
                        f"{self.difficulty} ({failures} failures, {len(out)} puzzles); change the difficulty"
                    ) from None
                continue
            meta = item["metadata"]
            structure = repr(meta["statements"])
            in_test = hash_unit(structure, "knights_knaves") < self.test_fraction
            if in_test != (split == "test") or item["question"] in seen:
                continue
            seen.add(item["question"])
            solution = {str(name): bool(truthful) for name, truthful in zip(meta["names"], meta["solution"])}
            out.append(Example(
                id=f"knights_knaves:{base_seed}+{idx}",
                question=item["question"],
                answer=solution,
                meta={"answer_text": str(item["answer"]), "structure": structure, **self.difficulty},
            ))
            if len(out) == want:
                return out
        raise ValueError(
            f"could make only {len(out)} distinct {split} puzzles of the {want} asked for with "
            f"{self.difficulty}; ask for fewer or raise the difficulty"
        )

    def answer_reward(self, response: str, answer: Any) -> float:
        # With answer_in_tags, `response` is already the tag's content: read all of it.
        return knights_knaves_reward(response, answer, whole_text=self.answer_in_tags)

    def canonical_answer(self, text: str) -> tuple[tuple[str, bool | None], ...] | None:
        return knights_knaves_answer_key(text, whole_text=self.answer_in_tags)


def knights_knaves_answer_key(text: str, *, whole_text: bool = False) -> tuple[tuple[str, bool | None], ...] | None:
    """The stated assignment as a sorted tuple of (lower-cased name, is truth-teller), read from the
    text the grader reads (all of `text` if `whole_text`, it being the content of the answer tag;
    else the whole last <answer> block if any, else the last non-empty line).
    A person given both roles maps to None. Role words are folded (saint == knight). Names the
    puzzle does not have are kept (the gold answer is unknown here), so an answer with an extra
    name votes apart from the same answer without it.

    >>> knights_knaves_answer_key("Ethan is a knave, and Zoey is a saint.")
    (('ethan', False), ('zoey', True))
    >>> knights_knaves_answer_key("(1) Zoey is a saint\\n(2) Ethan is a knave", whole_text=True)
    (('ethan', False), ('zoey', True))
    """
    said = parse_knights_knaves(knights_knaves_answer_text(text, whole_text=whole_text))
    return tuple(sorted(said.items())) or None
