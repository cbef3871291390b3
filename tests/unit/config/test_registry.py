"""Registry behaviour: decorator registration, clashes, did-you-mean, fnmatch listing, lazy entry points."""

import json
from importlib.metadata import EntryPoint
from types import SimpleNamespace

import pytest

import bench.registry as registry_module
from bench.errors import UserError
from bench.registry import PluginWarning, Prefix, Registry


def make() -> Registry:
    reg = Registry("widget", group="metric_bench.test_widgets")

    @reg.register("alpha")
    def alpha(size: int = 1):
        return ("alpha", size)

    @reg.register("alphabet")
    def alphabet():
        return "alphabet"

    return reg


def test_register_and_get():
    reg = make()
    entry = reg.get("alpha")
    assert entry.factory(size=3) == ("alpha", 3)
    assert entry.source == "builtin"
    assert list(reg) == ["alpha", "alphabet"]


def test_second_registration_is_an_error():
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", lambda: None, source="plugin other")


def test_unknown_name_suggests_close_matches_and_the_list_command():
    reg = make()
    with pytest.raises(UserError) as err:
        reg.get("alpah")
    message = str(err.value)
    assert "did you mean alpha" in message and "bench ls widgets" in message
    assert "alpah" not in reg and "alpha" in reg


def test_fnmatch_listing():
    reg = make()
    assert [n for n, _ in reg.list("alpha*")] == ["alpha", "alphabet"]
    assert [n for n, _ in reg.list("*bet")] == ["alphabet"]
    assert reg.list("zzz*") == []


def test_prefix_namespace_resolves_and_lists():
    reg = make()
    reg.add_prefix("ns", Prefix(factory=lambda name: lambda: f"ns:{name}", lister=lambda pat: ["a1", "b2"], source="ns-lib"))
    assert reg.get("ns/x").factory() == "ns:x"
    assert reg.get("ns/x").source == "ns-lib"
    assert ("ns/a1", "ns-lib") in reg.list("ns/*")
    assert any(n == "ns/<name>" for n, _ in reg.list())
    with pytest.raises(ValueError):
        reg.add("ns/a1", lambda: None)


def fake_entry_points(eps):
    def entry_points(group):
        return [ep for ep in eps if ep.group == group]

    return entry_points


def test_entry_points_load_lazily_on_first_use(monkeypatch):
    loaded = []
    ep = EntryPoint("gadget", "json:dumps", "metric_bench.test_widgets")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: loaded.append(group) or [ep])
    reg = make()
    assert loaded == []  # nothing imported at construction
    assert reg.get("gadget").factory([1]) == "[1]"
    assert loaded == ["metric_bench.test_widgets"]
    reg.get("alpha")
    assert loaded == ["metric_bench.test_widgets"]  # loaded once


def test_entry_point_clashing_with_builtin_is_an_error(monkeypatch):
    ep = EntryPoint("alpha", "json:dumps", "metric_bench.test_widgets")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep])
    with pytest.raises(ValueError, match="already registered"):
        make().get("alpha")


class FakeEntryPoint:
    """An installed entry point as `importlib.metadata` gives it, with a `load()` we choose."""

    def __init__(self, name: str, load, dist: str):
        self.name, self.value, self.group = name, f"{dist.replace('-', '_')}:{name}", "metric_bench.test_widgets"
        self.dist = SimpleNamespace(name=dist)
        self.load = load


def missing_dependency():
    raise ImportError("No module named 'torchvision_nightly'")


def test_a_broken_entry_point_warns_and_does_not_stop_the_others(monkeypatch):
    eps = [
        FakeEntryPoint("gadget", lambda: json.dumps, "mb-gadget"),
        FakeEntryPoint("broken", missing_dependency, "mb-broken"),
        FakeEntryPoint("gizmo", lambda: len, "mb-gizmo"),
    ]  # listed after the broken one
    monkeypatch.setattr(registry_module, "entry_points", lambda group: eps)
    reg = make()
    with pytest.warns(PluginWarning) as caught:
        assert reg.get("alpha").source == "builtin"
    (warning,) = caught
    assert str(warning.message) == (
        "skipping widget plugin 'broken' from mb-broken, which failed to import: ImportError: No module named 'torchvision_nightly'"
    )
    assert reg.get("gadget").factory([1]) == "[1]" and reg.get("gizmo").source == "plugin mb-gizmo"
    assert list(reg) == ["alpha", "alphabet", "gadget", "gizmo"] and "broken" not in reg


def test_requesting_a_broken_entry_point_is_a_user_error_naming_package_cause_and_fix(monkeypatch):
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [FakeEntryPoint("broken", missing_dependency, "mb-broken")])
    reg = make()
    with pytest.warns(PluginWarning), pytest.raises(UserError) as err:
        reg.get("broken")
    message = str(err.value)
    for part in ("widget 'broken'", "plugin mb-broken", "'mb_broken:broken'", "ImportError: No module named 'torchvision_nightly'", "pip uninstall mb-broken"):
        assert part in message
    assert "unknown widget" not in message and "\n" not in message
