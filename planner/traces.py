"""Request traces: import, replay, and fitting a workload class to a trace.

Import maps a file's columns (:class:`TraceColumns`: timestamp column and its format or
unit, input and output token columns, optional class column) from CSV, JSON Lines or
Parquet (Parquet needs ``pyarrow``). :func:`replay` turns a trace into a
:class:`~planner.requests.RequestTable`, as-is or scaled in rate. :func:`fit_trace` fits a
workload class (:class:`~planner.arrivals.ArrivalClass`): lognormal lengths by maximum
likelihood (plus the empirical distribution), hourly rates and the burstiness of the
inter-arrival gaps, with Kolmogorov-Smirnov statistics as goodness of fit.

The two Azure LLM inference traces (CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024) ship
with the package: :func:`azure_trace`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from planner.arrivals import (
    ArrivalClass,
    EmpiricalLength,
    GammaRenewal,
    LognormalLength,
)
from planner.errors import PlannerError
from planner.requests import RequestTable

__all__ = [
    "AZURE_COLUMNS",
    "TRACE_FORMATS",
    "Trace",
    "TraceColumns",
    "TraceFit",
    "TraceKeys",
    "azure_trace",
    "discrete_lognormal_ks",
    "fit_trace",
    "load_trace",
    "parse_columns",
    "replay",
    "trace_columns",
]

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_Z90 = float(special.ndtri(0.9))


@dataclass(frozen=True)
class TraceColumns:
    """How to read a trace file.

    Parameters
    ----------
    timestamp : str
        Arrival-time column.
    timestamp_unit : str
        ``datetime`` (date-time strings, parsed with ``timestamp_format`` or ISO 8601) or a
        numeric unit ``s``, ``ms``, ``us``, ``ns`` (epoch or relative numbers).
    timestamp_format : str, optional
        ``strftime`` format for ``datetime`` timestamps.
    input_tokens, output_tokens : str
        Prompt and generated token columns.
    class_column : str, optional
        Column with a workload-class label per request.
    """

    timestamp: str = "TIMESTAMP"
    input_tokens: str = "ContextTokens"
    output_tokens: str = "GeneratedTokens"
    timestamp_unit: str = "datetime"
    timestamp_format: str | None = None
    class_column: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp_unit != "datetime" and self.timestamp_unit not in _UNITS:
            raise PlannerError(
                f"TraceColumns.timestamp_unit must be 'datetime' or one of {sorted(_UNITS)}, "
                f"got '{self.timestamp_unit}'"
            )


#: Columns of the Azure LLM inference traces.
AZURE_COLUMNS = TraceColumns()

#: Named trace formats: column mapping and the usual file format.
#:
#: * ``azure``: Azure LLM inference traces (Azure/AzurePublicDataset, Splitwise): CSV with
#:   ``TIMESTAMP`` date-times, ``ContextTokens``, ``GeneratedTokens``.
#: * ``mooncake``: Mooncake traces (kvcache-ai/Mooncake, FAST 2025): JSON Lines with
#:   ``timestamp`` in milliseconds from the start, ``input_length``, ``output_length``
#:   (``hash_ids`` ignored).
#: * ``burstgpt``: BurstGPT (HPMLL/BurstGPT): CSV with ``Timestamp`` in seconds from the
#:   start, ``Request tokens``, ``Response tokens`` (``Model``, ``Log Type`` ignored).
#: * ``csv``: a generic CSV with ``timestamp`` (seconds), ``input_tokens``, ``output_tokens``;
#:   map other names with ``--columns``.
TRACE_FORMATS: dict[str, tuple[TraceColumns, str]] = {
    "azure": (AZURE_COLUMNS, "csv"),
    "mooncake": (TraceColumns(timestamp="timestamp", input_tokens="input_length",
                              output_tokens="output_length", timestamp_unit="ms"), "jsonl"),
    "burstgpt": (TraceColumns(timestamp="Timestamp", input_tokens="Request tokens",
                              output_tokens="Response tokens", timestamp_unit="s"), "csv"),
    "csv": (TraceColumns(timestamp="timestamp", input_tokens="input_tokens",
                         output_tokens="output_tokens", timestamp_unit="s"), "csv"),
}

#: ``--columns`` roles -> :class:`TraceColumns` fields (long spellings accepted too).
_ROLES = {"timestamp": "timestamp", "time": "timestamp", "input": "input_tokens",
          "input_tokens": "input_tokens", "output": "output_tokens",
          "output_tokens": "output_tokens", "class": "class_column",
          "class_column": "class_column"}


@dataclass(frozen=True)
class TraceKeys:
    """How the user spelled the mapping, for error messages (a CLI flag or a TOML key)."""

    columns: str = "TraceColumns(timestamp=..., input_tokens=..., output_tokens=...)"
    timestamp_unit: str = "TraceColumns.timestamp_unit"
    timestamp_format: str = "TraceColumns.timestamp_format"
    trace_format: str = "trace_format"


#: Names of the ``planner simulate`` flags.
CLI_KEYS = TraceKeys(columns="--columns timestamp=...,input=...,output=... or a named "
                             "--trace-format (azure, mooncake, burstgpt, csv)",
                     timestamp_unit="--timestamp-unit", timestamp_format="--timestamp-format",
                     trace_format="--trace-format")


def toml_keys(index: int) -> TraceKeys:
    """Key names of entry ``index`` of ``[[simulation.trace]]``."""
    k = f"simulation.trace[{index}]"
    return TraceKeys(columns=f"{k}.timestamp / .input_tokens / .output_tokens",
                     timestamp_unit=f"{k}.timestamp_unit",
                     timestamp_format=f"{k}.timestamp_format", trace_format=f"{k}.trace_format")


def parse_columns(text: str, *, flag: str = "--columns") -> dict[str, str]:
    """``timestamp=ts,input=prompt_len,output=gen_len[,class=kind]`` -> TraceColumns fields."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        role, eq, name = item.partition("=")
        role, name = role.strip().lower(), name.strip()
        if not eq or not name:
            raise PlannerError(f"{flag} {text!r}: expected ROLE=COLUMN items such as "
                               "timestamp=ts,input=prompt_tokens,output=completion_tokens")
        if role not in _ROLES:
            raise PlannerError(f"{flag}: unknown role {role!r}; expected timestamp, input, "
                               "output or class")
        if _ROLES[role] in out:
            raise PlannerError(f"{flag}: {role!r} given twice")
        out[_ROLES[role]] = name
    return out


