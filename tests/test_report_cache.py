"""The report's Vega bundle is cached on disk, keyed by versions, in the user's cache dir."""

from __future__ import annotations

import os
import sys

import pytest

from planner.report import export


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A clean cache location (``XDG_CACHE_HOME``) and no in-process memo."""
    monkeypatch.delenv("PLANNER_CACHE_DIR", raising=False)
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    export.js_bundle.cache_clear()
    yield tmp_path
    export.js_bundle.cache_clear()


@pytest.fixture
def counted(monkeypatch):
    """Count vl-convert bundle builds."""
    vlc = export._vlc()
    calls = []
    real = vlc.javascript_bundle

    def build(*a, **k):
        calls.append(k.get("vl_version"))
        return real(*a, **k)

    monkeypatch.setattr(vlc, "javascript_bundle", build)
    return calls


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="XDG layout is Linux's")
def test_bundle_built_once_then_read_from_xdg_cache(fresh, counted):
    path = export.bundle_cache_path()
    assert path.parent == fresh / "xdg" / "planner"
    assert not path.exists()
    first = export.js_bundle()
    assert counted == [export.vegalite_version()] and path.is_file()
    assert path.read_text(encoding="utf-8") == first and "vegaEmbed" in first
    export.js_bundle.cache_clear()  # a new process: read from disk, not built
    assert export.js_bundle() == first
    assert len(counted) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_key_names_the_versions(fresh, monkeypatch):
    name = export.bundle_cache_path().name
    assert name.startswith("vega-bundle-vlc") and f"-vl{export.vegalite_version()}-" in name
    monkeypatch.setattr(export, "vegalite_version", lambda: "5.20")
    assert export.bundle_cache_path().name != name  # another Vega-Lite: another file


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert export.cache_dir() == tmp_path / "p"
    monkeypatch.delenv("PLANNER_CACHE_DIR")
    assert export.cache_dir() == tmp_path / "x" / "planner"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    if sys.platform not in ("darwin", "win32"):
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert export.cache_dir() == tmp_path / "home" / ".cache" / "planner"


def test_corrupt_or_unwritable_cache_falls_back_to_building(fresh, counted, monkeypatch):
    path = export.bundle_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("garbage", encoding="utf-8")
    js = export.js_bundle()
    assert "vegaEmbed" in js and len(counted) == 1
    assert path.read_text(encoding="utf-8") == js  # replaced by a good copy

    export.js_bundle.cache_clear()
    blocker = fresh / "file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    assert export.js_bundle() == js and len(counted) == 2


def test_no_cache_env_skips_the_disk(fresh, counted, monkeypatch):
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    export.js_bundle()
    assert len(counted) == 1 and not (fresh / "xdg").exists()
    assert os.environ["PLANNER_NO_CACHE"] == "1"
