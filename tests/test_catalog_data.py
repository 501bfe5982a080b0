"""Checks on the catalog data in ``models/*.csv``.

Schema conformance (columns and order as in ``docs/catalog-schema.md``), provenance (every row
has ``source`` and ``as_of``), ids and cross-references, physical sanity, spot checks of prices
against the LiteLLM JSON they were taken from, and a few published figures from the source
articles recomputed from catalog rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SCHEMA = ROOT / "docs" / "catalog-schema.md"
FIXTURES = ROOT / "tests" / "data"  # public data the tests compare with (see its SOURCES.md)
LITELLM = FIXTURES / "litellm_model_prices_subset.json"
MODEL_ARCH = FIXTURES / "model_arch.csv"

FILES = ["llms", "accelerators", "api_prices", "cloud_prices", "servers", "tokenizers"]
TEXT = {
    "id", "display_name", "family", "open_weights", "attention", "quality_benchmark",
    "tokenizer", "source", "as_of", "vendor", "interconnect", "notes", "provider", "model",
    "llm", "accelerator", "instance_type", "plan", "lang", "unit", "device_mem_source",
    "device_mem_as_of",
}
AS_OF = re.compile(r"^\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?$")
ID = re.compile(r"^[a-z0-9][a-z0-9._/@-]*$")


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(MODELS / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def cat() -> dict[str, pd.DataFrame]:
    return {name: _read(name) for name in FILES}


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col].replace("", np.nan))


def _row(df: pd.DataFrame, entry_id: str) -> pd.Series:
    hit = df[df["id"] == entry_id]
    assert len(hit) == 1, f"{entry_id!r} not found exactly once"
    return hit.iloc[0]


def _f(row: pd.Series, col: str) -> float:
    return float(row[col])


def schema_columns() -> dict[str, list[str]]:
    """Column lists per file, parsed from docs/catalog-schema.md (parenthesised notes dropped)."""
    text = SCHEMA.read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"^## models/(\w+)\.csv\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        body = re.sub(r"\([^()]*\)", "", m.group(2))
        out[m.group(1)] = [c.strip() for c in body.replace("\n", " ").split(",") if c.strip()]
    return out


# ----------------------------------------------------------------------------- schema


def test_schema_doc_lists_all_files():
    assert set(schema_columns()) == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_columns_match_schema_in_order(name):
    header = list(pd.read_csv(MODELS / f"{name}.csv", nrows=0).columns)
    assert header == schema_columns()[name]


@pytest.mark.parametrize("name", FILES)
def test_every_row_has_source_and_iso_as_of(cat, name):
    df = cat[name]
    assert len(df) > 0
    assert (df["source"].str.len() > 10).all(), df.loc[df["source"].str.len() <= 10]
    bad = df.loc[~df["as_of"].str.match(AS_OF), "as_of"]
    assert bad.empty, f"{name}: as_of not ISO date / YYYY-MM: {list(bad)}"


@pytest.mark.parametrize("name", [n for n in FILES if n != "tokenizers"])
def test_ids_unique_lowercase(cat, name):
    ids = cat[name]["id"]
    assert ids.is_unique, ids[ids.duplicated()].tolist()
    assert ids.str.match(ID).all(), ids[~ids.str.match(ID)].tolist()


def test_tokenizer_rows_unique(cat):
    key = cat["tokenizers"][["tokenizer", "lang", "unit"]]
    assert not key.duplicated().any()
    assert set(cat["tokenizers"]["unit"]) <= {"word", "char"}


@pytest.mark.parametrize("name", FILES)
def test_numeric_cells_are_numbers_and_not_negative(cat, name):
    df = cat[name]
    for col in df.columns:
        if col in TEXT:
            continue
        s = df[col]
        num = pd.to_numeric(s.replace("", np.nan), errors="coerce")
        assert not (s.ne("") & num.isna()).any(), f"{name}.{col}: non-numeric {s[num.isna()]}"
        assert (num.dropna() >= 0).all(), f"{name}.{col} has a negative value"


def test_enumerations(cat):
    llms, acc, clouds = cat["llms"], cat["accelerators"], cat["cloud_prices"]
    assert set(llms["open_weights"]) <= {"true", "false"}
    assert set(llms["attention"]) - {""} <= {"mha", "gqa", "mqa", "mla"}
    assert set(acc["interconnect"]) <= {
        "nvlink3", "nvlink4", "nvlink5", "pcie4", "pcie5", "infinity-fabric", "ici"}
    assert set(clouds["plan"]) <= {"on-demand", "reserved-1y", "reserved-3y", "spot"}
    for name in ("llms", "api_prices"):
        q = _num(cat[name], "quality_score").dropna()
        assert ((q > 0) & (q <= 100)).all()
        t = _num(cat[name], "quality_tier").dropna()
        assert t.isin([1, 2, 3, 4, 5]).all()
    eff = _num(acc, "mamf_efficiency").dropna()
    assert ((eff > 0.3) & (eff < 1)).all()
    ratio = _num(cat["tokenizers"], "tokens_per_unit")
    assert ((ratio > 0.1) & (ratio < 5)).all()


# ----------------------------------------------------------------------------- required rows

REQUIRED = {
    "llms": [
        "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b", "qwen2.5-7b",
        "qwen2.5-72b", "mistral-7b", "mixtral-8x7b", "deepseek-v3", "llama-2-7b", "llama-2-70b",
        "gpt-3-175b", "gopher-280b", "palm-540b", "gpt-4-rumoured",
    ],
    "accelerators": [
        "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l4", "l40s", "a10g",
        "mi300x", "tpu-v4", "tpu-v5e",
    ],
    "api_prices": [
        "openai/gpt-4-turbo@2024-01", "openai/gpt-3.5-turbo@2023-04", "openai/davinci@2022",
        "openai/gpt-4o@2024-05", "openai/gpt-4o@2024-08", "openai/gpt-4o-mini-2024-07-18",
        "openai/gpt-4o-2024-08-06", "openai/gpt-3.5-turbo-0125",
    ],
    "cloud_prices": [
        "aws/p4d.24xlarge-reserved-1y", "azure/nd-a100-v4-reserved-3y", "gcp/tpu-v4-on-demand",
        "gcp/tpu-v4-reserved-1y", "aws/sagemaker-ml.g5.4xlarge-on-demand",
        "article-003/ml.g5.4xlarge-estimate",
    ],
    "servers": ["dgx-h100", "hgx-h100", "hgx-a100-80gb", "hgx-h200", "dgx-b200", "l40s-8gpu",
                "l4-8gpu", "mi300x-8gpu"],
}


@pytest.mark.parametrize("name", list(REQUIRED))
def test_required_ids_present(cat, name):
    missing = set(REQUIRED[name]) - set(cat[name]["id"])
    assert not missing, missing


def test_api_offerings_breadth(cat):
    api = cat["api_prices"]
    current = api[~api["id"].str.contains("@")]
    assert len(current) >= 16
    assert current["provider"].nunique() >= 5
    assert {"openai", "anthropic", "google", "deepseek", "mistral"} <= set(current["provider"])
    assert {"together", "fireworks"} & set(current["provider"])
    assert (_num(api, "input_usd_per_mtok").notna() & _num(api, "output_usd_per_mtok").notna()).all()


def test_fine_tuning_rows(cat):
    """OpenAI fine-tuning prices (OpenAI pricing page, as shown in article 000)."""
    api = cat["api_prices"]
    expect = {
        "openai/gpt-4o-mini-2024-07-18": (3.0, 0.30, 1.20),
        "openai/gpt-4o-2024-08-06": (25.0, 3.75, 15.0),
        "openai/gpt-3.5-turbo-0125": (8.0, 3.0, 6.0),
    }
    for entry_id, (train, fin, fout) in expect.items():
        r = _row(api, entry_id)
        got = tuple(_f(r, c) for c in
                    ("ft_train_usd_per_mtok", "ft_input_usd_per_mtok", "ft_output_usd_per_mtok"))
        assert got == pytest.approx((train, fin, fout))


def test_cloud_plans_for_h100_and_a100_80gb(cat):
    clouds = cat["cloud_prices"]
    assert {"on-demand", "reserved-1y", "reserved-3y", "spot"} <= set(
        clouds.loc[clouds["accelerator"] == "h100-sxm", "plan"])
    assert {"on-demand", "spot"} <= set(clouds.loc[clouds["accelerator"] == "a100-80gb", "plan"])


# ----------------------------------------------------------------------------- cross-references


def test_cross_references_resolve(cat):
    acc = set(cat["accelerators"]["id"])
    llm_ids = set(cat["llms"]["id"])
    for name in ("cloud_prices", "servers"):
        bad = set(cat[name]["accelerator"]) - acc
        assert not bad, f"{name}.accelerator not in accelerators.csv: {bad}"
    linked = set(cat["api_prices"]["llm"]) - {""}
    assert linked <= llm_ids, linked - llm_ids


def test_tokenizer_families_are_used(cat):
    """Every family in tokenizers.csv is the tokenizer of some model or API offering."""
    used = set(cat["llms"]["tokenizer"]) | set(cat["api_prices"]["tokenizer"])
    assert set(cat["tokenizers"]["tokenizer"]) <= used


def test_api_rows_agree_with_their_llm(cat):
    llms = cat["llms"].set_index("id")
    api = cat["api_prices"]
    for r in api[api["llm"] != ""].itertuples():
        m = llms.loc[r.llm]
        assert m["open_weights"] == "true", r.id
        assert r.tokenizer == m["tokenizer"], r.id
        assert float(r.quality_score) == pytest.approx(float(m["quality_score"])), r.id


def test_group_sizes_fit_the_box(cat):
    node = _num(cat["accelerators"], "gpus_per_node")
    node.index = cat["accelerators"]["id"]
    for name, col in (("cloud_prices", "gpus_per_instance"), ("servers", "gpus_per_server")):
        df = cat[name]
        n = _num(df, col)
        assert (n >= 1).all()
        assert (n.to_numpy() <= node.loc[df["accelerator"]].to_numpy()).all(), name


# ----------------------------------------------------------------------------- model physics


def kv_bytes_per_token(row: pd.Series, bytes_per_value: int = 2) -> float:
    """KV-cache bytes per token.

    GQA/MHA/MQA: 2 (K and V) x layers x kv_heads x head_dim x bytes.
    MLA (DeepSeek-V2/V3, arXiv 2412.19437): layers x (kv_lora_rank + qk_rope_head_dim) x bytes.
    """
    if row["attention"] == "mla":
        return _f(row, "layers") * (_f(row, "kv_lora_rank") + _f(row, "qk_rope_head_dim")) * (
            bytes_per_value)
    return 2 * _f(row, "layers") * _f(row, "kv_heads") * _f(row, "head_dim") * bytes_per_value


def test_kv_bytes_llama31_8b_bf16(cat):
    # 2 x 32 layers x 8 kv heads x 128 x 2 bytes = 131072 (model_arch.csv, vidur config)
    assert kv_bytes_per_token(_row(cat["llms"], "llama-3.1-8b")) == 131072


def test_kv_bytes_match_reference_table(cat):
    ref = pd.read_csv(MODEL_ARCH)
    ids = {"Llama-3.1-8B": "llama-3.1-8b", "Llama-3.1-70B": "llama-3.1-70b",
           "Llama-3.1-405B": "llama-3.1-405b", "Qwen2.5-7B": "qwen2.5-7b",
           "Qwen2.5-72B": "qwen2.5-72b", "Mistral-7B-v0.1": "mistral-7b",
           "Mixtral-8x7B": "mixtral-8x7b", "DeepSeek-V3": "deepseek-v3"}
    for r in ref.itertuples():
        expected = float(re.match(r"\d+", str(r.kv_bytes_per_token_bf16)).group())
        assert kv_bytes_per_token(_row(cat["llms"], ids[r.model])) == expected, r.model


def test_moe_fields(cat):
    llms = cat["llms"]
    total, active = _num(llms, "params_b"), _num(llms, "active_params_b")
    both = total.notna() & active.notna()
    assert (active[both] <= total[both]).all()
    experts = _num(llms, "experts")
    moe = experts.notna()
    assert (_num(llms, "experts_per_token")[moe] <= experts[moe]).all()
    assert (active[moe & both] < total[moe & both]).all()
    assert (active[~moe & both] == total[~moe & both]).all()
    assert _num(llms, "moe_ffn_intermediate")[moe].notna().all()
    mixtral = _row(llms, "mixtral-8x7b")
    assert (_f(mixtral, "params_b"), _f(mixtral, "active_params_b")) == (46.7, 12.9)


def test_dense_param_counts_follow_from_shape(cat):
    """A parameter count from the row's shape reproduces params_b (within 0.5 %) for dense models.

    params ~= L * (2*h*h + 2*h*kv*d + 3*h*ffn) + 2*V*h  (untied embeddings, SwiGLU FFN).
    """
    llms = cat["llms"]
    for entry_id in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen2.5-72b",
                     "mistral-7b", "llama-2-7b", "llama-2-70b"):
        r = _row(llms, entry_id)
        L, h, kv, d = (_f(r, c) for c in ("layers", "hidden", "kv_heads", "head_dim"))
        ffn, vocab = _f(r, "ffn_intermediate"), _f(r, "vocab")
        n = L * (2 * h * h + 2 * h * kv * d + 3 * h * ffn) + 2 * vocab * h
        assert n / 1e9 == pytest.approx(_f(r, "params_b"), rel=0.005), entry_id


# ----------------------------------------------------------------------------- prices


def test_cloud_prices_consistent(cat):
    clouds = cat["cloud_prices"]
    gpu, inst, n = (_num(clouds, c) for c in
                    ("usd_per_gpu_hour", "usd_per_instance_hour", "gpus_per_instance"))
    both = gpu.notna() & inst.notna()
    np.testing.assert_allclose(inst[both], gpu[both] * n[both], rtol=1e-3)
    unpriced = set(clouds.loc[gpu.isna() & inst.isna(), "id"])
    assert unpriced == {"aws/sagemaker-ml.g5.4xlarge-on-demand"}


def test_historical_api_prices(cat):
    """Articles 001-004 price points, USD per million tokens."""
    api = cat["api_prices"]
    expect = {
        "openai/gpt-4-turbo@2024-01": (10.0, 30.0),  # article 001: $0.01 / $0.03 per 1K
        "openai/gpt-3.5-turbo@2023-04": (2.0, 2.0),  # article 003: $0.002 per 1K
        "openai/davinci@2022": (20.0, 20.0),  # article 004: $0.02 per 1K
        "openai/gpt-4o@2024-05": (5.0, 15.0),  # article 002
        "openai/gpt-4o@2024-08": (2.5, 10.0),  # article 002
    }
    for entry_id, (i, o) in expect.items():
        r = _row(api, entry_id)
        assert (_f(r, "input_usd_per_mtok"), _f(r, "output_usd_per_mtok")) == (i, o)


def test_api_prices_match_litellm_json(cat):
    """Rows naming a LiteLLM key carry that key's prices x 1e6 (exact up to float rounding)."""
    data = json.loads(LITELLM.read_text(encoding="utf-8"))
    pairs = {
        "input_usd_per_mtok": ["input_cost_per_token"],
        "output_usd_per_mtok": ["output_cost_per_token"],
        "cached_input_usd_per_mtok": ["cache_read_input_token_cost",
                                      "input_cost_per_token_cache_hit"],
        "batch_input_usd_per_mtok": ["input_cost_per_token_batches"],
        "batch_output_usd_per_mtok": ["output_cost_per_token_batches"],
    }
    checked = 0
    for r in cat["api_prices"].itertuples():
        m = re.search(r"\(litellm==1\.109\.1\) key '([^']+)'", r.source)
        if not m:
            continue
        entry = data[m.group(1)]
        for col, keys in pairs.items():
            val = next((entry[k] for k in keys if entry.get(k) is not None), None)
            cell = getattr(r, col)
            if val is None:
                assert cell == "", (r.id, col)
            else:
                assert float(cell) == pytest.approx(val * 1e6, rel=1e-9), (r.id, col)
        ft = re.search(r"LiteLLM key '(ft:[^']+)'", r.source)
        if ft:
            fe = data[ft.group(1)]
            assert float(r.ft_input_usd_per_mtok) == pytest.approx(fe["input_cost_per_token"] * 1e6)
            assert float(r.ft_output_usd_per_mtok) == pytest.approx(
                fe["output_cost_per_token"] * 1e6)
        checked += 1
    assert checked >= 30