def trace_columns(
    trace_format: str | None = None,
    *,
    columns: dict[str, str] | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
    keys: TraceKeys = CLI_KEYS,
) -> tuple[TraceColumns, str]:
    """A named format's mapping (default ``azure``) with explicit overrides.

    Returns the :class:`TraceColumns` and the format's usual file kind (``csv``/``jsonl``).
    ``columns`` maps :class:`TraceColumns` field names (``timestamp``, ``input_tokens``,
    ``output_tokens``, ``class_column``) to column names. Errors name ``keys``.
    """
    name = (trace_format or "azure").lower()
    if name not in TRACE_FORMATS:
        raise PlannerError(f"{keys.trace_format} {trace_format!r}: unknown trace format; "
                           f"expected one of {', '.join(TRACE_FORMATS)}")
    base, kind = TRACE_FORMATS[name]
    upd: dict[str, object] = dict(columns or {})
    if timestamp_unit is not None:
        if timestamp_unit != "datetime" and timestamp_unit not in _UNITS:
            raise PlannerError(f"{keys.timestamp_unit} {timestamp_unit!r}: expected datetime "
                               f"or one of {', '.join(_UNITS)}")
        upd["timestamp_unit"] = timestamp_unit
    if timestamp_format is not None:
        upd["timestamp_format"] = timestamp_format
    return dataclasses.replace(base, **upd), kind


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests read from a file, times relative to the first request.

    Attributes
    ----------
    arrival_s : ndarray
        Seconds since the first request (sorted; the first is 0).
    input_tokens, output_tokens : ndarray of int64
    classes : ndarray of str, optional
    start : pandas.Timestamp or float or None
        Absolute time of the first request (a timestamp, or the raw number).
    source : str
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    classes: np.ndarray | None = None
    start: object = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last request."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate, ``(n - 1) / duration`` (the unbiased rate of the gaps)."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else math.nan

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "arrival_s": self.arrival_s,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            }
        )
        if self.classes is not None:
            df["class"] = self.classes
        return df


