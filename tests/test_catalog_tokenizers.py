"""Catalog consistency of the tokenizer families: every tokenizer an LLM row names has a
words/characters-to-tokens row in ``tokenizers.csv`` (or is listed, with the reason, as having
no published ratio), and the rows resolve through the planner's loader to that family rather
than to another family's fallback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from planner.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"

#: Tokenizer families named by llms.csv for which no published words/characters-to-tokens
#: ratio was found (the catalog leaves figures out rather than guess them). A family leaves
#: this set when its row is added (``test_no_published_ratio_list_is_current``).
NO_PUBLISHED_RATIO = {
    "mistral": "Mistral publishes no tokens-per-word or per-character figure for its 32k "
               "SentencePiece vocabulary",
    "gopher": "the Gopher paper (arXiv 2112.11446) gives no tokens-per-word figure",
    "palm": "the PaLM paper (arXiv 2204.02311) gives no tokens-per-word figure",
    "t5": "no published ratio for the T5 SentencePiece vocabulary (Flan-UL2)",
}


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(MODELS / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _read("llms"), _read("tokenizers")


def test_every_llm_tokenizer_has_a_row(tables):
    llms, toks = tables
    named = set(llms["tokenizer"]) - {""}
    missing = named - set(toks["tokenizer"]) - set(NO_PUBLISHED_RATIO)
    assert not missing, (
        f"llms.csv names tokenizer(s) without a row in tokenizers.csv: {sorted(missing)}; "
        "add a sourced row (or, when no ratio is published, list the family in "
        "NO_PUBLISHED_RATIO with the reason)")


def test_no_published_ratio_list_is_current(tables):
    llms, toks = tables
    named = set(llms["tokenizer"]) - {""}
    assert set(NO_PUBLISHED_RATIO) <= named, set(NO_PUBLISHED_RATIO) - named
    assert not set(NO_PUBLISHED_RATIO) & set(toks["tokenizer"])


def test_qwen_models_use_a_qwen2_row(tables):
    llms, toks = tables
    qwen = llms[llms["family"].str.startswith("qwen")]
    assert len(qwen) >= 2 and set(qwen["tokenizer"]) == {"qwen2"}
    rows = toks[toks["tokenizer"] == "qwen2"]
    assert {("en", "word"), ("zh", "char")} <= set(zip(rows["lang"], rows["unit"], strict=True))
    for r in rows.itertuples():
        assert r.source and r.as_of


def test_loader_resolves_each_family_to_its_own_row():
    """The planner's loader falls back to another family's row when a family has none for a
    language and unit; the new rows must be found as themselves."""
    cat = load_catalog(MODELS)
    toks = cat.tokenizers
    for r in toks.itertuples():
        got = cat.tokens_per_unit(r.tokenizer, r.lang, r.unit)
        assert got["tokenizer"] == r.tokenizer, (r.tokenizer, r.lang, r.unit, got["tokenizer"])
        assert got["tokens_per_unit"] == pytest.approx(float(r.tokens_per_unit))
    qwen7b = cat.llm("qwen2.5-7b")["tokenizer"]
    assert cat.tokens_per_unit(qwen7b, "en", "word")["tokenizer"] == "qwen2"


def test_llama_ratios_reproduce_the_published_compression():
    """Llama 3 paper (arXiv 2407.21783): 3.17 -> 3.94 characters per token on English, i.e.
    Llama 3 needs 3.17 / 3.94 of Llama 2's tokens for the same text (rows rounded to 4
    decimals)."""
    cat = load_catalog(MODELS)
    l3 = cat.tokens_per_unit("llama3", "en", "char")["tokens_per_unit"]
    l2 = cat.tokens_per_unit("llama2", "en", "char")["tokens_per_unit"]
    assert 1.0 / l3 == pytest.approx(3.94, abs=0.01)
    assert 1.0 / l2 == pytest.approx(3.17, abs=0.01)
    assert l3 / l2 == pytest.approx(3.17 / 3.94, rel=1e-3)
