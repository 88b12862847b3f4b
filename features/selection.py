"""Which latents an export (or the API) works on: `--flagged | --set NAME | --features 3,17 | --where EXPR`.

`--where` takes a small boolean expression over the feature table's columns, e.g.
`flag and labelability < 0.2` or `well_defined & (best_describer == "rule")`. It is parsed with `ast` and evaluated
by walking a whitelist of node types (comparisons, `and/or/not`, `& | ~`, arithmetic, column names, literals and
lists/tuples of literals for `in`); anything else (calls, attributes, subscripts, lambdas, comprehensions) is
refused, so an expression can never run code. `pandas.DataFrame.query` is not used: with `engine="python"` it
evaluates attribute access and calls. Its size is bounded before it is parsed (characters, operators, bracket
depth: the parser and the walk recurse once per level), and arithmetic takes only numbers and numeric columns, so
no expression can exhaust the stack or the memory (`'a' * 100000000000` is refused, not computed).
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from activations.errors import UserError

KINDS = ("flagged", "set", "features", "where")
MAX_EXPR = 2000
MAX_OPERATORS = 100  # operators and keywords (and, or, not, in); each adds at most one level to the parse
MAX_BRACKETS = 20  # bracket nesting depth
MAX_INDEX = 2**62  # bigger latent indices are refused before they reach numpy (int64)


@dataclass(frozen=True)
class Selection:
    """One way of choosing latents (exactly one of the CLI's selection options)."""

    kind: str
    """"flagged", "set", "features" or "where"."""
    value: Any = None
    """The set name, the list of latent indices, or the expression; None for "flagged"."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"selection kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @classmethod
    def flagged(cls) -> Selection:
        return cls("flagged")

    @classmethod
    def from_set(cls, name: str) -> Selection:
        return cls("set", name)

    @classmethod
    def from_features(cls, features: Any) -> Selection:
        return cls("features", tuple(int(operator.index(f)) for f in features))

    @classmethod
    def where(cls, expr: str) -> Selection:
        return cls("where", expr)

    def describe(self) -> str:
        """How the selection reads on a command line (recorded in exports)."""
        if self.kind == "flagged":
            return "--flagged"
        if self.kind == "features":
            return "--features " + ",".join(map(str, self.value))
        return f"--{self.kind} {self.value!r}"


@dataclass(frozen=True)
class Selected:
    """The resolved selection: sorted unique latent indices plus a name and description for the export."""

    features: np.ndarray  # (n,) int64, sorted, unique, n >= 1
    name: str
    description: str
    selection: str  # Selection.describe()


def parse_features(text: str) -> tuple[int, ...]:
    """'3,17, 40' -> (3, 17, 40); UserError naming --features on anything else."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError("--features: empty list; give latent indices such as 3,17,40")
    out = []
    for p in parts:
        if not p.lstrip("-").isdigit():
            raise UserError(f"--features: {p[:40]!r} is not a latent index (give integers such as 3,17,40)")
        if len(p) > 19 or abs(int(p)) > MAX_INDEX:
            raise UserError(f"--features: latent {p[:40]} is out of range")
        out.append(int(p))
    return tuple(out)


def coerce(selection: Any) -> Selection:
    """A Selection from what the Python API accepts: a Selection, a FeatureSet, a list of ints, or "flagged"."""
    from features.store.sets import FeatureSet

    if isinstance(selection, Selection):
        return selection
    if isinstance(selection, FeatureSet):
        return Selection.from_set(selection.name)
    if isinstance(selection, str):
        if selection == "flagged":
            return Selection.flagged()
        raise UserError(
            f"selection {selection!r}: use Selection.from_set(name), Selection.where(expr), a list of latent "
            "indices, or 'flagged'"
        )
    if isinstance(selection, np.ndarray | list | tuple | range | pd.Index | pd.Series):
        try:
            return Selection.from_features(list(selection))
        except TypeError:
            raise UserError("selection: latent indices must be integers") from None
    raise UserError(f"selection: cannot select latents with a {type(selection).__name__}")


def resolve(table: pd.DataFrame, selection: Selection, run: Any = None) -> Selected:
    """The latents a selection picks from a feature table (one row per latent, column `feature`).

    UserError (one line) on an empty result, an index out of range, an unknown set, or a bad expression.
    """
    n = len(table)
    if selection.kind == "flagged":
        if "flag" not in table.columns:
            raise UserError("--flagged: the feature table has no 'flag' column (was the run scored?)")
        idx = np.flatnonzero(table["flag"].fillna(False).to_numpy(bool))
        name, desc = "flagged", "well defined (WDF C1-C4) but not labelable (LBL flag)"
        if len(idx) == 0:
            raise UserError("--flagged: no latent of this run is flagged; the selection is empty")
    elif selection.kind == "set":
        from features.store.sets import get_set

        if run is None:
            raise UserError("--set: feature sets need the run folder")
        fs = get_set(run, selection.value)
        idx = np.asarray(fs.features, np.int64)
        name, desc = fs.name, fs.description
        if len(idx) == 0:
            raise UserError(f"--set: the feature set {fs.name!r} is empty")
        _check_range(idx, n, "--set")
    elif selection.kind == "features":
        big = [i for i in selection.value if not -MAX_INDEX <= i <= MAX_INDEX]
        if big:  # numpy would overflow on it
            raise UserError(
                f"--features: latent {str(big[0])[:40]} is out of range (the run has {n} latents)"
            )
        idx = np.asarray(selection.value, np.int64)
        if len(idx) == 0:
            raise UserError("--features: empty list; the selection is empty")
        _check_range(idx, n, "--features")
        name, desc = "features", "latents chosen by index"
    else:
        mask = evaluate_where(table, selection.value)
        idx = np.flatnonzero(mask)
        name, desc = "where", f"latents where {selection.value}"
        if len(idx) == 0:
            raise UserError(f"--where: no latent matches {selection.value!r}; the selection is empty")
    feats = np.unique(
        table["feature"].to_numpy(np.int64)[idx] if selection.kind in ("flagged", "where") else idx
    )
    return Selected(feats, name, desc, selection.describe())


def _check_range(idx: np.ndarray, n: int, option: str) -> None:
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise UserError(
            f"{option}: latent {int(bad[0])} is out of range (the run has {n} latents, 0..{n - 1})"
        )


# ---- the --where expression ---------------------------------------------------------------------------------------

_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.BitAnd: "and",
    ast.BitOr: "or",
}


