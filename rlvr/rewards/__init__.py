"""Verifiable rewards: plain callables, text in, a float (or a `RewardResult`) out.

Every named reward is in `REWARDS` under the uniform signature `fn(response, answer) -> float`.
"""

from rlvr.rewards.arithmetic import UnsafeExpression, evaluate_arithmetic
from rlvr.rewards.base import REWARDS, CompositeReward, RewardResult
from rlvr.rewards.choice import choice_reward, parse_choice
from rlvr.rewards.code import code_reward, run_tests
from rlvr.rewards.countdown import countdown_reward, extract_countdown_expression
from rlvr.rewards.format import extract_answer_tag, format_reward
from rlvr.rewards.gsm8k import extract_gsm8k_answer, gsm8k_reward, last_number, last_number_reward, parse_number
from rlvr.rewards.knights_knaves import knights_knaves_reward, parse_knights_knaves
from rlvr.rewards.math_answer import MathCheck, MathVerifier, math_check, math_reward, math_verify_stats
from rlvr.rewards.math_dapo import extract_dapo_answer, math_dapo_reward, normalize_dapo_answer
from rlvr.rewards.simple import exact_reward, symbol_reward

__all__ = [
    "REWARDS",
    "CompositeReward",
    "MathCheck",
    "MathVerifier",
    "RewardResult",
    "choice_reward",
    "code_reward",
    "parse_choice",
    "run_tests",
    "UnsafeExpression",
    "countdown_reward",
    "evaluate_arithmetic",
    "exact_reward",
    "extract_answer_tag",
    "extract_countdown_expression",
    "extract_dapo_answer",
    "extract_gsm8k_answer",
    "format_reward",
    "gsm8k_reward",
    "knights_knaves_reward",
    "last_number",
    "last_number_reward",
    "math_check",
    "math_dapo_reward",
    "math_reward",
    "math_verify_stats",
    "normalize_dapo_answer",
    "parse_knights_knaves",
    "parse_number",
    "symbol_reward",
]
