"""Count words and characters of a text for token estimates (``planner tokens``).

Words: runs of letters/digits (with inner apostrophes/hyphens) outside CJK scripts.
Characters (for Chinese/Japanese/Korean): CJK ideographs, kana and hangul, one each; source
article 000 counts Chinese text in characters (汉字) and English in words.
"""

from __future__ import annotations

import re

_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # hangul syllables
)
CJK_RE = re.compile(f"[{_CJK}]")
WORD_RE = re.compile(f"[^\\W_{_CJK}]+(?:['’\\-][^\\W_{_CJK}]+)*", re.UNICODE)


def count_text(text: str) -> dict[str, int]:
    """Return ``{"words": n, "cjk_chars": n, "chars": n}`` (chars excludes whitespace)."""
    return {
        "words": len(WORD_RE.findall(text)),
        "cjk_chars": len(CJK_RE.findall(text)),
        "chars": sum(1 for ch in text if not ch.isspace()),
    }