def check_size(expr: str) -> None:
    """Bound an expression's length, operator count and bracket depth before it reaches the (recursive) parser."""
    if len(expr) > MAX_EXPR:
        raise UserError(f"--where: expression longer than {MAX_EXPR} characters")
    ops = depth = deepest = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(expr).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
                deepest = max(deepest, depth)
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            elif tok.type == tokenize.OP or tok.string in ("and", "or", "not", "in", "is"):
                ops += 1
    except (tokenize.TokenError, SyntaxError) as err:
        raise UserError(f"--where: not a valid expression ({err.args[0]}): {expr[:80]!r}") from None
    if ops > MAX_OPERATORS:
        raise UserError(f"--where: more than {MAX_OPERATORS} operators; write a shorter condition")
    if deepest > MAX_BRACKETS:
        raise UserError(f"--where: brackets nested more than {MAX_BRACKETS} deep; write a flatter condition")


def evaluate_where(table: pd.DataFrame, expr: str) -> np.ndarray:
    """(n,) bool: rows of `table` where the expression holds (NaN comparisons are False)."""
    if not isinstance(expr, str) or not expr.strip():
        raise UserError("--where: empty expression")
    check_size(expr)
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise UserError(f"--where: not a valid expression ({err.msg}): {expr!r}") from None
    out = _Eval(table, expr).visit(tree.body)
    if np.isscalar(out) or not isinstance(out, pd.Series):
        raise UserError(
            f"--where: {expr!r} does not refer to any column; compare columns, e.g. 'labelability < 0.2'"
        )
    if not (pd.api.types.is_bool_dtype(out.dtype) or out.dtype == object and out.map(type).eq(bool).all()):
        raise UserError(f"--where: {expr!r} is not a true/false condition (it gives {out.dtype} values)")
    return out.fillna(False).to_numpy(bool)


