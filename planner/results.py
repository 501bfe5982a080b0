"""Tidy tables kept as plain rows until a DataFrame is asked for.

The engines' results are tidy :class:`pandas.DataFrame` tables (the Python API), but importing
pandas costs more than the whole ``planner cost`` computation. So the deterministic engine keeps
each table as :class:`Records` (the row dicts and the column order it would have handed to
:meth:`pandas.DataFrame.from_records`) and a result class deriving from :class:`LazyFrames`
turns a table into that very DataFrame on first access (then caches it). The CLI prints the
``table`` and ``json`` formats straight from the rows (:func:`render_tables`), byte for byte
what :func:`planner.output.render_tables` prints for the DataFrames, for the column types it
knows (text, numbers, integers, booleans, missing); for anything else it returns None and
the caller builds the DataFrames.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Records:
    """A table as row dicts plus its column order (``DataFrame.from_records(rows, columns)``).

    ``columns`` empty and no rows stands for ``pandas.DataFrame()``.
    """

    rows: Sequence[Mapping[str, Any]]
    columns: tuple[str, ...]

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Records:
        return cls(list(rows), tuple(columns))

    @classmethod
    def none(cls) -> Records:
        """The empty table (``pandas.DataFrame()``)."""
        return cls([], ())

    @property
    def empty(self) -> bool:
        """As ``DataFrame.empty``: no rows or no columns."""
        return not self.rows or not self.columns

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        if not self.columns and not self.rows:
            return pd.DataFrame()
        return pd.DataFrame.from_records(list(self.rows), columns=list(self.columns))


class LazyFrames:
    """Mixin for (frozen) dataclasses whose DataFrame attributes may hold :class:`Records`:
    reading such an attribute builds the DataFrame once and keeps it in place of the rows.
    :meth:`raw` reads an attribute as stored (Records or DataFrame) without converting."""

    def __getattribute__(self, name: str) -> Any:
        v = object.__getattribute__(self, name)
        if type(v) is Records:
            v = v.frame()
            object.__setattr__(self, name, v)
        return v

    def raw(self, name: str) -> Any:
        """The attribute ``name`` as stored: :class:`Records` until first read, then the
        DataFrame."""
        return object.__getattribute__(self, name)


# -- printing without pandas ----------------------------------------------------------------

#: what DataFrame.from_records makes of a column, for the kinds printed here
_TEXT, _FLOAT, _INT, _BOOL, _NONE = "text", "float", "int", "bool", "none"


def _kind(values: list[Any]) -> str | None:
    """The pandas dtype ``from_records`` gives a column of these values, for the cases
    printed without pandas: text (str and None: object), numbers (float64, None as NaN),
    integers (int64), booleans (bool), all None (object); None for anything else."""
    import numpy as np

    kinds = set()
    for v in values:
        if v is None:
            kinds.add(_NONE)
        elif isinstance(v, str):
            kinds.add(_TEXT)
        elif isinstance(v, bool | np.bool_):
            kinds.add(_BOOL)
        elif isinstance(v, int | np.integer):
            kinds.add(_INT)
        elif isinstance(v, float | np.floating) and not isinstance(v, np.longdouble):
            kinds.add(_FLOAT)
        else:
            return None
    if kinds <= {_TEXT, _NONE}:
        return _TEXT if _TEXT in kinds else _NONE
    if kinds <= {_FLOAT, _INT, _NONE} and (_FLOAT in kinds or _NONE not in kinds):
        if kinds == {_INT}:
            # int64 unless a value does not fit
            return _INT if all(-2**63 <= int(v) < 2**63 for v in values) else None
        return _FLOAT
    if kinds == {_BOOL}:
        return _BOOL
    return None


@functools.cache
def _missing_text() -> Any:
    """A missing value of a text column as the DataFrame holds it: NaN in pandas 3's ``str``
    dtype, None in the object columns of pandas 2 (read from the installed version's
    metadata, without importing pandas)."""
    from importlib.metadata import version

    return math.nan if int(version("pandas").split(".")[0]) >= 3 else None


def _columns(rec: Records) -> list[tuple[str, list[Any]]] | None:
    """``(name, values)`` per column, the values as the DataFrame holds them (numbers of a
    float column as float, NaN for None), or None when pandas is needed."""
    import numpy as np

    out = []
    if len(set(rec.columns)) != len(rec.columns):
        return None
    for c in rec.columns:
        if not isinstance(c, str) or any(c not in r for r in rec.rows):
            return None
        values = [r[c] for r in rec.rows]
        kind = _kind(values)
        if kind is None:
            return None
        if kind == _TEXT and None in values:
            missing = _missing_text()
            values = [missing if v is None else v for v in values]
        elif kind == _FLOAT:
            values = [math.nan if v is None else float(v) for v in values]
            values = [np.float64(v) for v in values]
        elif kind == _INT:
            values = [np.int64(v) for v in values]
        elif kind == _BOOL:
            values = [np.bool_(v) for v in values]
        out.append((c, values))
    return out


def _escape(s: str) -> str:
    """As pandas' ``to_string`` shows a cell: tab, newline and carriage return escaped."""
    return s.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _text_table(cols: list[tuple[str, list[Any]]], n_rows: int,
                max_colwidth: int = 60) -> str:
    """:func:`planner.output.render` ``"table"`` format: cells through ``_fmt`` and
    ``clean_text``, cut at ``max_colwidth``, then ``DataFrame.to_string(index=False)`` of the
    string cells: tabs and newlines escaped, each column right-justified to its widest cell
    or header, one space apart."""
    from planner.errors import clean_text
    from planner.output import _fmt

    if not cols or not n_rows:
        return "(none)"
    lines = [[] for _ in range(n_rows + 1)]
    for name, values in cols:
        cells = [clean_text(_fmt(v)) for v in values]
        cells = [_escape(s if len(s) <= max_colwidth else s[: max_colwidth - 1] + "…")
                 for s in cells]
        head = _escape(clean_text(name))
        width = max(len(head), *(len(s) for s in cells))
        lines[0].append(head.rjust(width))
        for i, s in enumerate(cells):
            lines[i + 1].append(s.rjust(width))
    return "\n".join(" ".join(parts) for parts in lines)


