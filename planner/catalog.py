"""The catalog: LLMs, accelerators, API price sheets, cloud GPU prices, servers, tokenizers.

The catalog is data, not code: CSV files under ``models/`` in the source tree (shipped inside
the wheel as ``planner/_catalog``), one row per entry, every row with ``source`` and ``as_of``.
Adding a GPU, a model or a price sheet means adding a row. Column definitions live in
``docs/catalog-schema.md``.

Set ``PLANNER_CATALOG=/path/to/dir`` to use another catalog directory (same file names).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import CatalogError

if TYPE_CHECKING:  # pandas is imported where a DataFrame is built: a scenario's look-ups
    import pandas as pd  # (validate, cost) read plain Python rows and never import it

#: table name -> (file name, id column)
TABLES: dict[str, tuple[str, str]] = {
    "llms": ("llms.csv", "id"),
    "accelerators": ("accelerators.csv", "id"),
    "apis": ("api_prices.csv", "id"),
    "clouds": ("cloud_prices.csv", "id"),
    "servers": ("servers.csv", "id"),
    "tokenizers": ("tokenizers.csv", None),
}

_KIND_LABEL = {
    "llms": "LLM",
    "accelerators": "accelerator",
    "apis": "API offering",
    "clouds": "cloud GPU offering",
    "servers": "on-prem server",
}

_TEXT_COLUMNS = {
    "id", "display_name", "family", "attention", "quality_benchmark", "tokenizer", "source",
    "as_of", "vendor", "interconnect", "notes", "provider", "model", "llm", "accelerator",
    "instance_type", "plan", "lang", "unit", "device_mem_source", "device_mem_as_of",
}


def catalog_dir() -> Path:
    """Return the directory the catalog is read from.

    Order: ``$PLANNER_CATALOG``; the copy shipped in the installed package
    (``planner/_catalog``); the source tree's ``models/``.
    """
    env = os.environ.get("PLANNER_CATALOG")
    if env:
        p = Path(env)
        if not p.is_dir():
            raise CatalogError(f"PLANNER_CATALOG={env!r} is not a directory")
        return p
    shipped = Path(str(resources.files("planner"))) / "_catalog"
    if (shipped / "llms.csv").is_file():
        return shipped
    tree = Path(__file__).resolve().parent.parent / "models"
    if (tree / "llms.csv").is_file():
        return tree
    raise CatalogError(
        "catalog not found: neither the installed package's planner/_catalog nor the source "
        "tree's models/ holds llms.csv; reinstall planner or set PLANNER_CATALOG"
    )


def _clean(value: Any) -> Any:
    """A DataFrame cell as a plain Python value (NaN -> None, numpy scalars -> Python)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return value


@lru_cache(maxsize=1)
def _text_dtype() -> Any:
    """The dtype ``pd.read_csv(dtype=str)`` gives text (object before pandas 3, str since)."""
    import pandas as pd

    return pd.read_csv(io.StringIO("a\nx\n"), dtype=str, keep_default_na=False)["a"].dtype


#: a cell :func:`float` and ``pd.to_numeric`` read alike (ASCII digits, optional sign, point
#: and exponent); anything else in a number column is text, or goes to pandas (below)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")
#: cells ``pd.to_numeric`` may read as numbers that :data:`_NUMBER` does not match: a file
#: with one goes to the pandas reader
_PANDAS_NUMBERS = {"inf", "infinity", "nan"}
_NUMBER_CHARS = frozenset("0123456789+-.e")