def _read_table(path: Path, fmt: str | None) -> pd.DataFrame:
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind in ("csv", "txt"):
        return pd.read_csv(path)
    if kind in ("jsonl", "ndjson", "json"):
        return pd.read_json(path, lines=True)
    if kind in ("parquet", "pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise PlannerError(
                f"reading Parquet trace '{path}' needs pyarrow: install it with "
                "'pip install pyarrow' (or convert the trace to CSV/JSONL)"
            ) from exc
        return pd.read_parquet(path)
    raise PlannerError(
        f"trace '{path}': unknown format '{kind}'; expected csv, jsonl or parquet (or pass fmt=)"
    )


def load_trace(
    path: str | Path,
    columns: TraceColumns = AZURE_COLUMNS,
    *,
    fmt: str | None = None,
    keys: TraceKeys | None = None,
) -> Trace:
    """Read a trace file (CSV, JSON Lines or Parquet) with a column mapping.

    Rows are sorted by time; rows with a missing or unparsable timestamp or token count
    are an error (the message gives the first bad row and names ``keys``, the flag or TOML
    key that sets the mapping). ``fmt`` defaults to the file's suffix.
    """
    path = Path(path)
    if not path.exists():
        raise PlannerError(f"trace file not found: {path}")
    try:
        df = _read_table(path, fmt)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise PlannerError(f"trace {path}: cannot read it as {fmt or path.suffix.lstrip('.')} "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                           ) from None
    return trace_from_frame(df, columns, source=str(path), keys=keys)


def trace_from_frame(
    df: pd.DataFrame, columns: TraceColumns = AZURE_COLUMNS, *, source: str = "",
    keys: TraceKeys | None = None,
) -> Trace:
    """Build a :class:`Trace` from a DataFrame with the mapped columns."""
    keys = keys or TraceKeys()
    need = [columns.timestamp, columns.input_tokens, columns.output_tokens]
    if columns.class_column:
        need.append(columns.class_column)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PlannerError(
            f"trace {source or ''}: missing column(s) {missing}; found {list(df.columns)}. "
            f"Map them with {keys.columns}"
        )
    ts = df[columns.timestamp]
    if columns.timestamp_unit == "datetime" and pd.api.types.is_numeric_dtype(ts):
        raise PlannerError(
            f"trace {source}: timestamp column '{columns.timestamp}' holds numbers, not "
            f"date-times; set {keys.timestamp_unit} to s, ms, us or ns"
        )
    if columns.timestamp_unit == "datetime":
        fmt = columns.timestamp_format or "ISO8601"
        parsed = pd.to_datetime(ts, format=fmt, errors="coerce", utc=True)
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise PlannerError(
                f"trace {source}: timestamp '{ts.iloc[row]}' in row {row} is not a date-time "
                f"(format {fmt}); set {keys.timestamp_format} or {keys.timestamp_unit}"
            )
        ns = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
        order = np.argsort(ns, kind="stable")
        ns = ns[order]
        start = pd.Timestamp(ns[0], tz="UTC") if ns.size else None
        rel = (ns - ns[0]) / 1e9 if ns.size else np.zeros(0)
    else:
        num = pd.to_numeric(ts, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(num)
        if bad.any():
            row = int(np.argmax(bad))
            raise PlannerError(
                f"trace {source}: timestamp '{ts.iloc[row]}' in row {row} is not a number "
                f"({keys.timestamp_unit} is {columns.timestamp_unit!r})"
            )
        order = np.argsort(num, kind="stable")
        num = num[order] * _UNITS[columns.timestamp_unit]
        start = float(num[0]) if num.size else None
        rel = num - num[0] if num.size else num
    tok = {}
    for key in ("input_tokens", "output_tokens"):
        col = getattr(columns, key)
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)[order]
        bad = ~np.isfinite(v) | (v < 0) | (v != np.round(v))
        if bad.any():
            row = int(order[np.argmax(bad)])
            raise PlannerError(
                f"trace {source}: column '{col}' row {row} has '{df[col].iloc[row]}', "
                "expected a whole number of tokens >= 0"
            )
        tok[key] = v.astype(np.int64)
    classes = None
    if columns.class_column:
        classes = df[columns.class_column].astype(str).to_numpy()[order]
    return Trace(
        arrival_s=np.asarray(rel, dtype=float),
        input_tokens=tok["input_tokens"],
        output_tokens=tok["output_tokens"],
        classes=classes,
        start=start,
        source=source,
    )


