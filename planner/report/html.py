"""The report as one self-contained HTML page (Vega, Vega-Lite and Vega-Embed inlined).

Every user-supplied string goes through :func:`html.escape`; chart specifications are embedded
as JSON in a ``<script type="application/json">`` element with ``<``, ``>`` and ``&`` written
as ``\\u003c`` etc., so no string in a spec can close the script element.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
import pandas as pd

from planner.report.glossary import column_help
from planner.report.model import (
    Bullets,
    Chart,
    Facts,
    HowTo,
    Note,
    Paragraph,
    Section,
    Table,
)

#: Rows of a table shown in the page; the CSV always holds all of them.
MAX_HTML_ROWS = 300
#: CSV size up to which the download link is a data: URI (self-contained); larger tables
#: link to tables/NAME.csv beside the page.
MAX_DATA_URI_BYTES = 2_000_000
#: Tables with more columns than this say that they scroll sideways.
WIDE_COLUMNS = 12

CSS = """
:root { --fg:#1d2430; --muted:#5b6472; --line:#d9dee5; --accent:#2f6db3; --bg-soft:#f5f7fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); margin: 0; }
header { background: #17324d; color: #fff; padding: 24px 40px 18px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 2px 0; color: #cfd9e4; }
nav { padding: 8px 40px; border-bottom: 1px solid var(--line); background: var(--bg-soft); }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1600px; }
section { margin-top: 28px; }
h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 18px 0 6px; font-size: 16px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px; margin: 0; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; }
.note { border-left: 4px solid #e0a800; background: #fff8e1; padding: 6px 12px; margin: 8px 0; }
figure { margin: 16px 0 24px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.chart { min-height: 60px; }
.table-wrap { max-height: 420px; max-width: 100%; overflow: auto;
              border: 1px solid var(--line); }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
td { max-width: 32em; overflow-wrap: break-word; }
.tablehead .hint { color: var(--muted); font-size: 12px; }
th { position: sticky; top: 0; background: var(--bg-soft); max-width: 9em;
     overflow-wrap: normal; hyphens: none; }
th[title] { text-decoration: underline dotted; cursor: help; }
.howto { border-left: 4px solid var(--accent); background: #eef4fb; padding: 6px 14px;
         margin: 8px 0 14px; font-size: 14px; }
.howto h3 { margin: 4px 0; font-size: 14px; }
.howto ul { margin: 4px 0; padding-left: 20px; }
.howto dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px;
            margin: 4px 0; }
.howto dt { font-weight: 600; }
.howto dd { margin: 0; }
.chart { max-width: 100%; overflow-x: auto; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.tablehead { display: flex; gap: 12px; align-items: baseline; }
.tablehead a { font-size: 13px; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; padding: 16px 40px; border-top: 1px solid var(--line); }
"""

EMBED_JS = """
(function () {
  var specs = JSON.parse(document.getElementById("report-specs").textContent);
  var opts = {renderer: "svg", actions: {export: true, source: false, compiled: false,
              editor: false}};
  Object.keys(specs).forEach(function (name) {
    var el = document.getElementById("chart-" + name);
    vegaEmbed(el, specs[name], opts).then(function () {
      el.setAttribute("data-rendered", "ok");
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      el.textContent = "This chart failed to render: " + err;
      console.error(err);
    });
  });
})();
"""


def script_json(obj) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' characters survive."""
    s = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def cell(x) -> tuple[str, bool]:
    """(text, is_number) for a table cell."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "", False
    if isinstance(x, bool | np.bool_):
        return str(bool(x)), False
    if isinstance(x, int | np.integer):
        return f"{int(x):,}", True
    if isinstance(x, float | np.floating):
        v = float(x)
        if math.isinf(v):
            return ("inf" if v > 0 else "-inf"), True
        if v != 0 and (abs(v) >= 1e12 or abs(v) < 1e-3):
            return f"{v:.4g}", True
        if abs(v) >= 1000:
            return f"{v:,.0f}", True
        return f"{v:.4g}", True
    return str(x), False


def csv_href(name: str, csv_text: str) -> str:
    data = csv_text.encode("utf-8")
    if len(data) <= MAX_DATA_URI_BYTES:
        return "data:text/csv;charset=utf-8," + urllib.parse.quote(csv_text, safe="")
    return f"tables/{urllib.parse.quote(name)}.csv"


def _th(name: str) -> str:
    """A header cell: the column name, breakable after each underscore (long names wrap
    instead of widening the table), with its glossary meaning as a tooltip when known."""
    text = "_<wbr>".join(escape(part) for part in name.split("_"))
    tip = column_help(name)
    title = f' title="{escape(tip, quote=True)}"' if tip else ""
    return f"<th{title}>{text}</th>"


def table_html(t: Table, csv_text: str) -> str:
    df = t.frame
    head = "".join(_th(str(c)) for c in df.columns)
    rows = []
    for rec in df.head(MAX_HTML_ROWS).itertuples(index=False, name=None):
        tds = []
        for v in rec:
            text, num = cell(v)
            tds.append(f'<td class="num">{escape(text)}</td>' if num
                       else f"<td>{escape(text)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    more = ""
    if len(df) > MAX_HTML_ROWS:
        more = (f'<p class="note">Showing the first {MAX_HTML_ROWS} of {len(df):,} rows; '
                f"the CSV has all of them.</p>")
    if df.empty:
        body = "<p>(no rows)</p>"
    else:
        body = (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div>")
    cap = f"<p>{escape(t.caption)}</p>" if t.caption else ""
    href = escape(csv_href(t.name, csv_text), quote=True)
    hint = (f'<span class="hint">{len(df.columns)} columns: the table scrolls sideways in '
            "its box; hover a header for its meaning</span>"
            if len(df.columns) > WIDE_COLUMNS else "")
    return (f'<div class="table" id="table-{escape(t.name, quote=True)}">'
            f'<div class="tablehead"><h3>{escape(t.name)}</h3>'
            f'<a href="{href}" download="{escape(t.name, quote=True)}.csv">download CSV</a>'
            f"{hint}</div>{cap}{body}{more}</div>")


def chart_html(c: Chart) -> str:
    name = escape(c.name, quote=True)
    cap = escape(c.caption) + " · " if c.caption else ""
    return (f'<figure><div class="chart" id="chart-{name}" data-chart="{name}"></div>'
            f'<figcaption>{cap}<a href="charts/{name}.png">PNG</a> · '
            f'<a href="charts/{name}.svg">SVG</a></figcaption></figure>')


def section_html(s: Section, csvs: Mapping[str, str]) -> str:
    parts = [f'<section id="{escape(s.key, quote=True)}"><h2>{escape(s.title)}</h2>']
    for b in s.blocks:
        if isinstance(b, Paragraph):
            parts.append(f"<p>{escape(b.text)}</p>")
        elif isinstance(b, Note):
            parts.append(f'<p class="note">{escape(b.text)}</p>')
        elif isinstance(b, Facts):
            items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in b.items)
            parts.append(f'<dl class="facts">{items}</dl>')
        elif isinstance(b, HowTo):
            items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in b.items)
            parts.append(f'<aside class="howto"><h3>{escape(b.title)}</h3>'
                         f"<dl>{items}</dl></aside>")
        elif isinstance(b, Bullets):
            lis = "".join(f"<li>{escape(x)}</li>" for x in b.items)
            parts.append(f"<h3>{escape(b.title)}</h3><ul>{lis}</ul>")
        elif isinstance(b, Chart):
            parts.append(chart_html(b))
        elif isinstance(b, Table):
            parts.append(table_html(b, csvs[b.name]))
        else:  # pragma: no cover - the model has no other block types
            raise TypeError(f"unknown block {type(b).__name__}")
    parts.append("</section>")
    return "".join(parts)


def page(*, title: str, subtitle: Sequence[str], sections: Sequence[Section],
         specs: Mapping[str, dict], csvs: Mapping[str, str], js_bundle: str,
         footer: str) -> str:
    """The whole HTML document."""
    nav = "".join(f'<a href="#{escape(s.key, quote=True)}">{escape(s.title)}</a>'
                  for s in sections)
    subs = "".join(f"<p>{escape(x)}</p>" for x in subtitle)
    body = "".join(section_html(s, csvs) for s in sections)
    scripts = ""
    if specs:
        scripts = (f"<script>{js_bundle}</script>"
                   f'<script type="application/json" id="report-specs">{script_json(specs)}'
                   f"</script><script>{EMBED_JS}</script>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1>{subs}</header><nav>{nav}</nav>"
        f"<main>{body}</main><footer>{escape(footer)}</footer>{scripts}</body></html>\n"
    )


def frame_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)
