"""User rules over frame fields and tags, e.g. ``speed_mps > 5 and tag == "night"``.

A rule is a Python-like boolean expression, parsed once at config load time and checked against a whitelist
(no function calls, attributes or subscripts), then evaluated per frame without ``eval``.

Names a rule may use (:data:`RULE_FIELDS`):
``speed_mps``, ``num_points``, ``frame_index``, ``log_id``, ``brightness`` (mean camera brightness 0-255),
``hour`` (UTC hour of the frame), and ``tag`` / ``tags``: ``tag == "night"`` is true when the frame has that tag,
``tag != "night"`` when it has not, ``"night" in tags`` likewise. Tags are the scenario tags (``day``/``night``,
``speed:<bin>``) and, for kept frames after the detector, the model-derived ones
(:func:`labeler.pipeline.filters.model_tags`: ``obj:<class>``, ``crowded``, ``vru_near``); only flag rules see
those, since drop rules run before the detector (:meth:`Rule.model_tags` lets the config refuse such a drop rule).
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

from labeler.errors import ConfigError

RULE_FIELDS = ("speed_mps", "num_points", "frame_index", "log_id", "brightness", "hour", "tag", "tags")

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Name,
            ast.Load, ast.Constant, ast.Tuple, ast.List) + tuple(_CMP)


@dataclass(frozen=True)
class Rule:
    name: str
    text: str
    tree: ast.Expression

    def __call__(self, fields: dict) -> bool:
        return bool(_eval(self.tree.body, fields))

    def model_tags(self) -> list[str]:
        """The model-derived tags the rule names (string constants such as ``"obj:bus"`` or ``"crowded"``)."""
        from labeler.pipeline.filters import is_model_tag

        return [n.value for n in ast.walk(self.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and is_model_tag(n.value)]


def compile_rule(name: str, text: str, where: str = "filter rules") -> Rule:
    """Parse and validate a rule; ConfigError naming the rule and the problem."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"{where}: rule {name!r} is not a valid expression ({e.msg} at column {e.offset}): {text!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConfigError(f"{where}: rule {name!r} uses {type(node).__name__}, which rules do not allow: {text!r}; "
                              "use comparisons, and/or/not, numbers and strings")
        if isinstance(node, ast.Name) and node.id not in RULE_FIELDS:
            raise ConfigError(f"{where}: rule {name!r} uses unknown field {node.id!r}; known fields: {', '.join(RULE_FIELDS)}")
        if isinstance(node, ast.Compare) and any(isinstance(x, ast.Name) and x.id == "tag" for x in [node.left, *node.comparators]):
            if not all(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                raise ConfigError(f"{where}: rule {name!r}: `tag` only supports == and != (use `\"x\" in tags` otherwise)")
    return Rule(name, text, tree)


def _eval(node, f):
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, f) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, f)
        return (not v) if isinstance(node.op, ast.Not) else -v
    if isinstance(node, ast.Compare):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(left, ast.Name) and left.id == "tag":
                ok = (_eval(right, f) in f["tags"]) == isinstance(op, ast.Eq)
            elif isinstance(right, ast.Name) and right.id == "tag":
                ok = (_eval(left, f) in f["tags"]) == isinstance(op, ast.Eq)
            else:
                ok = _CMP[type(op)](_eval(left, f), _eval(right, f))
            if not ok:
                return False
            left = right
        return True
    if isinstance(node, ast.Name):
        return f[node.id] if node.id != "tag" else None
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_eval(e, f) for e in node.elts]
    raise ValueError(f"unexpected node {type(node).__name__}")  # unreachable after compile_rule


def compile_rules(rules: dict[str, str], where: str) -> list[Rule]:
    return [compile_rule(n, t, where) for n, t in rules.items()]
