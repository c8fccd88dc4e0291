import pytest

from rlvr.rewards import REWARDS, knights_knaves_reward, parse_knights_knaves

SOLUTION = {"Zoey": True, "Ethan": False, "Ava": True}


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<answer>Zoey is a knight, Ethan is a knave, and Ava is a knight.</answer>", 1.0),
        ("<answer>Ethan is a knave. Ava is a knight. Zoey is a knight.</answer>", 1.0),  # any order
        ("<answer>zoey is a KNIGHT, ethan is a Knave and ava is a knight</answer>", 1.0),  # any case
        ("Thinking: if Zoey is a knave...\nZoey is a knight, Ethan is a knave, and Ava is a knight", 1.0),
        ("<answer>Zoey is a knight, Ethan is a knave</answer>", 0.0),  # Ava missing
        ("<answer>Zoey is a knight, Ethan is a knight, and Ava is a knight</answer>", 0.0),  # Ethan wrong
        ("<answer>Zoey is a knight, Zoey is a knave, Ethan is a knave, Ava is a knight</answer>", 0.0),  # hedge
        ("<answer>Zoey is not a knave, Ethan is a knave, and Ava is a knight</answer>", 0.0),  # negation: no claim
        ("Zoey is a knight, Ethan is a knave, and Ava is a knight.\nI am not sure.", 0.0),  # last line has none
        ("<answer>Zoey is a knight/knave, Ethan is a knave, and Ava is a knight</answer>", 0.0),  # copied format
        ("<answer>Zoey is a knight or a knave, Ethan is a knave, and Ava is a knight</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_reward(response, expected):
    assert knights_knaves_reward(response, SOLUTION) == expected


def test_role_words_of_every_reasoning_gym_pair():
    sol = "Benjamin is a saint, Avery is a saint, and Daniel is a sinner."
    assert knights_knaves_reward("Benjamin is a saint, Avery is a saint, and Daniel is a sinner.", sol) == 1.0
    assert knights_knaves_reward("Benjamin is a saint, Avery is a sinner, and Daniel is a sinner.", sol) == 0.0
    # Truth-tellers and liars under other names mean the same thing.
    assert knights_knaves_reward("Benjamin is an angel, Avery is a hero, Daniel is an egoist", sol) == 1.0
    pairs = [("knight", "knave"), ("pioneer", "laggard"), ("saint", "sinner"), ("hero", "villain"),
             ("angel", "devil"), ("altruist", "egoist"), ("sage", "fool")]
    for good, bad in pairs:
        assert parse_knights_knaves(f"A is a {good}, B is a {bad}") == {"a": True, "b": False}


def test_solution_forms_and_errors():
    assert REWARDS["knights_knaves"]("A is a knight, B is a knave", {"A": "knight", "B": "knave"}) == 1.0
    assert REWARDS["knights_knaves"]("A is a knight, B is a knave", "A is a knight, and B is a knave.") == 1.0
    with pytest.raises(ValueError, match="cannot read"):
        knights_knaves_reward("A is a knight", "no solution here")
    with pytest.raises(ValueError, match="role of 'A'"):
        knights_knaves_reward("A is a knight", {"A": "wizard"})
    with pytest.raises(TypeError, match="solution must be"):
        knights_knaves_reward("A is a knight", ["A"])


LOGIC_RL_ANSWER = "(1) Zoey is a knight\n(2) Ethan is a knave\n(3) Ava is a knight"
REASONING_GYM_ANSWER = "Zoey is a knight, Ethan is a knave, and Ava is a knight."


@pytest.mark.parametrize("answer", [LOGIC_RL_ANSWER, REASONING_GYM_ANSWER, "Zoey is a knight,\nEthan is a knave,\nand Ava is a knight."])
def test_every_line_of_the_answer_tag_is_read(answer):
    """Logic-RL's one-person-per-line answers: the whole tag is graded, also when a task passes only its content."""
    assert knights_knaves_reward(f"<think>...</think>\n<answer>\n{answer}\n</answer>", SOLUTION) == 1.0
    assert knights_knaves_reward(answer, SOLUTION, whole_text=True) == 1.0
    wrong = answer.replace("Ethan is a knave", "Ethan is a knight")
    assert knights_knaves_reward(wrong, SOLUTION, whole_text=True) == 0.0


def test_agrees_with_reasoning_gyms_scorer_on_full_credit():
    """reasoning-gym 0.1.25's scorer reads the whole answer; both formats get its full score and ours."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset("knights_knaves", n_people=3, seed=1, size=1)
    entry = dataset[0]
    names, truthful = entry["metadata"]["names"], entry["metadata"]["solution"]
    knight, knave = entry["metadata"]["knight_knave_terms"]["knight"], entry["metadata"]["knight_knave_terms"]["knave"]
    roles = [knight if t else knave for t in truthful]
    lines = "\n".join(f"({i}) {n} is a {r}" for i, (n, r) in enumerate(zip(names, roles), start=1))
    for answer in (entry["answer"], lines):
        assert dataset.score_answer(answer, entry) == 1.0
        assert knights_knaves_reward(f"<answer>{answer}</answer>", entry["answer"]) == 1.0
        assert knights_knaves_reward(answer, entry["answer"], whole_text=True) == 1.0
    flipped = lines.replace(f"{names[0]} is a {roles[0]}", f"{names[0]} is a {knave if truthful[0] else knight}")
    assert dataset.score_answer(flipped, entry) < 1.0
    assert knights_knaves_reward(flipped, entry["answer"], whole_text=True) == 0.0
