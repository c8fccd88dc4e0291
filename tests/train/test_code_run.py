"""A training step on a code task whose sampled programs are hostile: each is contained, scored 0, counted."""

from __future__ import annotations

import json

from rlvr.train.build import build
from rlvr.train.data import PromptStream
from tests.tiny_run import tiny_config

PROGRAMS = [
    "```python\ndef add(a, b):\n    return a + b\n```",            # correct
    "```python\nwhile True:\n    pass\n```",                        # hangs
    "```python\nimport os\nwhile True:\n    os.fork()\n```",        # fork bomb
    "```python\nx = bytearray(32 * 1024 ** 3)\n```",                # huge allocation
    "```python\nopen('/tmp/rlvr-pwned', 'w').write('x')\n```",      # writes outside its directory
    "```python\nimport os\nos._exit(0)\n```",                       # exits before the tests
    "```python\nimport socket\nsocket.create_connection(('1.1.1.1', 53))\n```",
    "```python\ndef add(a, b):\n    return b\n```",                 # half right
]


def test_hostile_programs_cost_their_samples_not_the_step(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        rows = [{"prompt": f"Write add(a, b) {split}{i}.", "tests": ["assert add(1, 2) == 3", "assert add(0, 5) == 5"]}
                for i in range(4)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(tiny_dir, tmp_path / "run", "task.name=code", f"task.kwargs.path={data}",
                      "task.kwargs.timeout_s=2", "task.template=plain", "rollout.prompts_per_step=1",
                      "rollout.group_size=8", "train.steps=1")
    trainer = build(cfg)
    trainer.models.tokenizer.batch_decode = lambda ids, **kwargs: [PROGRAMS[i % len(PROGRAMS)] for i in range(len(ids))]
    metrics = trainer.step(PromptStream(trainer.models.task.examples("train"), 0), 1)
    assert metrics["reward_mean"] == 1 / 8 and metrics["accuracy"] == 1 / 8
    assert metrics["reward_answer/timeout"] == 1 / 8
    assert metrics["reward_answer/blocked"] == 3 / 8  # fork, write, network
    assert metrics["reward_answer/limit"] == 1 / 8
    assert metrics["reward_answer/crashed"] == 1 / 8
    assert metrics["reward_answer/pass_fraction"] == (2 + 1) / 2 / 8  # the wrong add passes add(0, 5) == 5
    assert metrics["reward_errors"] == 0
