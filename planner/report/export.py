"""Chart specs, the inlined JavaScript and static images, all through ``vl-convert-python``.

vl-convert bundles Vega, Vega-Lite and Vega-Embed (no network), so the report needs no CDN and
PNG/SVG export needs no browser. Building that JavaScript bundle takes 1.3-1.7 s, so it is
cached on disk (:func:`cache_dir`), keyed by the versions that determine it.

vl-convert holds the GIL while it converts, so a conversion on a thread stalls the engines'
Python work. :class:`Exporter` (what ``build_report`` uses) converts in two helper processes
instead, one rendering SVGs (vl-convert's JavaScript engine starts there while the engines
run), one rasterising them to PNG; the images are the same bytes as in-process ones.

The images are cached on disk too (:func:`chart_cache_dir`), keyed by the SHA-256 of the
chart's Vega-Lite specification (data included), the PNG scale and the vl-convert and
Vega-Lite versions: a chart whose specification did not change since an earlier report (the
performance-validation charts of every scenario, all charts when a report is built again) is
read instead of rendered, and the helper processes start only for the first chart that is not
cached. ``PLANNER_NO_CACHE=1`` renders every chart.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

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
    schema = _altair_schema_version()
    m = re.match(r"v?(\d+)\.(\d+)", schema)
    if m is None:  # pragma: no cover - altair always has a version
        raise RuntimeError(f"cannot parse altair.SCHEMA_VERSION {schema!r}")
    return f"{m.group(1)}.{m.group(2)}"


@functools.cache
def _altair_schema_version() -> str:
    """``altair.SCHEMA_VERSION`` without importing altair (~0.3 s of CPU, which a report
    whose charts are all cached does not need otherwise): read from the generated
    ``altair/vegalite/vN/schema/__init__.py`` of the major version ``altair/vegalite``
    re-exports; imported when altair already is, or when those files do not say it."""
    if "altair" not in sys.modules:
        try:
            spec = importlib.util.find_spec("altair")
            root = Path(next(iter(spec.submodule_search_locations or ()))) / "vegalite"
            major = re.fullmatch(r"(?:#[^\n]*\n|\s)*from \.(v\d+) import \*\s*",
                                 (root / "__init__.py").read_text(encoding="utf-8"))
            text = (root / major.group(1) / "schema" / "__init__.py").read_text(
                encoding="utf-8")
            found = re.findall(r'^SCHEMA_VERSION = "(v[0-9][^"]*)"$', text, flags=re.M)
            if len(found) == 1:
                return found[0]
        except (AttributeError, StopIteration, OSError, UnicodeDecodeError):
            pass  # not a layout we know: ask altair itself
    import altair as alt

    return alt.SCHEMA_VERSION


def dist_version(dist: str, module: str) -> str:
    """Installed version of distribution ``dist`` (providing top-level package ``module``),
    from the name of its ``*.dist-info`` directory beside the package (a directory listing,
    not the ~0.05-0.1 s of ``importlib.metadata``); ``importlib.metadata.version`` where
    that is not unambiguous (e.g. an editable install)."""
    norm = re.sub(r"[-_.]+", "_", dist).lower()
    try:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or ()) if spec else []
        if len(locations) == 1:
            found = {entry.name[:-len(".dist-info")].partition("-")[2]
                     for entry in os.scandir(Path(locations[0]).parent)
                     if entry.name.endswith(".dist-info") and re.sub(
                         r"[-_.]+", "_", entry.name.partition("-")[0]).lower() == norm}
            if len(found) == 1 and "" not in found:
                return found.pop()
    except (OSError, ValueError, ImportError):
        pass
    from importlib.metadata import version

    return version(dist)


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


@functools.cache
def _vlc_version() -> str:
    vlc = _vlc()
    try:
        return dist_version("vl-convert-python", "vl_convert")
    except ImportError:  # no metadata (PackageNotFoundError): fall back to the module
        return str(getattr(vlc, "__version__", "unknown"))


def _bundle_key() -> str:
    """The versions that determine the bundle: vl-convert (which embeds Vega, Vega-Embed and
    each Vega-Lite it supports) and the Vega-Lite version asked for."""
    vlc_version = _vlc_version()
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


def write_cached(path: Path, text: str | bytes) -> None:
    """Write a cache file (text as UTF-8, or bytes) atomically (temporary file + rename); a
    read-only cache is silently skipped."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
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
    return _load_bundle(lambda: _vlc().javascript_bundle(vl_version=vegalite_version()))


def cached_bundle() -> str | None:
    """The bundle from the on-disk cache, or None (not cached, or ``PLANNER_NO_CACHE``)."""
    if os.environ.get("PLANNER_NO_CACHE"):
        return None
    return _read_cached(bundle_cache_path())