@dataclass(frozen=True)
class _Table:
    """One catalog CSV as typed Python columns, and as a DataFrame on demand.

    ``columns`` maps each column to its cells: text as ``str`` (blank ``None``), true/false
    as ``bool`` (blank ``None``), numbers as ``float`` (blank ``nan``) -- the values the
    DataFrame of :func:`_read_table` holds. Look-ups read these lists, so loading a scenario
    does not import pandas (~0.2-0.4 s of every command); :attr:`frame` builds the DataFrame
    the first time a caller asks for one.
    """

    columns: dict[str, list[Any]]
    kinds: dict[str, str]  # column -> "text" | "bool" | "float"
    _frame: Any = field(default=None, compare=False, repr=False)

    @property
    def nrows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @cached_property
    def frame(self) -> pd.DataFrame:
        if self._frame is not None:
            return self._frame
        import pandas as pd

        out: dict[str, pd.Series] = {}
        for col, cells in self.columns.items():
            kind = self.kinds[col]
            if kind == "text":
                out[col] = pd.Series(cells, dtype=_text_dtype())
            elif kind == "bool":
                out[col] = pd.Series(cells)
            else:
                out[col] = pd.Series(cells, dtype=float)
        return pd.DataFrame(out)

    def row(self, pos: int) -> dict[str, Any]:
        """Row ``pos`` as a dict of plain values (blank -> None), as :func:`_clean` gives."""
        return {c: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                for c, v in ((c, cells[pos]) for c, cells in self.columns.items())}