def _ujson_double(v: float) -> float | None:
    """The float ``json.loads`` reads back from pandas' ``to_json(double_precision=15)`` of
    ``v`` (its ujson encoder: fixed point rounded to 15 decimals, ``%.15g`` beyond 1e16 - 1
    or below 1e-15; NaN and infinities as null)."""
    if not math.isfinite(v):
        return None
    neg = v < 0
    a = -v if neg else v
    if a > 1e16 - 1 or (a != 0.0 and a < 1e-15):
        return float("%.15g" % (-a if neg else a))
    pow10 = 1e15
    whole = int(a)  # truncation, as the C cast
    tmp = (a - float(whole)) * pow10
    frac = int(tmp)
    diff = tmp - float(frac)
    if diff > 0.5 or (diff == 0.5 and (frac == 0 or frac & 1)):
        frac += 1
    if frac >= pow10:
        frac = 0
        whole += 1
    text = f"{whole}.{str(frac).rjust(15, '0').rstrip('0') or '0'}"
    return float("-" + text if neg else text)


def _json_value(v: Any) -> Any:
    import numpy as np

    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return _ujson_double(float(v))
    return v


def render_tables(tables: Mapping[str, Records], fmt: str = "table") -> str | None:
    """:func:`planner.output.render_tables` of the tables' DataFrames, from their rows, for
    the ``table`` and ``json`` formats; None when that needs pandas (another format, or a
    column of a type not handled here)."""
    if fmt not in ("table", "json"):
        return None
    from planner.errors import clean_text

    parsed = {}
    for name, rec in tables.items():
        cols = _columns(rec)
        if cols is None:
            return None
        parsed[name] = cols, len(rec.rows)
    if fmt == "json":
        return json.dumps(
            {k: [{c: _json_value(vals[i]) for c, vals in cols} for i in range(n)]
             for k, (cols, n) in parsed.items()},
            indent=1)
    return "\n\n".join(f"== {clean_text(k)} ==\n{_text_table(cols, n)}"
                       for k, (cols, n) in parsed.items())