def _load_bundle(build: Callable[[], str]) -> str:
    """The cached bundle, else ``build()`` stored in the cache (unless ``PLANNER_NO_CACHE``)."""
    use_cache = not os.environ.get("PLANNER_NO_CACHE")
    path = bundle_cache_path() if use_cache else None
    if path is not None:
        js = _read_cached(path)
        if js is not None:
            return js
    js = build()
    if "</script" in js.lower():  # pragma: no cover - would end the inline <script> early
        raise RuntimeError("the Vega bundle contains '</script'; cannot inline it")
    if path is not None:
        write_cached(path, js)
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


# ------------------------------------------------------------------ conversion processes
#: The helper process: reads ``(function, args, kwargs)`` pickles from stdin, calls that
#: vl-convert function and writes ``(True, result)`` or ``(False, exception type, message)``.
#: Run with ``-c`` (no planner import: it starts in milliseconds); the working directory is
#: dropped from ``sys.path`` so a stray file there cannot shadow a module.
_WORKER = r"""
import os, pickle, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
ALLOWED = {"vegalite_to_svg", "svg_to_png", "javascript_bundle"}
def main():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the channel
    while True:
        try:
            fn, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            if fn not in ALLOWED:
                raise ValueError(f"not a vl-convert export function: {fn!r}")
            import vl_convert
            reply = (True, getattr(vl_convert, fn)(*args, **kwargs))
        except Exception as exc:
            reply = (False, type(exc).__name__, str(exc))
        pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
try:
    main()
except (KeyboardInterrupt, BrokenPipeError):
    pass
"""