# ----------------------------------------------------------------------------- published figures


def _tpu(cat, entry_id: str) -> float:
    return _f(_row(cat["tokenizers"].assign(id=cat["tokenizers"]["tokenizer"] + "/"
                                            + cat["tokenizers"]["lang"] + "/"
                                            + cat["tokenizers"]["unit"]), entry_id),
              "tokens_per_unit")


def test_article_000_token_counts(cat):
    # article 000: 48 English words -> 58 tokens; 186 Chinese characters -> 183 tokens (+-1)
    assert 48 * _tpu(cat, "o200k/en/word") == pytest.approx(58, abs=1)
    assert 186 * _tpu(cat, "o200k/zh/char") == pytest.approx(183, abs=1)


def test_article_001_summary_cost(cat):
    # article 001: 5000-char article -> 500-char summary with GPT-4 Turbo costs $0.13
    price = _row(cat["api_prices"], "openai/gpt-4-turbo@2024-01")
    tpc = _tpu(cat, "cl100k/zh/char")
    usd = (5000 * tpc * _f(price, "input_usd_per_mtok")
           + 500 * tpc * _f(price, "output_usd_per_mtok")) / 1e6
    assert usd == pytest.approx(0.13, rel=1e-9)


def test_article_001_compute_costs(cat):
    """Article 001: cost = FLOPs / A100 peak x Azure 3-year A100 price.

    Inference per 1K tokens for GPT-4 Turbo (8 x 222B): published $0.0071656 (tol 0.1 %).
    Pre-training GPT-3 175B on 500B tokens (6N per token): published ~$1.05M (tol 1 %).
    """
    flops = _f(_row(cat["accelerators"], "a100-40gb"), "bf16_tflops") * 1e12
    usd_per_s = _f(_row(cat["cloud_prices"], "azure/nd-a100-v4-reserved-3y"),
                   "usd_per_gpu_hour") / 3600
    n_gpt4 = _f(_row(cat["llms"], "gpt-4-rumoured"), "params_b") * 1e9
    assert 1000 * 2 * n_gpt4 / flops * usd_per_s == pytest.approx(0.0071656, rel=1e-3)
    n_gpt3 = _f(_row(cat["llms"], "gpt-3-175b"), "params_b") * 1e9
    assert 6 * n_gpt3 * 500e9 / flops * usd_per_s == pytest.approx(1.05e6, rel=0.01)


