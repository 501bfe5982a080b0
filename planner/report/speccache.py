"""On-disk cache of the report's chart specifications, keyed by what the charts are built from.

A chart of the report is ``builder(*inputs)`` (a function of :mod:`planner.charts` or
:func:`planner.report.perf_validation.closed_loop_chart`) turned into its Vega-Lite
specification (:func:`planner.report.export.spec`). Importing altair and building the charts
costs ~0.5 s of CPU per report; the specification is a pure function of the builder, its
inputs and the code and packages that build it, so a report whose inputs did not change reads
it from here and never imports altair (the images of an unchanged specification are cached by
:mod:`planner.report.export` already).

The key (:func:`key`) is the SHA-256 of

* the builder's name (``module:function``);
* the inputs, exactly: each DataFrame's column names, dtypes, index and values (numeric
  columns as their bytes, others as their pickled Python values, types included), scalars by
  type and ``repr``;
* planner's version and the source of the modules that draw charts (:data:`CODE_FILES`), so
  a change to a chart's code invalidates it;
* the versions of altair, Vega-Lite, pandas and numpy (they shape the specification and its
  inlined data).

An input the digest does not know (any other type) makes the chart uncached (built every
time), never wrongly shared. An entry is ``{"spec": ...}`` or ``{"nodata": reason}`` (the
builder found nothing to draw: the report shows a note instead). Entries live in
``cache_dir()/chart-specs`` (:func:`planner.report.export.cache_dir`), are written atomically
(temporary file + rename, safe under concurrent reports), the least recently used beyond
:data:`SPEC_CACHE_MAX` are removed. ``PLANNER_NO_CACHE=1`` neither reads nor writes them;
``PLANNER_VALIDATE_CHARTS`` (which checks the chart code against the Vega-Lite schema) builds
every chart and writes its entry but reads none.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: planner modules (relative to the package) whose source determines the specifications.
CODE_FILES = ("charts.py", "report/perf_validation.py", "report/speccache.py")
#: Most specifications kept; the least recently used go.
SPEC_CACHE_MAX = 200
#: Bumped when the layout of an entry changes.
_FORMAT = "planner chart spec 1"


#: Scalar types digested by type and ``repr`` (exactly these: a subclass may draw otherwise).
_SCALARS = (type(None), bool, int, float, str)


class Uncacheable(TypeError):
    """An input the digest cannot describe exactly (the chart is built, not cached)."""


def enabled() -> bool:
    """Whether entries are read (not ``PLANNER_NO_CACHE``, not ``PLANNER_VALIDATE_CHARTS``)."""
    return not (os.environ.get("PLANNER_NO_CACHE") or os.environ.get("PLANNER_VALIDATE_CHARTS"))


def spec_cache_dir() -> Path:
    """Where the entries are (``cache_dir()/chart-specs``)."""
    from planner.report.export import cache_dir

    return cache_dir() / "chart-specs"


@functools.cache
def _code_digest() -> str:
    from planner._version import __version__

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"{_FORMAT}; planner {__version__}\n".encode())
    for rel in CODE_FILES:
        h.update(f"{rel}\n".encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def _versions() -> str:
    from planner.report.export import dist_version, vegalite_version

    return (f"altair {dist_version('altair', 'altair')}; vega-lite {vegalite_version()}; "
            f"pandas {pd.__version__}; numpy {np.__version__}")


def _pickled(values: list) -> bytes:
    """``values`` pickled without the memo (equal values give equal bytes whether or not
    they are the same objects; types are kept: 1, 1.0 and "1" differ)."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=4)
    p.fast = True  # no memo: no back-references that depend on object identity
    p.dump(values)
    return buf.getvalue()


def _array(h, values: Any, dtype: Any) -> None:
    h.update(f"{dtype!r}|".encode())
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        a = np.ascontiguousarray(np.asarray(values, dtype=dtype))
        h.update(f"{a.shape}|".encode())
        h.update(a.view(np.uint8).tobytes() if a.size else b"")
    else:
        h.update(_pickled(list(values)))


def _feed(h, obj: Any) -> None:
    if isinstance(obj, pd.DataFrame):
        h.update(f"frame {obj.shape}|".encode())
        h.update(_pickled([(type(c).__name__, repr(c)) for c in obj.columns]))
        _feed(h, obj.index)
        for i in range(obj.shape[1]):
            col = obj.iloc[:, i]
            _array(h, col.to_numpy(), col.dtype)
        if obj.attrs:
            raise Uncacheable("DataFrame.attrs")
    elif isinstance(obj, pd.Series):
        h.update(f"series {obj.name!r}|".encode())
        _feed(h, obj.index)
        _array(h, obj.to_numpy(), obj.dtype)
    elif isinstance(obj, pd.Index):
        if isinstance(obj, pd.RangeIndex):
            h.update(f"range {obj.start} {obj.stop} {obj.step} {obj.name!r}|".encode())
        else:
            h.update(f"index {type(obj).__name__} {obj.names!r}|".encode())
            _array(h, obj.to_numpy(), obj.dtype)
    elif isinstance(obj, np.ndarray):
        h.update(b"ndarray|")
        _array(h, obj.ravel(), obj.dtype)
        h.update(f"{obj.shape}|".encode())
    elif type(obj) in _SCALARS or (isinstance(obj, np.generic)
                                   and type(obj).__module__ == "numpy"):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    elif type(obj) in (tuple, list):
        h.update(f"{type(obj).__name__} {len(obj)}(".encode())
        for x in obj:
            _feed(h, x)
        h.update(b")")
    else:
        raise Uncacheable(type(obj).__name__)


def key(builder: str, args: tuple) -> str | None:
    """Cache key of ``builder(*args)``'s specification, or None when an input cannot be
    digested exactly (see the module docstring)."""
    h = hashlib.sha256(f"{_code_digest()}\n{_versions()}\n{builder}\n".encode())
    try:
        _feed(h, tuple(args))
    except Uncacheable:
        return None
    return h.hexdigest()[:40]


def load(k: str | None) -> dict | None:
    """The entry of key ``k`` (``{"spec": ...}`` or ``{"nodata": ...}``), or None."""
    if k is None or not enabled():
        return None
    path = spec_cache_dir() / f"{k}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(entry, dict) and len(entry) == 1
            and (isinstance(entry.get("spec"), dict) or isinstance(entry.get("nodata"), str))):
        return None
    try:
        os.utime(path)  # most recently used: kept longest
    except OSError:
        pass
    return entry


def store(k: str | None, entry: dict) -> None:
    """Write an entry atomically (skipped without a key, with ``PLANNER_NO_CACHE`` or when the
    cache cannot be written)."""
    if k is None or os.environ.get("PLANNER_NO_CACHE"):
        return
    from planner.report.export import write_cached

    try:
        text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # pragma: no cover - specs are JSON (the page inlines them)
        return
    write_cached(spec_cache_dir() / f"{k}.json", text)


def prune(keep: int = SPEC_CACHE_MAX) -> None:
    """Remove all but the ``keep`` most recently used entries."""
    if os.environ.get("PLANNER_NO_CACHE"):
        return
    from planner.report.export import prune_lru

    prune_lru(spec_cache_dir(), "*.json", keep)


def builder(name: str):
    """The chart function named ``module:function`` (imports altair)."""
    import importlib

    module, _, fn = name.partition(":")
    return getattr(importlib.import_module(module), fn)


__all__ = ["CODE_FILES", "SPEC_CACHE_MAX", "Uncacheable", "builder", "enabled", "key", "load",
           "prune", "spec_cache_dir", "store"]