class _Process:
    """One helper process; its calls run one at a time, on a thread of their own (which
    waits on the pipe without the GIL)."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: str, *args, **kwargs) -> Future:
        return self.pool.submit(self._call, fn, args, kwargs)

    def _call(self, fn: str, args: tuple, kwargs: dict):
        try:
            pickle.dump((fn, args, kwargs), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            reply = pickle.load(self.proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise RuntimeError(f"the chart export process stopped ({exc!r}); exit status "
                               f"{self.proc.poll()}") from None
        if reply[0]:
            return reply[1]
        _, kind, message = reply
        cls = getattr(builtins, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = RuntimeError
        raise cls(message)

    def close(self, *, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
        try:
            self.proc.stdin.close()  # the process ends at the end of its input
        except OSError:  # pragma: no cover - already gone
            pass
        if not wait:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck converter
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


#: Most charts kept in the image cache (an SVG and a PNG each); the least recently used go.
CHART_CACHE_MAX = 200


def chart_cache_dir() -> Path:
    """Where :class:`Exporter` keeps rendered charts (``cache_dir()/charts``)."""
    return cache_dir() / "charts"


def chart_key(spec_dict: dict, scale: float = PNG_SCALE) -> str:
    """Cache key of a chart's images: SHA-256 of its specification (canonical JSON, data
    included), the PNG scale and the vl-convert and Vega-Lite versions."""
    h = hashlib.sha256()
    h.update(f"vl-convert {_vlc_version()}; vega-lite {vegalite_version()}; "
             f"scale {float(scale)!r}\n".encode())
    h.update(json.dumps(spec_dict, sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()[:40]


def _cached_images(key: str) -> tuple[str, bytes] | None:
    d = chart_cache_dir()
    try:
        text = (d / f"{key}.svg").read_text(encoding="utf-8")
        png_bytes = (d / f"{key}.png").read_bytes()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.lstrip().startswith("<svg") or not png_bytes.startswith(b"\x89PNG"):
        return None
    for ext in ("svg", "png"):  # most recently used: kept longest
        try:
            os.utime(d / f"{key}.{ext}")
        except OSError:
            pass
    return text, png_bytes


def _store_images(key: str, images: tuple[str, bytes]) -> None:
    d = chart_cache_dir()
    write_cached(d / f"{key}.png", images[1])  # the PNG first: a hit needs both
    write_cached(d / f"{key}.svg", images[0])


def prune_lru(directory: Path, pattern: str, keep: int, companions: tuple[str, ...] = ()) -> None:
    """Remove all but the ``keep`` most recently used files ``directory/pattern`` (by mtime),
    each with its ``companions`` (the same name with those suffixes); OS errors are ignored
    (another run may be pruning the same cache)."""
    try:
        files = [(f.stat().st_mtime, f) for f in directory.glob(pattern)]
    except OSError:
        return
    if len(files) <= keep:
        return
    files.sort(reverse=True)
    for _, f in files[keep:]:
        for p in (f, *(f.with_suffix(s) for s in companions)):
            try:
                p.unlink()
            except OSError:
                pass


def prune_chart_cache(keep: int = CHART_CACHE_MAX) -> None:
    """Remove all but the ``keep`` most recently used charts from the image cache."""
    prune_lru(chart_cache_dir(), "*.svg", keep, (".png",))


class Exporter:
    """Renders charts to (SVG text, PNG bytes) off the calling thread, in submission order.

    With ``processes=True`` (the default) two helper processes do the work: one renders each
    Vega-Lite spec to SVG (its JavaScript engine is started with the process, so it warms up
    while the caller's Python work goes on), the other rasterises each SVG to PNG; the
    caller's Python work (the engines, the sections) goes on meanwhile on the other core. When
    the processes cannot be started (or ``processes=False``) the conversions run in this
    process, one at a time on a thread.

    With ``cache`` (default: unless ``PLANNER_NO_CACHE`` is set) a chart already in the image
    cache (:func:`chart_key`) is read from it, and a rendered one is stored; the processes
    then start with the first chart that is not cached (or the first bundle to build), else
    at once. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, processes: bool = True, cache: bool | None = None) -> None:
        _vlc()  # a missing vl-convert fails here, with the install hint
        self._svg = self._png = None
        self._local: ThreadPoolExecutor | None = None
        self._processes = processes
        self._started = False
        self._lock = threading.Lock()
        self.cache = not os.environ.get("PLANNER_NO_CACHE") if cache is None else cache
        self.cache_hits = 0
        self._bundle: Future | None = None
        if not self.cache:
            self._start()

    def _start(self) -> None:
        """Start the helper processes (or the local thread) once."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self._processes:
                try:
                    self._svg = _Process("planner-svg")
                    self._png = _Process("planner-png")
                except OSError:
                    self._close_processes(wait=False)
                    self._svg = self._png = None
            if self._svg is None:
                warm_up()
                self._local = ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="planner-export")
            else:
                self._svg.submit("vegalite_to_svg", _WARM_SPEC, vl_version=vegalite_version())

    @property
    def uses_processes(self) -> bool:
        """Whether the conversions run in helper processes (starts them if not yet)."""
        self._start()
        return self._svg is not None

    def prefetch_bundle(self) -> None:
        """Have the SVG process build the JavaScript bundle when it is not cached (the first
        run), so that it is ready by the time the page is written."""
        if self._bundle is None and cached_bundle() is None:
            self._start()
            if self._svg is not None:
                self._bundle = self._svg.submit("javascript_bundle",
                                                vl_version=vegalite_version())

    def bundle(self) -> str:
        """:func:`js_bundle` (built by the SVG process if :meth:`prefetch_bundle` started it)."""
        if self._bundle is None:
            return js_bundle()
        return _load_bundle(self._bundle.result)

    def submit(self, spec_dict: dict, scale: float = PNG_SCALE) -> Future:
        """A future of ``(svg_text, png_bytes)`` for a Vega-Lite spec."""
        key = None
        if self.cache:
            key = chart_key(spec_dict, scale)
            hit = _cached_images(key)
            if hit is not None:
                self.cache_hits += 1
                done: Future = Future()
                done.set_result(hit)
                return done
        self._start()
        out = self._convert(spec_dict, scale)
        if key is not None:
            def store(f: Future) -> None:
                if not f.cancelled() and f.exception() is None:
                    _store_images(key, f.result())
            out.add_done_callback(store)
        return out

    def _convert(self, spec_dict: dict, scale: float) -> Future:
        if self._local is not None:
            return self._local.submit(lambda: _both(spec_dict, scale))
        out: Future = Future()
        png_proc = self._png

        def svg_done(f: Future) -> None:
            if f.cancelled() or f.exception() is not None:
                _fail(out, f)
                return
            text = f.result()

            def png_done(g: Future) -> None:
                if g.cancelled() or g.exception() is not None:
                    _fail(out, g)
                else:
                    out.set_result((text, g.result()))

            try:
                png_proc.submit("svg_to_png", text, scale=scale).add_done_callback(png_done)
            except RuntimeError as exc:  # closed meanwhile (a failed report)
                out.set_exception(exc)

        self._svg.submit("vegalite_to_svg", spec_dict, vl_version=vegalite_version()
                         ).add_done_callback(svg_done)
        return out

    def _close_processes(self, *, wait: bool) -> None:
        for p in (self._svg, self._png):  # the SVG process first: it feeds the PNG one
            if p is not None:
                p.close(wait=wait)

    def close(self, *, wait: bool = True) -> None:
        """Finish (``wait``) or drop the pending conversions and end the helper processes."""
        with self._lock:
            self._started = True  # no process starts after this
        self._close_processes(wait=wait)
        if self._local is not None:
            self._local.shutdown(wait=wait, cancel_futures=not wait)
            _ready()
        if self.cache and wait:
            prune_chart_cache()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close(wait=kind is None)


def _fail(out: Future, f: Future) -> None:
    if f.cancelled():
        out.cancel()
    else:
        out.set_exception(f.exception())


def _both(spec_dict: dict, scale: float) -> tuple[str, bytes]:
    text = svg(spec_dict)
    return text, svg_to_png(text, scale)