def _parse_table(path: Path) -> _Table | None:
    """One catalog CSV as a :class:`_Table`, read with the csv module (no pandas).

    Text columns (:data:`_TEXT_COLUMNS`) as str with blanks None; a column of true/false
    (and blanks) as bool; every other column float, unless a cell is not a number (then
    text). None when the file needs the pandas reader to be read exactly as before (no data
    rows, ragged rows, duplicate or blank column names, not CSV, a number cell pandas and
    :func:`float` might read differently such as ``inf``); a test compares the two readers
    on every catalog file and on edge cases.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError as exc:
        raise CatalogError(f"catalog file missing: {path}") from exc
    except (csv.Error, UnicodeDecodeError):
        return None
    rows = [r for r in rows if r]  # blank lines (pandas skips them)
    if rows and rows[0] and rows[0][0].startswith("\ufeff"):
        rows[0][0] = rows[0][0][1:]
    header = [c.strip() for c in rows[0]] if rows else []
    data = rows[1:]
    if (not data or len(set(header)) != len(header) or "" in header
            or any(len(r) != len(header) for r in data)):
        return None
    columns: dict[str, list[Any]] = {}
    kinds: dict[str, str] = {}
    for j, col in enumerate(header):
        s = [r[j].strip() for r in data]
        if col in _TEXT_COLUMNS:
            columns[col], kinds[col] = [v or None for v in s], "text"
            continue
        low = [v.lower() for v in s]
        if all(v in ("true", "false", "") for v in low) and any(v in ("true", "false")
                                                                for v in low):
            columns[col] = [{"true": True, "false": False}.get(v) for v in low]
            kinds[col] = "bool"
            continue
        text = False
        for v, lv in zip(s, low, strict=True):
            if v == "" or _NUMBER.fullmatch(v):
                continue
            if lv.lstrip("+-") in _PANDAS_NUMBERS or set(lv) <= _NUMBER_CHARS:
                return None
            text = True
        if text:
            columns[col], kinds[col] = [v or None for v in s], "text"
        else:
            columns[col] = [float(v) if v != "" else math.nan for v in s]
            kinds[col] = "float"
    return _Table(columns, kinds)


def _table_of_frame(df: pd.DataFrame) -> _Table:
    """A :class:`_Table` over a DataFrame of :func:`_read_table_pandas` (the DataFrame kept)."""
    columns: dict[str, list[Any]] = {}
    kinds: dict[str, str] = {}
    for c in df.columns:
        cells = df[c].tolist()
        if df[c].dtype.kind == "f":
            columns[c], kinds[c] = [float(v) for v in cells], "float"
        else:
            columns[c], kinds[c] = [_clean(v) for v in cells], "text"
    return _Table(columns, kinds, df)


def _read_table_fast(path: Path) -> _Table:
    """The catalog file at ``path`` as a :class:`_Table` (pandas only when it must)."""
    table = _parse_table(path)
    return table if table is not None else _table_of_frame(_read_table_pandas(path))


def _read_table(path: Path) -> pd.DataFrame:
    """One catalog CSV as a DataFrame: text columns as str with blanks None, true/false
    columns as bool (None for blanks), every other column float unless a cell is not a number
    (then text).

    Parsed with the csv module and typed column by column in Python (:func:`_parse_table`),
    one DataFrame built at the end: several times faster than the pandas string operations
    of :func:`_read_table_pandas`, which every command that loads a scenario paid, and equal
    to it (a test compares them on every catalog file). A file the fast path does not handle
    plainly goes through :func:`_read_table_pandas`.
    """
    return _read_table_fast(path).frame


def _read_table_pandas(path: Path) -> pd.DataFrame:
    """The reference reader (pandas throughout); :func:`_read_table` falls back to it."""
    import numpy as np
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, comment=None)
    except FileNotFoundError as exc:
        raise CatalogError(f"catalog file missing: {path}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot be read as CSV ({exc})") from exc
    df.columns = [c.strip() for c in df.columns]
    for col in df.columns:
        s = df[col].str.strip()
        if col in _TEXT_COLUMNS:
            df[col] = s.replace("", None)
            continue
        low = s.str.lower()
        if low.isin(["true", "false", ""]).all() and low.isin(["true", "false"]).any():
            df[col] = low.map({"true": True, "false": False, "": None})
            continue
        num = pd.to_numeric(s.replace("", np.nan), errors="coerce")
        bad = s.ne("") & num.isna()
        if bad.any():
            # a text column we did not know about: keep it as text
            df[col] = s.replace("", None)
        else:
            df[col] = num.astype(float)
    return df


class Catalog:
    """All catalog tables, with id look-ups that suggest near misses.

    The tables are read into plain Python columns (:class:`_Table`); ``llms``,
    ``accelerators``, ``apis``, ``clouds``, ``servers`` and ``tokenizers`` (and
    :meth:`table`) are pandas DataFrames built on first access, so the look-ups a scenario
    needs (:meth:`llm`, :meth:`cheapest_cloud`, :meth:`tokens_per_unit` ...) do not import
    pandas.
    """

    def __init__(self, directory: Path, tables: dict[str, _Table]):
        self.directory = directory
        self._tables = tables
        self._shared: dict[str, Any] = {}

    def shared(self, name: str, factory: Callable[[], Any]) -> Any:
        """The object ``name`` kept with this catalog, made by ``factory()`` on first use.

        For results that depend only on catalog rows and the caller's key, so that every user
        of one catalog shares them: e.g. the performance-model results of
        :class:`planner.model.capacity.CapacityCache`, which the engines of one report (or
        one sweep) would otherwise each compute again.
        """
        obj = self._shared.get(name)
        if obj is None:
            obj = self._shared.setdefault(name, factory())
        return obj

    def forget_shared(self, name: str) -> None:
        """Drop the object :meth:`shared` keeps as ``name`` (the next use makes a new one)."""
        self._shared.pop(name, None)

    def __repr__(self) -> str:
        return f"Catalog(directory={str(self.directory)!r})"

    llms = property(lambda self: self.table("llms"), doc="llms.csv as a DataFrame")
    accelerators = property(lambda self: self.table("accelerators"),
                            doc="accelerators.csv as a DataFrame")
    apis = property(lambda self: self.table("apis"), doc="api_prices.csv as a DataFrame")
    clouds = property(lambda self: self.table("clouds"), doc="cloud_prices.csv as a DataFrame")
    servers = property(lambda self: self.table("servers"), doc="servers.csv as a DataFrame")
    tokenizers = property(lambda self: self.table("tokenizers"),
                          doc="tokenizers.csv as a DataFrame")

    def _check_name(self, name: str) -> None:
        if name not in TABLES:
            raise CatalogError(
                f"unknown catalog table {name!r}; expected one of {', '.join(TABLES)}"
            )

    def table(self, name: str) -> pd.DataFrame:
        """Return one table by name (``llms``, ``accelerators``, ``apis``, ...) as a DataFrame."""
        self._check_name(name)
        return self._tables[name].frame

    def column(self, name: str, col: str) -> list[Any]:
        """One column of a table as a list (text blanks None, number blanks NaN), without
        building a DataFrame; a copy, callers may change it."""
        self._check_name(name)
        return list(self._tables[name].columns[col])

    def ids(self, name: str) -> list[str]:
        return self.column(name, "id")

    @cached_property
    def _index(self) -> _Index:
        """Dict indexes over the tables, built once per catalog (a look-up used to filter a
        DataFrame on every call; the model makes hundreds per scenario)."""
        return _Index(self)

    def _row(self, name: str, entry_id: str) -> dict[str, Any]:
        pos = self._index.position(name, entry_id)
        if pos is None:
            raise CatalogError(unknown_message(_KIND_LABEL[name], entry_id, self.ids(name)))
        return self._index.row(name, pos)

    def llm(self, entry_id: str) -> dict[str, Any]:
        """Row of ``llms.csv`` as a dict (numbers as float, blanks as None)."""
        return self._row("llms", entry_id)

    def accelerator(self, entry_id: str) -> dict[str, Any]:
        return self._row("accelerators", entry_id)

    def api(self, entry_id: str) -> dict[str, Any]:
        return self._row("apis", entry_id)

    def cloud(self, entry_id: str) -> dict[str, Any]:
        return self._row("clouds", entry_id)

    def server(self, entry_id: str) -> dict[str, Any]:
        return self._row("servers", entry_id)

    def cheapest_cloud(self, accelerator: str | None, plan: str, *,
                       required: bool = False) -> dict[str, Any] | None:
        """The cheapest priced ``cloud_prices.csv`` row for an accelerator and price plan.

        None when there is none, or a :class:`CatalogError` saying what to set when
        ``required``.
        """
        best = self._index.cheapest_cloud(accelerator, plan)
        if best is None:
            if required:
                raise CatalogError(
                    f"no {plan} cloud price for accelerator {accelerator!r} in the catalog; "
                    "set usd_per_gpu_hour"
                )
            return None
        return self._index.row("clouds", best)

    def has(self, name: str, entry_id: str) -> bool:
        self._check_name(name)
        return entry_id in self._index.exact(name)

    def tokens_per_unit(self, tokenizer: str, lang: str, unit: str) -> dict[str, Any]:
        """Tokens per word or per character for a tokenizer family and language.

        Falls back to any tokenizer's row for that language and unit when the family has
        none, and says which row it used (``tokenizer`` key of the result).
        """
        positions = self._index.tokenizers().get((lang, unit)) if (
            lang is not None and unit is not None) else None
        if not positions:
            t = self._tables["tokenizers"].columns
            known = sorted({f"{lang}/{unit}" for lang, unit in zip(t["lang"], t["unit"],
                                                                   strict=True)})
            raise CatalogError(
                f"no tokens-per-{unit} ratio for language {lang!r} in tokenizers.csv; "
                f"known: {', '.join(known)}; give tokens_per_{unit} in the scenario instead"
            )
        exact = [i for i, t in positions if tokenizer is not None and t == tokenizer]
        return self._index.row("tokenizers", exact[0] if exact else positions[0][0])


class _Index:
    """Look-up dicts over a :class:`Catalog`'s tables, each built on first use.

    Rows are cleaned (:func:`_clean`) once and handed out as fresh dicts, exactly as the
    DataFrame filters they replace returned them (first row in file order wins).
    """

    def __init__(self, cat: Catalog):
        self.cat = cat
        self._exact: dict[str, dict[Any, int]] = {}
        self._lower: dict[str, dict[str, int]] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._tokenizers: dict[tuple[Any, Any], list[tuple[int, Any]]] | None = None
        self._clouds: dict[tuple[Any, Any], int | None] = {}

    def exact(self, name: str) -> dict[Any, int]:
        if name not in self._exact:
            ids = self.cat._tables[name].columns["id"]
            exact: dict[Any, int] = {}
            lower: dict[str, int] = {}
            for i, v in enumerate(ids):
                if isinstance(v, str):  # (a blank id matches nothing, as in a DataFrame)
                    exact.setdefault(v, i)
                    lower.setdefault(v.lower(), i)
            self._exact[name], self._lower[name] = exact, lower
        return self._exact[name]

    def position(self, name: str, entry_id: Any) -> int | None:
        """Row of ``entry_id`` in table ``name``: the exact id, else a case-insensitive match."""
        exact = self.exact(name)
        try:
            pos = exact.get(entry_id)
        except TypeError:  # unhashable: matches no id
            pos = None
        if pos is None:
            pos = self._lower[name].get(str(entry_id).lower())
        return pos

    def row(self, name: str, pos: int) -> dict[str, Any]:
        key = (name, pos)
        if key not in self._rows:
            self._rows[key] = self.cat._tables[name].row(pos)
        return dict(self._rows[key])

    def tokenizers(self) -> dict[tuple[Any, Any], list[tuple[int, Any]]]:
        """(lang, unit) -> [(row, tokenizer), ...] in file order."""
        if self._tokenizers is None:
            t = self.cat._tables["tokenizers"].columns
            out: dict[tuple[Any, Any], list[tuple[int, Any]]] = {}
            for i, (lang, unit, tok) in enumerate(zip(t["lang"], t["unit"], t["tokenizer"],
                                                      strict=True)):
                out.setdefault((lang, unit), []).append((i, tok))
            self._tokenizers = out
        return self._tokenizers

    def cheapest_cloud(self, accelerator: Any, plan: Any) -> int | None:
        """Row of the cheapest priced cloud offering (first in file order on a tie)."""
        key = (accelerator, plan)
        if accelerator is None or plan is None:  # None equals no cell, as in a DataFrame
            return None
        if key not in self._clouds:
            t = self.cat._tables["clouds"].columns
            best, best_price = None, None
            for i, (acc, pl, price) in enumerate(zip(
                    t["accelerator"], t["plan"], t["usd_per_gpu_hour"], strict=True)):
                if acc != accelerator or pl != plan or price is None or price != price:
                    continue
                if best_price is None or price < best_price:
                    best, best_price = i, price
            self._clouds[key] = best
        return self._clouds[key]


def unknown_message(kind: str, value: str, known: list[str]) -> str:
    """'unknown X 'y'; did you mean ...?' with difflib suggestions."""
    close = difflib.get_close_matches(str(value), known, n=3, cutoff=0.5)
    msg = f"unknown {kind} {value!r}"
    if close:
        msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    else:
        msg += f"; known: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}"
    return msg + " (see `planner catalog list`)"


@lru_cache(maxsize=4)
def _load(directory: str) -> Catalog:
    d = Path(directory)
    tables = {name: _read_table_fast(d / fname) for name, (fname, _) in TABLES.items()}
    for name, (fname, idcol) in TABLES.items():
        if idcol is None:
            continue
        cells = tables[name].columns.get(idcol)
        if cells is None:
            raise CatalogError(f"{d / fname}: no '{idcol}' column")
        seen: set[Any] = set()
        dup = []
        for v in cells:
            key = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
            if key in seen:
                dup.append(key)
            seen.add(key)
        if dup:
            raise CatalogError(f"{d / fname}: duplicate ids {sorted(set(dup))}")
    return Catalog(d, tables)


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Load (and cache) the catalog from ``directory`` or :func:`catalog_dir`."""
    return _load(str(directory or catalog_dir()))
