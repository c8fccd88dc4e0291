"""A safe evaluator of arithmetic written by a model: + - * / on integers, exact, bounded.

Model text is never passed to `eval`. The expression is parsed with `ast.parse(mode="eval")` and
walked by a whitelist: only `Expression`, `BinOp` with `Add/Sub/Mult/Div`, `UnaryOp` with
`UAdd/USub`, and integer `Constant`s are accepted; anything else (names, calls, attributes,
lambdas, `**`, `//`, `%`, comparisons, floats, strings) is rejected before any arithmetic runs.
Values are `fractions.Fraction`, so 1/3*3 == 1 exactly. Limits keep hostile input cheap: the text
length is checked before parsing (so a 10^4-deep nest never reaches the parser), the tree depth is
bounded, and every intermediate numerator and denominator must stay below `max_abs`, so no input
can make the evaluator build huge numbers.
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

MAX_CHARS = 256
MAX_DEPTH = 32
MAX_ABS = 10**12

_ALLOWED_CHARS = re.compile(r"^[0-9+\-*/().\s]*$")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# Common ways models write operators; everything else outside _ALLOWED_CHARS is rejected.
_SPELLINGS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("÷", "/"),
              ("−", "-"), ("\\left(", "("), ("\\right)", ")"), ("\\(", ""), ("\\)", ""), ("$", ""))


class UnsafeExpression(ValueError):
    """The text is not a plain arithmetic expression within the limits (the message says which)."""


def normalize_expression(text: str) -> str:
    """Map common operator spellings (×, ÷, \\times, \\cdot, unicode minus) to + - * / and drop `$`."""
    for old, new in _SPELLINGS:
        text = text.replace(old, new)
    return text.strip()


def parse_arithmetic(text: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH) -> ast.Expression:
    """Parse `text` into an AST containing only whitelisted arithmetic nodes, or raise UnsafeExpression.

    >>> parse_arithmetic("__import__('os').system('ls')")
    Traceback (most recent call last):
    ...
    rlvr.rewards.arithmetic.UnsafeExpression: characters other than digits, + - * / ( ) . and spaces
    """
    if len(text) > max_chars:
        raise UnsafeExpression(f"expression longer than {max_chars} characters")
    if not _ALLOWED_CHARS.match(text):
        raise UnsafeExpression("characters other than digits, + - * / ( ) . and spaces")
    if "**" in text or "//" in text:
        raise UnsafeExpression("only + - * / are allowed (no ** or //)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise UnsafeExpression(f"not an arithmetic expression ({type(e).__name__})") from None
    _check(tree.body, 1, max_depth)
    return tree


def _check(node: ast.AST, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise UnsafeExpression(f"expression nested deeper than {max_depth}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, depth + 1, max_depth)
        _check(node.right, depth + 1, max_depth)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, depth + 1, max_depth)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        pass
    else:
        raise UnsafeExpression(f"{type(node).__name__} is not allowed; only integers and + - * /")


def constants(tree: ast.AST) -> list[int]:
    """The integer literals of a parsed expression, left to right (unary minus not applied)."""
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]


def evaluate_arithmetic(
    text: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH, max_abs: int = MAX_ABS
) -> Fraction:
    """The exact value of an arithmetic expression, or UnsafeExpression (also on division by zero).

    >>> evaluate_arithmetic("(25 - 5) * 3 / 4")
    Fraction(15, 1)
    >>> evaluate_arithmetic("1 / 3 * 3")
    Fraction(1, 1)
    >>> evaluate_arithmetic("9**9**9**9")
    Traceback (most recent call last):
    ...
    rlvr.rewards.arithmetic.UnsafeExpression: only + - * / are allowed (no ** or //)
    """
    tree = parse_arithmetic(normalize_expression(text), max_chars=max_chars, max_depth=max_depth)
    return _eval(tree.body, max_abs)


def _eval(node: ast.AST, max_abs: int) -> Fraction:
    if isinstance(node, ast.Constant):
        value = Fraction(node.value)
    elif isinstance(node, ast.UnaryOp):
        value = _UNARY[type(node.op)](_eval(node.operand, max_abs))
    else:
        left, right = _eval(node.left, max_abs), _eval(node.right, max_abs)
        if isinstance(node.op, ast.Div) and right == 0:
            raise UnsafeExpression("division by zero")
        value = _BINOPS[type(node.op)](left, right)
    if abs(value.numerator) > max_abs or value.denominator > max_abs:
        raise UnsafeExpression(f"an intermediate value exceeds {max_abs:.0e} in magnitude")
    return value
