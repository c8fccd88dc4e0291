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
"""

from __future__ import annotations

from typing import Any

from rlvr.rewards.format import extract_answer_tag
from rlvr.rewards.knights_knaves import knights_knaves_reward, parse_knights_knaves
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
        **common: Any,
    ):
        super().__init__(**common)
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
        return knights_knaves_reward(response, answer)

    def canonical_answer(self, text: str) -> tuple[tuple[str, bool | None], ...] | None:
        return knights_knaves_answer_key(text)


def knights_knaves_answer_key(text: str) -> tuple[tuple[str, bool | None], ...] | None:
    """The stated assignment as a sorted tuple of (lower-cased name, is truth-teller), read from the
    text the grader reads (the last <answer> block if any, else the last non-empty line).
    A person given both roles maps to None. Role words are folded (saint == knight). Names the
    puzzle does not have are kept (the gold answer is unknown here), so an answer with an extra
    name votes apart from the same answer without it.

    >>> knights_knaves_answer_key("Ethan is a knave, and Zoey is a saint.")
    (('ethan', False), ('zoey', True))
    """
    tagged = extract_answer_tag(text)
    lines = [line for line in text.splitlines() if line.strip()]
    said = parse_knights_knaves(tagged if tagged is not None else lines[-1] if lines else "")
    return tuple(sorted(said.items())) or None
