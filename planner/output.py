"""Printing and writing tidy tables (the presentation layer; engines never call this)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas load with the first table, not with the CLI's parser
    import pandas as pd

FORMATS = ("table", "csv", "json")


def _fmt(x) -> str:
    import numpy as np

    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x):
            return "-"
        if x != 0 and (abs(x) >= 1e12 or abs(x) < 1e-4):
            return f"{x:.4g}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 1:
            return f"{x:,.2f}".rstrip("0").rstrip(".") if x != int(x) else f"{x:,.0f}"
        return f"{x:.4g}"
    return "" if x is None else str(x)


def render(df: pd.DataFrame, fmt: str = "table", *, max_colwidth: int = 60) -> str:
    """A DataFrame as an aligned text table, CSV or JSON records, for a terminal: control
    characters in names are shown escaped (:func:`planner.errors.clean_text`)."""
    from planner.errors import clean_text

    if fmt == "csv":
        return clean_text(df.to_csv(index=False))
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=15)
    if df.empty:
        return "(none)"
    shown = df.copy()
    shown.columns = [clean_text(c) for c in shown.columns]
    for c in shown.columns:
        shown[c] = shown[c].map(lambda x: clean_text(_fmt(x)))
        shown[c] = shown[c].map(
            lambda s: s if len(s) <= max_colwidth else s[: max_colwidth - 1] + "…"
        )
    return shown.to_string(index=False)


def render_tables(tables: Mapping[str, pd.DataFrame], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(
            {k: json.loads(v.to_json(orient="records", double_precision=15))
             for k, v in tables.items()},
            indent=1,
        )
    from planner.errors import clean_text

    parts = []
    for name, df in tables.items():
        if fmt == "csv":
            parts.append(clean_text(f"# {name}\n{df.to_csv(index=False)}"))
        else:
            parts.append(f"== {clean_text(name)} ==\n{render(df, fmt)}")
    return "\n\n".join(parts)


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can become an output directory.

    It may exist (a directory we can write to) or not (then its nearest existing parent
    must be a writable directory). Raises :class:`~planner.errors.PlannerError` (exit 2)
    with the reason otherwise.
    """
    from planner.errors import PlannerError, shorten

    text, out = _path_flag(path, flag, "a directory path")
    if out.exists() and not out.is_dir():
        raise PlannerError(f"{flag} {shorten(text)}: exists and is not a directory")
    _check_writable_parent(out if out.is_dir() else out.parent, text, flag)
    return out


def check_output_file(path: str | Path, *, flag: str = "-o") -> Path:
    """Check, before any work, that a file can be written at ``path`` (exit 2 otherwise)."""
    from planner.errors import PlannerError, shorten

    text, out = _path_flag(path, flag, "a file path")
    if out.is_dir():
        raise PlannerError(f"{flag} {shorten(text)}: is a directory; expected a file path")
    if out.exists() and not os.access(out, os.W_OK):
        raise PlannerError(f"{flag} {shorten(text)}: the file is not writable")
    if out.parent.exists() and not out.parent.is_dir():
        raise PlannerError(f"{flag} {shorten(text)}: {shorten(str(out.parent))} is not a "
                           "directory")
    if not out.parent.is_dir():
        raise PlannerError(f"{flag} {shorten(text)}: the directory "
                           f"{shorten(str(out.parent))} does not exist")
    _check_writable_parent(out.parent, text, flag)
    return out


def _path_flag(path: str | Path, flag: str, what: str) -> tuple[str, Path]:
    """The text and path of an output flag's value; exit 2 naming ``flag`` when it is empty
    or holds a NUL byte (``what``: "a file path", "a directory path")."""
    from planner.errors import PlannerError, shorten

    text = str(path)
    if not text.strip():
        raise PlannerError(f"{flag}: expected {what}, got an empty string")
    if "\x00" in text:
        raise PlannerError(f"{flag} {shorten(text)}: a path cannot contain a NUL byte")
    return text, Path(text)


def _check_writable_parent(d: Path, text: str, flag: str) -> None:
    from planner.errors import PlannerError, shorten

    probe = d
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise PlannerError(f"{flag} {shorten(text)}: {shorten(str(probe))} is not a "
                           "directory, so nothing can be written below it")
    try:  # os.access trusts the mode bits; only creating something proves it (/proc, ro mounts)
        os.rmdir(tempfile.mkdtemp(prefix=".planner-probe-", dir=probe))
    except OSError as exc:
        raise PlannerError(f"{flag} {shorten(text)}: cannot write in {shorten(str(probe))} "
                           f"({exc.strerror or exc})") from None


def publish_dir(tmp: Path, out: Path) -> None:
    """Move every entry of the finished directory ``tmp`` into ``out``, all or nothing.

    When ``out`` does not exist, ``tmp`` is renamed to it (one atomic swap). Otherwise each
    entry of ``out`` that ``tmp`` replaces is first moved to a backup directory beside it;
    if any move fails, the entries already placed are removed and the backed-up ones put
    back, so ``out`` is left as it was, and the error is raised again.
    """
    if not out.exists():
        os.replace(tmp, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    moved: list[str] = []
    placed: list[str] = []
    try:
        for entry in sorted(tmp.iterdir()):
            dest = out / entry.name
            if dest.exists() or dest.is_symlink():
                os.replace(dest, backup / entry.name)
                moved.append(entry.name)
            os.replace(entry, dest)
            placed.append(entry.name)
    except BaseException:
        for name in placed:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        for name in moved:
            os.replace(backup / name, out / name)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def write_csv_file(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` as CSV to ``out`` all or nothing: a temporary sibling, then one rename."""
    out = Path(out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *,
                 fmt: str = "csv") -> list[Path]:
    """Write each table as ``NAME.csv`` (or ``NAME.parquet``) into ``out_dir`` all-or-nothing.

    Files are written to a temporary directory beside ``out_dir`` first and moved into place
    by :func:`publish_dir` only when every one was written; a failure at any point leaves
    ``out_dir`` as it was (or absent) and no temporary directory behind.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the tables are not
        names = []
        for name, df in tables.items():
            f = tmp / f"{name}.{fmt}"
            if fmt == "parquet":
                df.to_parquet(f, index=False)
            else:
                df.to_csv(f, index=False)
            names.append(f.name)
        publish_dir(tmp, out)
        return [out / n for n in sorted(names)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
