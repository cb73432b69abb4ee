"""One key table (kbert_tui.tui.keys.KEYS) behind the app's bindings, the help screen, the command palette
and the README's key table: a key added in one place and forgotten in another fails here."""

from __future__ import annotations

import re
from pathlib import Path

from kbert_tui.tui import MonitorApp, StaticSource
from kbert_tui.tui.keys import KEYS, bindings, help_rows, palette_commands
from kbert_tui.tui.monitor_screen import MonitorScreen
from kbert_tui.tui.screens import HelpScreen
from simulate import simulate_run

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_binding_comes_from_the_table_and_runs_an_action_its_owner_has():
    declared = [(b.key, b.action) for b in MonitorApp.BINDINGS + MonitorScreen.BINDINGS]
    assert sorted(declared) == sorted((k.keys, k.action) for k in KEYS if k.action)
    for owner, scope in ((MonitorApp, "app"), (MonitorScreen, "screen")):
        for binding in bindings(scope):
            name = binding.action.partition("(")[0]
            assert callable(getattr(owner, f"action_{name}", None)), binding.action


def test_the_help_and_the_palette_say_what_each_key_does():
    described = {shown for shown, _ in help_rows("all") + help_rows("replay")}
    for key in KEYS:  # each key is in the help, alone or with its pair (`e / E`)
        assert any(key.shown == shown or key.shown in shown.split(" / ") for shown in described), key
    titles = [title for title, _, _, _ in palette_commands()]
    assert len(titles) == len(set(titles)) and "Filter the event log" in titles
    assert all(f"({key})" in text or key in text for _, text, key in
               ((t, h, next(k.shown for k in KEYS if k.palette == t)) for t, h, _, _ in palette_commands()))


def test_the_readme_key_table_lists_every_key_of_the_app():
    section = README.read_text().split("## The monitor", 1)[1].split("### Filter syntax", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]  # a replay's n, + and - ride on p's
    documented = {key for row in rows for key in re.findall(r"`([^`]+)`", row)}
    for key in KEYS:
        if key.action is None:
            continue
        first = key.shown.split(" / ")[0]
        assert first in documented, f"README's key table lacks `{first}` ({key.help or key.label})"


async def test_the_palette_runs_the_same_action_as_the_key():
    app = MonitorApp(StaticSource(list(simulate_run(epochs=1, steps_per_epoch=3))))
    async with app.run_test(size=(100, 40)) as pilot:  # below 120 columns Plugins can be toggled
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        await commands["Show/hide plugins"].callback()  # the screen's action
        assert app.monitor.has_class("show-plugins")
        await commands["Keys and filter syntax"].callback()
        await pilot.pause(0.2)
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
        assert "filter the log (live)" in text and "ctrl+c" in text