def test_article_003_chatgpt_daily_cost(cat):
    # article 003: 1000 chunks x 667 tokens/day at the ChatGPT API price ~ $1.3/day (tol 3 %)
    r = _row(cat["api_prices"], "openai/gpt-3.5-turbo@2023-04")
    assert 1000 * 667 * _f(r, "input_usd_per_mtok") / 1e6 == pytest.approx(1.3, rel=0.03)


def test_article_004_gpt3_costs(cat):
    """Article 004 (Sunyan): GPT-3 175B on cloud hardware.

    Inference on AWS p4d 1-year reserved at 21.3 % FLOPS utilisation: ~$0.0035 per 1K tokens
    (tol 2 %). Training on 300B tokens on TPU v4 1-year commitment at 46.2 % utilisation:
    ~$1.4M (tol 2 %).
    """
    n = _f(_row(cat["llms"], "gpt-3-175b"), "params_b") * 1e9
    a100 = _f(_row(cat["accelerators"], "a100-40gb"), "bf16_tflops") * 1e12
    p4d = _f(_row(cat["cloud_prices"], "aws/p4d.24xlarge-reserved-1y"), "usd_per_gpu_hour")
    infer = 1000 * 2 * n / (a100 * 0.213) * p4d / 3600
    assert infer == pytest.approx(0.0035, rel=0.02)
    tpu = _f(_row(cat["accelerators"], "tpu-v4"), "bf16_tflops") * 1e12
    tpu_1y = _f(_row(cat["cloud_prices"], "gcp/tpu-v4-reserved-1y"), "usd_per_gpu_hour")
    train = 6 * n * 300e9 / (tpu * 0.462) * tpu_1y / 3600
    assert train == pytest.approx(1.4e6, rel=0.02)


