"""Catalog sources as a reader of the report needs them: the original publication, never a
path that exists only where the catalog was built.

Catalog rows cite five articles by their number in the project's seed set ("article 004").
:data:`ARTICLES` gives each its original citation (author or publication, title, date,
address: as far as the copy records them; see ``models/README.md``), and
:func:`original_source` writes it in place of the number. Paths of the build environment
(``shared/...``, absolute paths) are removed and the row is flagged.
"""

from __future__ import annotations

import re

import pandas as pd

#: Article number -> (citation, complete). ``complete`` is False when the copy the catalog
#: was compiled from does not record the author or the address of the original.
ARTICLES: dict[str, tuple[str, bool]] = {
    "000": ("产品二姐 (WeChat public-account article on the compute cost of LLM products, "
            "2024-10-20; address not recorded)", False),
    "001": ("AI 工程化, '做大模型 AI 应用一定要了解的成本计算公式' (2024-01-24), "
            "https://mp.weixin.qq.com/s/IyudyZ0YVFtT2nwSxoH8BA", True),
    "002": ("'为什么使用大模型API时, output token 的价格比 input token 更贵?', CSDN blog of user "
            "qq_59084968 (2024; the same text), "
            "https://blog.csdn.net/qq_59084968/article/details/141164377", True),
    "003": ("'LLM “经济学”: ChatGPT 与开源模型, 二者之间有哪些优劣权衡? 谁的部署成本更低?', a "
            "Chinese translation of Skanda Vivek, 'LLM Economics: ChatGPT vs Open-Source', "
            "Towards Data Science (written 2023-04-24; address of the translation not "
            "recorded)", False),
    "004": ("Sunyan, 'ChatGPT 背后的经济账', 极客公园 (2023-02-20), https://mp.weixin.qq.com/"
            "s?__biz=MTMwNDMwODQ0MQ==&mid=2652983226&idx=1&sn=034e3e8ecd53394c0eb980c9c0a31a48",
            True),
}

_ARTICLE = re.compile(r"\barticles? (00[0-4])\b")
#: Paths that exist only where the catalog was built (or on the machine running the report).
_BUILD_PATH = re.compile(r"(?:\.\./)?\bshared/[\w./-]+|(?<![\w.:/])/(?:work|home|tmp|farm|root)"
                         r"/[\w./-]+")

_EITHER = re.compile(rf"\barticles? 00[0-4]\b|(?:{_BUILD_PATH.pattern})")


def original_source(text: object) -> tuple[str, bool]:
    """``(source, complete)``: ``text`` with every "article 00N" replaced by the article's
    original citation and every build-environment path removed; ``complete`` is False when
    an article's citation lacks its author or address, or a path had to be removed."""
    s = "" if text is None or (isinstance(text, float) and text != text) else str(text)
    complete = True

    def article(m: re.Match) -> str:
        nonlocal complete
        cite, ok = ARTICLES[m.group(1)]
        complete &= ok
        return cite

    s = _ARTICLE.sub(article, s)
    if _BUILD_PATH.search(s):
        complete = False
        s = _BUILD_PATH.sub("(a build-environment path, removed)", s)
    return s, complete


def with_original_sources(df: pd.DataFrame, column: str = "source") -> tuple[pd.DataFrame, list[str]]:
    """``df`` with ``column`` rewritten by :func:`original_source`, and the ids (or row
    numbers) whose original source is still incomplete."""
    if column not in df.columns:
        return df, []
    pairs = [original_source(v) for v in df[column]]
    out = df.copy()
    out[column] = [p[0] for p in pairs]
    ids = out["id"].astype(str) if "id" in out.columns else pd.Series(
        [str(i) for i in range(len(out))], index=out.index)
    lacking = [i for i, (_, ok) in zip(ids, pairs, strict=True) if not ok]
    return out, lacking


def clean_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :func:`original_source` applied to every text cell that cites an article
    or a build-environment path (other cells and columns untouched; ``df`` itself when none
    does)."""
    out = None
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_datetime64_any_dtype(df[c]):
            continue
        col = df[c]
        hit = col.astype(str).str.contains(_EITHER, na=False).to_numpy(dtype=bool).copy()
        if hit.any():
            hit &= col.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if hit.any():
            out = df.copy() if out is None else out
            out.loc[hit, c] = col[hit].map(lambda v: original_source(v)[0])
    return df if out is None else out
