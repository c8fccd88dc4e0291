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