def azure_trace(kind: str = "conv") -> Trace:
    """One of the shipped Azure LLM inference traces (``conv`` or ``code``), 2023.

    Source: Azure/AzurePublicDataset, CC-BY 4.0; Patel et al., "Splitwise", ISCA 2024.
    """
    if kind not in ("conv", "code"):
        raise PlannerError(f"azure_trace: kind must be 'conv' or 'code', got '{kind}'")
    ref = resources.files("planner") / "data" / "traces" / f"azure_llm_2023_{kind}.csv"
    with resources.as_file(ref) as p:
        tr = load_trace(p, AZURE_COLUMNS)
    return Trace(
        tr.arrival_s,
        tr.input_tokens,
        tr.output_tokens,
        tr.classes,
        tr.start,
        f"azure_llm_2023_{kind}",
    )


def replay(
    trace: Trace,
    *,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
    class_name: str = "trace",
    start_s: float = 0.0,
    output_tokens_min: int = 1,
) -> RequestTable:
    """Requests of a trace, as recorded or scaled in rate.

    Parameters
    ----------
    rate_scale : float
        Arrival times are divided by it (2 = twice the rate, same requests).
    duration_s : float, optional
        Fill this period: the (scaled) trace is repeated back to back, each copy shifted by
        the scaled span plus one mean gap, and cut at ``duration_s``. Default: one copy.
    class_name : str
        Class of every request (a trace with a class column keeps its labels).
    start_s : float
        Time of the first request.
    output_tokens_min : int
        Output lengths below this (traces hold some 0s) are raised to it; the simulator
        needs at least one output token.
    """
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise PlannerError(f"replay: rate_scale must be a finite number > 0, got {rate_scale}")
    if len(trace) == 0:
        return RequestTable.empty()
    t = trace.arrival_s / rate_scale
    inp, out = trace.input_tokens, np.maximum(trace.output_tokens, output_tokens_min)
    labels = trace.classes if trace.classes is not None else None
    if duration_s is not None:
        if not duration_s > 0:
            raise PlannerError(f"replay: duration_s must be > 0, got {duration_s}")
        gap = (t[-1] - t[0]) / max(len(t) - 1, 1)
        period = t[-1] - t[0] + gap
        copies = int(math.ceil(duration_s / period)) if period > 0 else 1
        t = (t[None, :] + period * np.arange(copies)[:, None]).ravel()
        keep = t < duration_s
        reps = np.tile(np.arange(len(trace)), copies)[keep]
        t, inp, out = t[keep], inp[reps], out[reps]
        labels = labels[reps] if labels is not None else None
    return RequestTable.from_arrays(
        t + start_s, inp, out, labels if labels is not None else class_name
    )