class _Eval:
    """Walks a parsed expression over pandas Series; only whitelisted nodes are evaluated."""

    def __init__(self, table: pd.DataFrame, expr: str) -> None:
        self.table = table
        self.expr = expr

    def refuse(self, node: ast.AST, what: str) -> UserError:
        return UserError(
            f"--where: {what} is not allowed in {self.expr!r}; use column names, numbers, strings, "
            "comparisons, and/or/not"
        )

    def visit(self, node: ast.AST) -> Any:  # noqa: ANN401 - a Series or a literal
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool | int | float | str) or node.value is None:
                return node.value
            raise self.refuse(node, f"the literal {node.value!r}")
        if isinstance(node, ast.Name):
            if node.id not in self.table.columns:
                cols = ", ".join(map(str, self.table.columns))
                raise UserError(f"--where: unknown column {node.id!r} (columns: {cols})")
            return self.table[node.id]
        if isinstance(node, ast.List | ast.Tuple):
            vals = [self.visit(e) for e in node.elts]
            if any(isinstance(v, pd.Series) for v in vals):
                raise self.refuse(node, "a list of columns")
            return vals
        if isinstance(node, ast.BoolOp):
            vals = [self._as_bool(self.visit(v)) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = self.visit(node.operand)
            if isinstance(node.op, ast.Not | ast.Invert):
                return ~self._as_bool(v) if isinstance(v, pd.Series) else not v
            if isinstance(node.op, ast.USub):
                return self._guard(lambda: -self._number(v, node))
            if isinstance(node.op, ast.UAdd):
                return self._guard(lambda: +self._number(v, node))
            raise self.refuse(node, type(node.op).__name__)
        if isinstance(node, ast.BinOp):
            op = _BIN.get(type(node.op))
            if op is None:
                raise self.refuse(node, f"the operator {type(node.op).__name__}")
            a, b = self.visit(node.left), self.visit(node.right)
            if op == "and":
                return self._as_bool(a) & self._as_bool(b)
            if op == "or":
                return self._as_bool(a) | self._as_bool(b)
            return self._guard(lambda: op(self._number(a, node), self._number(b, node)))
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            out = None
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self.visit(comp)
                if isinstance(op, ast.In | ast.NotIn):
                    if not isinstance(right, list) or not isinstance(left, pd.Series):
                        raise self.refuse(node, "'in' without a column on the left and a list on the right")
                    res = left.isin(right)
                    res = ~res if isinstance(op, ast.NotIn) else res
                elif type(op) in _CMP:
                    res = self._guard(lambda op=op, left=left, right=right: _CMP[type(op)](left, right))
                else:
                    raise self.refuse(node, f"the comparison {type(op).__name__}")
                out = res if out is None else (out & res)
                left = right
            return out
        raise self.refuse(node, f"a {type(node).__name__}")

    def _as_bool(self, v: Any) -> Any:  # noqa: ANN401
        if isinstance(v, pd.Series):
            if pd.api.types.is_bool_dtype(v.dtype):
                return v.fillna(False).astype(bool)
            raise UserError(f"--where: column {v.name!r} is not true/false; compare it, e.g. '{v.name} > 0'")
        return bool(v)

    def _number(self, v: Any, node: ast.AST) -> Any:  # noqa: ANN401
        """`v` if arithmetic may use it (a number or a numeric column); text or lists could be repeated 10^11 times."""
        if isinstance(v, pd.Series):
            if pd.api.types.is_numeric_dtype(v.dtype):
                return v
            raise self.refuse(node, f"arithmetic on the non-numeric column {v.name!r}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return v
        raise self.refuse(node, f"arithmetic on {type(v).__name__} {str(v)[:20]!r}")

    def _guard(self, fn: Any) -> Any:  # noqa: ANN401
        try:
            return fn()
        except (TypeError, ValueError, ArithmeticError) as err:
            raise UserError(f"--where: cannot evaluate {self.expr[:200]!r} ({err})") from None