def test_catalog_loads_with_planner_loader():
    from planner.catalog import load_catalog

    c = load_catalog(MODELS)
    assert c.llm("llama-3.1-8b")["open_weights"] is True
    assert c.accelerator("h100-sxm")["interconnect_gbps"] == 450
    assert c.tokens_per_unit("o200k", "zh", "char")["tokens_per_unit"] == pytest.approx(0.98)


def test_device_memory_reading_is_close_to_the_data_sheet(cat):
    # device_mem_mib is the device's own reading (MiB); HBM parts report about mem_gb x 2^30,
    # GDDR parts about mem_gb x 1e9, so the bytes stay within 0-10 % above the data-sheet GB
    # (a value typed in GB or GiB instead of MiB would be ~1000x off), and each reading names
    # its source and date
    acc = cat["accelerators"]
    mib = _num(acc, "device_mem_mib")
    known = mib.notna()
    assert known.sum() >= 12
    ratio = mib[known] * 2**20 / (_num(acc, "mem_gb")[known] * 1e9)
    assert ((ratio >= 1.0) & (ratio < 1.10)).all(), ratio
    assert (acc.loc[known, "device_mem_source"].str.len() > 10).all()
    assert acc.loc[known, "device_mem_as_of"].str.match(AS_OF).all()
    assert (acc.loc[~known, "device_mem_source"] == "").all()
