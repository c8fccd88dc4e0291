"""A run with the user's own reward: it learns, and a reward that raises or hangs is contained and counted."""

from __future__ import annotations

import json
import textwrap

from rlvr.train.runner import train
from tests.tiny_run import ListConsole, tiny_config

REWARDS_PY = '''
import time

def repeats(response, answer, question):
    assert question.endswith(answer)  # the problem's fields reach the function
    chars = "".join(response.split())[:4]
    return {"reward": sum(c == answer for c in chars) / 4, "length": float(len(response))}

def hostile(response, answer):
    kind = sum(map(ord, response)) % 3
    if kind == 0:
        time.sleep(30)
    if kind == 1:
        raise RuntimeError("verifier exploded")
    return float(response.strip()[:1] == answer)
'''


def _train_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward_mean" in r]


def test_a_user_reward_in_its_worker_trains_the_tiny_task(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(REWARDS_PY))
    monkeypatch.chdir(tmp_path)
    # the settings of tests/train/test_learning.py, the built-in symbol reward's density (max_len 4)
    cfg = tiny_config(tiny_dir, tmp_path / "run", "task.reward=my_rewards.py:repeats", "train.steps=30",
                      "optim.lr=2e-2")
    rows = _train_rows(train(cfg, progress=False))
    assert rows[-1]["reward_errors"] == 0
    assert "reward_repeats/length" in rows[0] and "reward_repeats" in rows[0]
    rewards = [r["reward_mean"] for r in rows]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-10:]) / 10
    assert last > first + 0.08, [round(r, 2) for r in rewards]


def test_a_reward_that_raises_or_hangs_costs_its_samples_not_the_run(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(REWARDS_PY))
    monkeypatch.chdir(tmp_path)
    logged: list[str] = []

    cfg = tiny_config(tiny_dir, tmp_path / "run", "task.reward=my_rewards.py:hostile", "task.reward_timeout_s=0.5",
                      "train.steps=1", "rollout.prompts_per_step=2", "rollout.group_size=4",
                      "rollout.max_new_tokens=3")
    rows = _train_rows(train(cfg, progress=False, console=ListConsole(logged)))
    assert rows[-1]["reward_timeouts"] > 0
    assert rows[-1]["reward_errors"] > rows[-1]["reward_timeouts"]  # some raised as well
    assert sum("verifier exploded" in line for line in logged) == 1
    assert sum("ran past task.reward_timeout_s=0.5" in line for line in logged) == 1


def test_the_readme_example_reward_trains(tiny_dir, tmp_path, monkeypatch):
    """The 'Bring your own reward' example of the README, copied as a user would, runs a training step."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Bring your own reward**", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    (tmp_path / "my_rewards.py").write_text(code)
    data = tmp_path / "my_data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"Say {split}{i}", "answer": f"{split}{i}"}) + "\n" for i in range(4)))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tiny_dir, tmp_path / "run", "task.name=jsonl", "task.kwargs.path=my_data",
                      "task.reward=my_rewards.py:score", "train.steps=1", "task.template=plain")
    rows = _train_rows(train(cfg, progress=False))
    assert rows[0]["reward_errors"] == 0 and "reward_score/concise" in rows[0]