# ---------------------------------------------------------------------- fitting
def discrete_lognormal_ks(values: np.ndarray, mu: float, sigma: float) -> float:
    """Kolmogorov-Smirnov distance between token counts and a rounded lognormal.

    Model CDF at integer ``k``: ``P(round(X) <= k) = Phi((ln(k + 0.5) - mu) / sigma)``. Both
    CDFs are step functions jumping at integers, so the supremum is the maximum over the
    integers from ``min - 1`` to ``max``.
    """
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return math.nan
    k0 = max(int(v.min()) - 1, 0)
    k = np.arange(k0, int(v.max()) + 1)
    emp = np.cumsum(np.bincount(v - k0, minlength=k.size)) / v.size
    with np.errstate(divide="ignore"):
        model = special.ndtr((np.log(k + 0.5) - mu) / sigma)
    return float(np.max(np.abs(emp - model)))


@dataclass(frozen=True, eq=False)
class TraceFit:
    """A workload class fitted to a trace, with goodness of fit.

    ``input_mu/sigma`` and ``output_mu/sigma`` are the maximum-likelihood lognormal
    parameters of the (positive) token counts (mean and sd of their logs);
    ``*_ks`` the discrete KS distance of that fit (:func:`discrete_lognormal_ks`).
    ``interarrival_cv`` is the coefficient of variation of the gaps, ``gap_ks_exponential``
    and ``gap_ks_gamma`` the KS distances of the gaps to an exponential of the observed rate
    and to a Gamma of the observed mean and CV. ``dispersion_60s`` is the variance-to-mean
    ratio of counts in 60-second windows (1 for Poisson).
    """

    name: str
    requests: int
    duration_s: float
    rate_per_s: float
    hourly_counts: np.ndarray
    interarrival_cv: float
    gap_ks_exponential: float
    gap_ks_gamma: float
    dispersion_60s: float
    input_mu: float
    input_sigma: float
    input_ks: float
    output_mu: float
    output_sigma: float
    output_ks: float
    input_values: np.ndarray
    output_values: np.ndarray

    def lognormal(self, which: str) -> LognormalLength:
        """Fitted lognormal (``which`` = ``input`` or ``output``) as median / p90."""
        mu, s = (
            (self.input_mu, self.input_sigma)
            if which == "input"
            else (self.output_mu, self.output_sigma)
        )
        return LognormalLength(
            median=math.exp(mu),
            p90=math.exp(mu + _Z90 * s),
            min_tokens=1 if which == "output" else 0,
        )

    def to_class(
        self,
        *,
        requests_per_day: float | None = None,
        lengths: str = "empirical",
        burstiness: bool = True,
        profile=None,
    ) -> ArrivalClass:
        """An :class:`ArrivalClass` with this trace's lengths and rate.

        ``lengths`` = ``empirical`` (resample the trace) or ``lognormal`` (fitted);
        ``requests_per_day`` defaults to the trace's rate x 86,400; ``burstiness`` adds a
        :class:`GammaRenewal` with the trace's gap CV when it differs from 1 by > 0.05.
        """
        if lengths == "empirical":
            inp, out = (
                EmpiricalLength(self.input_values),
                EmpiricalLength(np.maximum(self.output_values, 1)),
            )
        elif lengths == "lognormal":
            inp, out = self.lognormal("input"), self.lognormal("output")
        else:
            raise PlannerError(
                f"TraceFit.to_class: lengths must be 'empirical' or 'lognormal', got '{lengths}'"
            )
        burst = None
        if (
            burstiness
            and math.isfinite(self.interarrival_cv)
            and abs(self.interarrival_cv - 1) > 0.05
        ):
            burst = GammaRenewal(self.interarrival_cv)
        rpd = self.rate_per_s * 86400.0 if requests_per_day is None else requests_per_day
        return ArrivalClass(
            name=self.name,
            requests_per_day=rpd,
            input_tokens=inp,
            output_tokens=out,
            profile=profile,
            burstiness=burst,
        )

    def table(self) -> pd.DataFrame:
        """Tidy table of the fitted parameters and goodness-of-fit statistics."""
        rows = [
            ("requests", self.requests),
            ("duration_s", self.duration_s),
            ("rate_per_s", self.rate_per_s),
            ("requests_per_day_equiv", self.rate_per_s * 86400.0),
            ("interarrival_cv", self.interarrival_cv),
            ("gap_ks_exponential", self.gap_ks_exponential),
            ("gap_ks_gamma", self.gap_ks_gamma),
            ("dispersion_60s", self.dispersion_60s),
            ("input_mean", float(self.input_values.mean())),
            ("input_median_fit", math.exp(self.input_mu)),
            ("input_p90_fit", math.exp(self.input_mu + _Z90 * self.input_sigma)),
            ("input_p90_observed", float(np.quantile(self.input_values, 0.9))),
            ("input_ks_lognormal", self.input_ks),
            ("output_mean", float(self.output_values.mean())),
            ("output_median_fit", math.exp(self.output_mu)),
            ("output_p90_fit", math.exp(self.output_mu + _Z90 * self.output_sigma)),
            ("output_p90_observed", float(np.quantile(self.output_values, 0.9))),
            ("output_ks_lognormal", self.output_ks),
        ]
        return pd.DataFrame(
            {
                "trace": self.name,
                "metric": [r[0] for r in rows],
                "value": [float(r[1]) for r in rows],
            }
        )


