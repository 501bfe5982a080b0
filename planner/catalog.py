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
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.errors import CatalogError

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
    "instance_type", "plan", "lang", "unit",
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
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


@lru_cache(maxsize=1)
def _text_dtype() -> Any:
    """The dtype ``pd.read_csv(dtype=str)`` gives text (object before pandas 3, str since)."""
    return pd.read_csv(io.StringIO("a\nx\n"), dtype=str, keep_default_na=False)["a"].dtype


def _read_table(path: Path) -> pd.DataFrame:
    """One catalog CSV as a DataFrame: text columns as str with blanks None, true/false
    columns as bool (None for blanks), every other column float unless a cell is not a number
    (then text).

    Parsed with the csv module and typed column by column in Python (numbers still through
    ``pd.to_numeric``), one DataFrame built at the end: several times faster than the pandas
    string operations of :func:`_read_table_pandas`, which every command that loads a
    scenario paid, and equal to it (a test compares them on every catalog file). A file the
    fast path does not handle plainly (no data rows, ragged rows, duplicate column names)
    goes through :func:`_read_table_pandas`.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError as exc:
        raise CatalogError(f"catalog file missing: {path}") from exc
    except (csv.Error, UnicodeDecodeError):
        return _read_table_pandas(path)
    rows = [r for r in rows if r]  # blank lines (pandas skips them)
    if rows and rows[0] and rows[0][0].startswith("\ufeff"):
        rows[0][0] = rows[0][0][1:]
    header = [c.strip() for c in rows[0]] if rows else []
    data = rows[1:]
    if (not data or len(set(header)) != len(header) or "" in header
            or any(len(r) != len(header) for r in data)):
        return _read_table_pandas(path)
    columns: dict[str, pd.Series] = {}
    for j, col in enumerate(header):
        s = [r[j].strip() for r in data]
        if col in _TEXT_COLUMNS:
            columns[col] = pd.Series([v or None for v in s], dtype=_text_dtype())
            continue
        low = [v.lower() for v in s]
        if all(v in ("true", "false", "") for v in low) and any(v in ("true", "false")
                                                                for v in low):
            columns[col] = pd.Series([{"true": True, "false": False}.get(v) for v in low])
            continue
        num = pd.to_numeric(pd.Series([v if v != "" else np.nan for v in s], dtype=object),
                            errors="coerce")
        missing = num.isna().tolist()
        if any(m and v != "" for m, v in zip(missing, s, strict=True)):
            columns[col] = pd.Series([v or None for v in s], dtype=_text_dtype())  # text
        else:
            columns[col] = num.astype(float)
    return pd.DataFrame(columns)


def _read_table_pandas(path: Path) -> pd.DataFrame:
    """The reference reader (pandas throughout); :func:`_read_table` falls back to it."""
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


@dataclass(frozen=True)
class Catalog:
    """All catalog tables as pandas DataFrames, with id look-ups that suggest near misses."""

    directory: Path
    llms: pd.DataFrame
    accelerators: pd.DataFrame
    apis: pd.DataFrame
    clouds: pd.DataFrame
    servers: pd.DataFrame
    tokenizers: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        """Return one table by name (``llms``, ``accelerators``, ``apis``, ...)."""
        if name not in TABLES:
            raise CatalogError(
                f"unknown catalog table {name!r}; expected one of {', '.join(TABLES)}"
            )
        return getattr(self, name)

    def ids(self, name: str) -> list[str]:
        return list(self.table(name)["id"])

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
        self.table(name)
        return entry_id in self._index.exact(name)

    def tokens_per_unit(self, tokenizer: str, lang: str, unit: str) -> dict[str, Any]:
        """Tokens per word or per character for a tokenizer family and language.

        Falls back to any tokenizer's row for that language and unit when the family has
        none, and says which row it used (``tokenizer`` key of the result).
        """
        positions = self._index.tokenizers().get((lang, unit)) if (
            lang is not None and unit is not None) else None
        if not positions:
            df = self.tokenizers
            known = sorted({f"{r.lang}/{r.unit}" for r in df.itertuples()})
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
            ids = self.cat.table(name)["id"].tolist()
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
            r = self.cat.table(name).iloc[pos]
            self._rows[key] = {k: _clean(v) for k, v in r.to_dict().items()}
        return dict(self._rows[key])

    def tokenizers(self) -> dict[tuple[Any, Any], list[tuple[int, Any]]]:
        """(lang, unit) -> [(row, tokenizer), ...] in file order."""
        if self._tokenizers is None:
            df = self.cat.tokenizers
            out: dict[tuple[Any, Any], list[tuple[int, Any]]] = {}
            for i, (lang, unit, tok) in enumerate(zip(df["lang"].tolist(), df["unit"].tolist(),
                                                      df["tokenizer"].tolist(), strict=True)):
                out.setdefault((lang, unit), []).append((i, tok))
            self._tokenizers = out
        return self._tokenizers

    def cheapest_cloud(self, accelerator: Any, plan: Any) -> int | None:
        """Row of the cheapest priced cloud offering (first in file order on a tie)."""
        key = (accelerator, plan)
        if accelerator is None or plan is None:  # None equals no cell, as in a DataFrame
            return None
        if key not in self._clouds:
            df = self.cat.clouds
            best, best_price = None, None
            for i, (acc, pl, price) in enumerate(zip(
                    df["accelerator"].tolist(), df["plan"].tolist(),
                    df["usd_per_gpu_hour"].tolist(), strict=True)):
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
    tables = {name: _read_table(d / fname) for name, (fname, _) in TABLES.items()}
    for name, (fname, idcol) in TABLES.items():
        if idcol is None:
            continue
        df = tables[name]
        if idcol not in df.columns:
            raise CatalogError(f"{d / fname}: no '{idcol}' column")
        dup = df[idcol][df[idcol].duplicated()]
        if not dup.empty:
            raise CatalogError(f"{d / fname}: duplicate ids {sorted(set(dup))}")
    return Catalog(directory=d, **tables)


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Load (and cache) the catalog from ``directory`` or :func:`catalog_dir`."""
    return _load(str(directory or catalog_dir()))
