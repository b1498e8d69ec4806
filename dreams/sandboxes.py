"""Ready-made sandbox callables for generic pure tools, to name in `Agent.sandbox_tools`.

A pure tool's answer depends on its arguments only (no systems read, nothing written), so a
replay may compute it whenever the model rewords the arguments. Mark the tool pure
(`Agent.pure_tools`) and map it to one of these, e.g.
``{"think": "dreams.sandboxes.think", "calculate": "dreams.sandboxes.calculate"}``.
Every sandbox callable takes ``(arguments, *, recorded_calls, run)``.
"""

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 100


class CalculationError(ValueError):
    """The expression is not plain arithmetic on numbers."""


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    raise CalculationError(f"not arithmetic: {type(node).__name__}")


def calculate(arguments: dict[str, Any], *, recorded_calls: Any = None, run: Any = None) -> str:
    """A calculator: evaluates `expression` (numbers, + - * / // % ** and parentheses)."""
    expression = str(arguments.get("expression", ""))[:MAX_EXPRESSION_CHARS]
    try:
        value = _evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, CalculationError, ZeroDivisionError, OverflowError) as exc:
        return f"Error: {exc}"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    return str(round(value, 10) if isinstance(value, float) else value)


def think(arguments: dict[str, Any], *, recorded_calls: Any = None, run: Any = None) -> str:
    """A "think" tool: the thought is the model's own note; the tool answers nothing."""
    return ""