def _lognormal_mle(v: np.ndarray) -> tuple[float, float]:
    pos = v[v > 0]
    if pos.size < 2:
        raise PlannerError("fit_trace: need at least two positive token counts to fit a lognormal")
    lg = np.log(pos.astype(float))
    return float(lg.mean()), float(lg.std(ddof=0))


def fit_trace(trace: Trace, *, name: str | None = None) -> TraceFit:
    """Fit lengths, rate and burstiness of a trace (see :class:`TraceFit`)."""
    if len(trace) < 3:
        raise PlannerError(f"fit_trace: need at least 3 requests, got {len(trace)}")
    t = trace.arrival_s
    gaps = np.diff(t)
    mean_gap = float(gaps.mean())
    cv = float(gaps.std(ddof=1) / mean_gap) if mean_gap > 0 else math.nan
    ks_exp = float(stats.kstest(gaps, "expon", args=(0, mean_gap)).statistic)
    if math.isfinite(cv) and cv > 0:
        k = 1.0 / cv**2
        ks_gamma = float(stats.kstest(gaps, "gamma", args=(k, 0, mean_gap / k)).statistic)
    else:
        ks_gamma = math.nan
    win = np.bincount((t // 60.0).astype(np.int64))
    full = win[:-1] if win.size > 1 else win  # drop the partial last minute
    disp = float(full.var(ddof=1) / full.mean()) if full.size > 1 and full.mean() > 0 else math.nan
    hourly = np.bincount((t // 3600.0).astype(np.int64)).astype(float)
    mu_i, s_i = _lognormal_mle(trace.input_tokens)
    mu_o, s_o = _lognormal_mle(trace.output_tokens)
    return TraceFit(
        name=name or trace.source or "trace",
        requests=len(trace),
        duration_s=trace.duration_s,
        rate_per_s=trace.rate_per_s,
        hourly_counts=hourly,
        interarrival_cv=cv,
        gap_ks_exponential=ks_exp,
        gap_ks_gamma=ks_gamma,
        dispersion_60s=disp,
        input_mu=mu_i,
        input_sigma=s_i,
        input_ks=discrete_lognormal_ks(trace.input_tokens, mu_i, s_i),
        output_mu=mu_o,
        output_sigma=s_o,
        output_ks=discrete_lognormal_ks(trace.output_tokens, mu_o, s_o),
        input_values=trace.input_tokens.copy(),
        output_values=trace.output_tokens.copy(),
    )
