"""Chart specs, the inlined JavaScript and static images, all through ``vl-convert-python``.

vl-convert bundles Vega, Vega-Lite and Vega-Embed (no network), so the report needs no CDN and
PNG/SVG export needs no browser.
"""

from __future__ import annotations

import functools
import re

import altair as alt

from planner.errors import PlannerError

#: PNG pixel density (2 = sharp on high-DPI screens and slides).
PNG_SCALE = 2.0


def _vlc():
    try:
        import vl_convert
    except ModuleNotFoundError:
        raise PlannerError(
            "planner report needs the vl-convert-python package (it bundles the Vega "
            "JavaScript and renders PNG/SVG): pip install vl-convert-python"
        ) from None
    return vl_convert


def vegalite_version() -> str:
    """'MAJOR.MINOR' of the Vega-Lite schema altair writes (e.g. '6.4')."""
    m = re.match(r"v?(\d+)\.(\d+)", alt.SCHEMA_VERSION)
    if m is None:  # pragma: no cover - altair always has a version
        raise RuntimeError(f"cannot parse altair.SCHEMA_VERSION {alt.SCHEMA_VERSION!r}")
    return f"{m.group(1)}.{m.group(2)}"


@functools.cache
def js_bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one script defining window.vegaEmbed (~0.9 MB)."""
    js = _vlc().javascript_bundle(vl_version=vegalite_version())
    if "</script" in js.lower():  # pragma: no cover - would end the inline <script> early
        raise RuntimeError("the Vega bundle contains '</script'; cannot inline it")
    return js


def spec(chart) -> dict:
    """The chart's Vega-Lite specification with its data inlined."""
    return chart.to_dict()


def svg(spec_dict: dict) -> str:
    return _vlc().vegalite_to_svg(spec_dict, vl_version=vegalite_version())


def png(spec_dict: dict, scale: float = PNG_SCALE) -> bytes:
    return _vlc().vegalite_to_png(spec_dict, vl_version=vegalite_version(), scale=scale)


def svg_to_png(svg_text: str, scale: float = PNG_SCALE) -> bytes:
    """Rasterise an SVG made by :func:`svg` (about 3x faster than rendering the spec again)."""
    return _vlc().svg_to_png(svg_text, scale=scale)
