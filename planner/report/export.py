"""Chart specs, the inlined JavaScript and static images, all through ``vl-convert-python``.

vl-convert bundles Vega, Vega-Lite and Vega-Embed (no network), so the report needs no CDN and
PNG/SVG export needs no browser. Building that JavaScript bundle takes 1.3-1.7 s, so it is
cached on disk (:func:`cache_dir`), keyed by the versions that determine it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

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


def cache_dir() -> Path:
    """Directory for planner's caches: ``$PLANNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/planner``,
    else the platform's user cache directory (``~/.cache/planner`` on Linux,
    ``~/Library/Caches/planner`` on macOS, ``%LOCALAPPDATA%/planner/Cache`` on Windows)."""
    env = os.environ.get("PLANNER_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is ignored
        return Path(xdg) / "planner"
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "planner"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "planner" / "Cache"
    return home / ".cache" / "planner"


def _bundle_key() -> str:
    """The versions that determine the bundle: vl-convert (which embeds Vega, Vega-Embed and
    each Vega-Lite it supports) and the Vega-Lite version asked for."""
    vlc = _vlc()
    try:
        from importlib.metadata import version

        vlc_version = version("vl-convert-python")
    except ImportError:  # no metadata (PackageNotFoundError): fall back to the module
        vlc_version = str(getattr(vlc, "__version__", "unknown"))
    raw = f"vl-convert {vlc_version}; vega-lite {vegalite_version()}"
    tag = re.sub(r"[^A-Za-z0-9.-]+", "_", f"vlc{vlc_version}-vl{vegalite_version()}")
    return f"vega-bundle-{tag}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}.js"


def bundle_cache_path() -> Path:
    """Where :func:`js_bundle` keeps the bundle for the installed versions."""
    return cache_dir() / _bundle_key()


def _read_cached(path: Path) -> str | None:
    try:
        js = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    # written atomically, so a file is whole; still refuse one that is not a bundle
    return js if "vegaEmbed" in js and "</script" not in js.lower() else None


def _write_cached(path: Path, js: str) -> None:
    """Write atomically (temporary file + rename); a read-only cache is silently skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(js)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


@functools.cache
def js_bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one script defining window.vegaEmbed (~0.9 MB).

    Read from the on-disk cache (:func:`bundle_cache_path`) when there; otherwise built by
    vl-convert and stored there for the next run. ``PLANNER_NO_CACHE=1`` skips the cache.
    """
    if threading.current_thread() is not _warm_thread():
        _ready()  # (functools.cache does not stop two threads building it at once)
    use_cache = not os.environ.get("PLANNER_NO_CACHE")
    path = bundle_cache_path() if use_cache else None
    if path is not None:
        js = _read_cached(path)
        if js is not None:
            return js
    js = _vlc().javascript_bundle(vl_version=vegalite_version())
    if "</script" in js.lower():  # pragma: no cover - would end the inline <script> early
        raise RuntimeError("the Vega bundle contains '</script'; cannot inline it")
    if path is not None:
        _write_cached(path, js)
    return js


def spec(chart) -> dict:
    """The chart's Vega-Lite specification with its data inlined.

    altair's JSON-schema validation of every chart costs ~0.05-0.1 s each (most of a second
    per report) and checks planner's own chart code, not user input: it runs when
    ``PLANNER_VALIDATE_CHARTS`` is set (the test suite sets it), not in normal runs.
    """
    return chart.to_dict(validate=bool(os.environ.get("PLANNER_VALIDATE_CHARTS")))


_WARM: list[threading.Thread] = []
_WARM_SPEC = {
    "data": {"values": [{"a": 0}]}, "mark": "point",
    "encoding": {"x": {"field": "a", "type": "quantitative"}},
}


def warm_up() -> None:
    """Start vl-convert's JavaScript engine (and read or build the bundle) on a background
    thread: the first conversion of a process costs ~1.3 s, spent in native code that does
    not hold the GIL, so it overlaps the engines' Python work instead of following it.
    Conversions wait for it to finish (:func:`_ready`); a failure here is left for the real
    conversion to report."""
    if _WARM:
        return

    def run() -> None:
        try:
            _vlc().vegalite_to_svg(_WARM_SPEC, vl_version=vegalite_version())
            js_bundle()
        except Exception:  # noqa: S110 - the real call raises the same error, with context
            pass

    t = threading.Thread(target=run, name="planner-vl-convert-warm-up", daemon=True)
    _WARM.append(t)
    t.start()


def _warm_thread() -> threading.Thread | None:
    return _WARM[0] if _WARM else None


def _ready() -> None:
    """Wait for :func:`warm_up` (vl-convert is then called from one thread at a time)."""
    for t in _WARM:
        t.join()


wait_warm_up = _ready


def svg(spec_dict: dict) -> str:
    _ready()
    return _vlc().vegalite_to_svg(spec_dict, vl_version=vegalite_version())


def png(spec_dict: dict, scale: float = PNG_SCALE) -> bytes:
    _ready()
    return _vlc().vegalite_to_png(spec_dict, vl_version=vegalite_version(), scale=scale)


def svg_to_png(svg_text: str, scale: float = PNG_SCALE) -> bytes:
    """Rasterise an SVG made by :func:`svg` (about 3x faster than rendering the spec again)."""
    _ready()
    return _vlc().svg_to_png(svg_text, scale=scale)
