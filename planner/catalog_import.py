"""Import API price sheets from LiteLLM's ``model_prices_and_context_window.json``.

LiteLLM (MIT) keeps USD-per-token prices for thousands of offerings; this converts the chat
models among them into rows of ``api_prices.csv`` (USD per million tokens), so users can keep
their prices current: ``planner catalog import-litellm FILE --out my_prices.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from planner.errors import PlannerError

API_COLUMNS = [
    "id", "provider", "model", "llm", "quality_score", "quality_tier", "input_usd_per_mtok",
    "output_usd_per_mtok", "cached_input_usd_per_mtok", "batch_input_usd_per_mtok",
    "batch_output_usd_per_mtok", "long_context_threshold_tokens", "long_input_usd_per_mtok",
    "long_output_usd_per_mtok", "ft_train_usd_per_mtok", "ft_input_usd_per_mtok",
    "ft_output_usd_per_mtok", "max_context_tokens", "ttft_s", "output_tokens_per_s",
    "tokenizer", "source", "as_of",
]


def _mtok(v) -> float | None:
    return None if v is None else round(float(v) * 1e6, 6)


def litellm_rows(data: dict, *, providers: list[str] | None = None, as_of: str = "",
                 source: str = "LiteLLM model_prices_and_context_window.json") -> pd.DataFrame:
    """Rows in ``api_prices.csv`` layout for LiteLLM chat entries with input+output prices."""
    rows = []
    for key, e in data.items():
        if not isinstance(e, dict) or e.get("mode") != "chat":
            continue
        prov = e.get("litellm_provider")
        if providers and prov not in providers:
            continue
        if e.get("input_cost_per_token") is None or e.get("output_cost_per_token") is None:
            continue
        long_key = next(
            (k for k in e if k.startswith("input_cost_per_token_above_") and k.endswith("_tokens")),
            None,
        )
        threshold = long_in = long_out = None
        if long_key:
            tag = long_key[len("input_cost_per_token_above_"):-len("_tokens")]
            mult = 1000 if tag.endswith("k") else 1
            try:
                threshold = float(tag.rstrip("k")) * mult
            except ValueError:
                threshold = None
            long_in = _mtok(e.get(long_key))
            long_out = _mtok(e.get(f"output_cost_per_token_above_{tag}_tokens"))
        model = key.split("/", 1)[1] if key.startswith(f"{prov}/") else key
        rows.append({
            "id": f"{prov}/{model}", "provider": prov, "model": model,
            "input_usd_per_mtok": _mtok(e.get("input_cost_per_token")),
            "output_usd_per_mtok": _mtok(e.get("output_cost_per_token")),
            "cached_input_usd_per_mtok": _mtok(e.get("cache_read_input_token_cost")),
            "batch_input_usd_per_mtok": _mtok(e.get("input_cost_per_token_batches")),
            "batch_output_usd_per_mtok": _mtok(e.get("output_cost_per_token_batches")),
            "long_context_threshold_tokens": threshold,
            "long_input_usd_per_mtok": long_in, "long_output_usd_per_mtok": long_out,
            "max_context_tokens": e.get("max_input_tokens"),
            "source": f"{source} key {key!r}" + (f" ({e['source']})" if e.get("source") else ""),
            "as_of": as_of,
        })
    df = pd.DataFrame(rows, columns=API_COLUMNS)
    return df.drop_duplicates("id", keep="first").reset_index(drop=True)


def import_litellm(path: str | Path, *, providers: list[str] | None = None,
                   as_of: str = "") -> pd.DataFrame:
    """Read a LiteLLM price JSON file and return api_prices rows."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlannerError(f"{p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlannerError(f"{p}: not a LiteLLM price JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise PlannerError(f"{p}: expected a JSON object of model -> prices")
    return litellm_rows(data, providers=providers, as_of=as_of or _mtime_date(p))


def _mtime_date(p: Path) -> str:
    import datetime as dt

    return dt.date.fromtimestamp(p.stat().st_mtime).isoformat()
