"""The report's content model: sections made of blocks (text, facts, charts, tables).

All strings are plain text; the HTML writer escapes every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    """A remark set apart (an omitted chart, a warning)."""

    text: str


@dataclass(frozen=True)
class Facts:
    """Label/value pairs (the summary's headline figures)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Bullets:
    title: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class HowTo:
    """A "how to read this" box: terms of a section and what they mean, one line each."""

    title: str
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Chart:
    """A chart; ``name`` is its file stem (charts/NAME.png, .svg) and element id.

    ``chart`` is the altair chart, ``spec`` its Vega-Lite specification (data inlined); a
    chart read from the specification cache (:mod:`planner.report.speccache`) has the spec
    only (``chart`` is None)."""

    name: str
    chart: Any
    caption: str = ""
    spec: dict | None = None


@dataclass(frozen=True)
class Table:
    """A tidy table; ``name`` is its file stem (tables/NAME.csv)."""

    name: str
    frame: pd.DataFrame
    caption: str = ""


Block = Paragraph | Note | Facts | Bullets | HowTo | Chart | Table


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self

    def charts(self) -> list[Chart]:
        return [b for b in self.blocks if isinstance(b, Chart)]

    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]
