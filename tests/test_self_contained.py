"""The repository passes its own tests and builds complete reports without ``../shared``.

Everything the product reads ships inside the package (``planner/data``, ``planner/_catalog``);
the tests' own fixtures live in ``tests/data``. Nothing resolves a path outside the checkout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import planner

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(planner.__file__).resolve().parent

#: Paths opened while ``_opened`` is a list (an audit hook cannot be removed, so it stays
#: installed for the session and records nothing otherwise).
_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


def _opens(fn):
    global _opened
    _opened = []
    try:
        result = fn()
        return result, _opened
    finally:
        _opened = None


def test_no_code_reads_the_sibling_shared_folder():
    # a string literal naming ../shared, or a path built with a "shared" component
    pattern = re.compile(r"""["']\.\./shared|["']shared["']\s*/|/\s*["']shared["']""")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for base in (ROOT / "planner", ROOT / "tests", ROOT / "studies")
            for p in sorted(base.rglob("*.py")) if p.resolve() != Path(__file__).resolve()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


def test_performance_validation_reads_only_the_shipped_data():
    from planner.catalog import load_catalog
    from planner.perf.validation import predict_calibration

    cat = load_catalog()
    table, opened = _opens(lambda: predict_calibration(catalog=cat))
    assert len(table) == 9 and table["predicted_tokens_per_s"].gt(0).all()
    data = [Path(p).resolve() for p in opened if p.endswith((".csv", ".json"))]
    assert data, "the calibration CSV was not read"
    for p in data:
        assert p.is_relative_to(PACKAGE), p
    assert not any("shared" in Path(p).parts for p in opened), opened


def test_catalog_sources_cite_originals_not_build_only_paths():
    # ``shared/data/...`` exists only in the build environment; a reader needs the vendor page,
    # repository and commit, or paper the figure came from
    from planner.catalog import TABLES, load_catalog

    cat = load_catalog()
    bad = [(name, src) for name in TABLES
           for src in cat.table(name)["source"] if "shared/" in str(src)]
    assert not bad, bad
