"""Every key of the monitor, declared once: the app's BINDINGS, the help screen and the command palette
are generated from `KEYS`, so a key can't be offered in one place and forgotten in another."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

__all__ = ["KEYS", "Key", "bindings", "help_rows", "palette_commands"]


@dataclass(frozen=True)
class Key:
    """One key of the monitor.

    `keys`: Textual key names (comma-separated); `action`: the app action it runs, arguments included, or
    None where another widget or Textual binds it (listed for the help only); `label`: the footer's word;
    `shown`: how the help writes the key (`e / E`); `help`: the help's line (empty: the row above says
    it, for a pair like `e` / `E`); `footer`: offered in the footer; `palette`: the palette's title
    (None: not offered there); `where`: `all`, or `replay` (a paced replay's own keys, a help section
    of their own); `scope`: `app`, or `screen` for the layout keys MonitorScreen owns.
    """

    keys: str
    action: str | None
    label: str
    shown: str
    help: str
    footer: bool = False
    palette: str | None = None
    where: str = "all"
    priority: bool = False
    scope: str = "app"  # whose action: the app's, or the monitor screen's (its layout keys)


KEYS: tuple[Key, ...] = (
    Key("slash", "open_filter", "Filter", "/", "filter the log (live)", footer=True, palette="Filter the event log",
        scope="screen"),
    Key("escape", "clear_filter", "Clear", "Esc", "clear the filter", palette="Clear the filter", scope="screen"),
    Key("f", "toggle_follow", "Follow", "f", "follow newest on/off", palette="Toggle follow", scope="screen"),
    Key("space", "toggle_view_pause", "Pause view", "space", "pause/unpause the log view (arrivals are counted)",
        palette="Pause/unpause the log view", scope="screen"),
    Key("enter", None, "Detail", "Enter", "event detail (JSON)"),
    Key("c", "drill", "Thread", "c", "the event's thread: causes, consequences, its step and epoch", footer=True,
        palette="The selected event's thread", scope="screen"),
    Key("e", "problem(1)", "Next err", "e / E", "next / previous error", footer=True,
        palette="Next error or warning", scope="screen"),
    Key("E", "problem(-1)", "Prev err", "E", "", palette="Previous error or warning", scope="screen"),
    Key("up,down,pageup,pagedown,home,end", None, "Move", "↑↓ PgUp PgDn", "move (Home End: first, last)"),
    Key("p", "pause_training", "Pause", "p", "pause/resume training (live)", footer=True,
        palette="Pause/resume training"),
    Key("p", "resume_training", "Resume", "p", "", footer=True),  # the same key while paused: the footer says so
    Key("p", "replay_pause", "Pause replay", "p", "pause/resume playback", footer=True, where="replay",
        palette="Pause/resume playback"),
    Key("s", "stop_training", "Stop", "s", "stop training, after asking (live)", footer=True,
        palette="Stop training"),
    Key("k", "checkpoint_training", "Checkpoint", "k", "save a checkpoint now, training goes on (live)",
        palette="Save a checkpoint now"),
    Key("left_square_bracket", "smoothing(-1)", "Smooth-", "[ / ]",
        "loss chart: less / more smoothing (EMA 0, 0.6 … 0.99; raw stays faint)", palette="Loss chart: less smoothing",
        scope="screen"),
    Key("right_square_bracket", "smoothing(1)", "Smooth+", "]", "", palette="Loss chart: more smoothing",
        scope="screen"),
    Key("x", "chart_x", "X axis", "x", "loss chart x: step, samples seen, wall time",
        palette="Loss chart: next x axis", scope="screen"),
    Key("y", "chart_log", "Log y", "y", "loss chart: log / linear y", palette="Loss chart: log / linear y",
        scope="screen"),
    Key("comma", "chart_cursor(-1)", "Cursor", ", / .", "loss chart cursor: back / on (step and values under it)",
        scope="screen"),
    Key("full_stop", "chart_cursor(1)", "Cursor →", ".", "", scope="screen"),
    Key("b", "baseline", "Baseline", "b", "loss chart baseline: another run's loss drawn under this one's",
        palette="Loss chart: a baseline run", scope="screen"),
    Key("n", "replay_step", "Step", "n", "step one event", where="replay"),
    Key("plus,equals_sign", "replay_speed(2)", "Faster", "+ / -", "speed ×2 / ÷2", where="replay"),
    Key("minus", "replay_speed(0.5)", "Slower", "-", "", where="replay"),
    Key("z", "maximize_pane", "Zoom", "z", "maximize/restore the focused pane", palette="Maximize/restore the pane",
        scope="screen"),
    Key("1", "show_top('training')", "Training", "1 / 2", "top pane: Training / System (narrow terminals)",
        scope="screen"),
    Key("2", "show_top('system')", "System", "2", "", footer=True, scope="screen"),
    Key("t", "toggle_plugins", "Plugins", "t", "show/hide plugins (narrow terminals)", footer=True,
        palette="Show/hide plugins", scope="screen"),
    Key("o", "search_disk", "Older", "o", "search older events on disk (with the filter)",
        palette="Search older events on disk", scope="screen"),
    Key("question_mark", "help", "Help", "?", "this help", footer=True, palette="Keys and filter syntax"),
    Key("ctrl+p", None, "Palette", "ctrl+p", "command palette (the same actions, and themes)"),
    Key("q", "quit_app", "Quit", "q / ctrl+q", "quit (asks while training runs; a checkpoint is saved)", footer=True,
        palette="Quit kbert-tui"),
    # Ctrl-C is an interrupt here, as in any terminal program, not Textual's "press ctrl+q" hint
    Key("ctrl+c", "interrupt", "Interrupt", "ctrl+c", "stop a live run now, no question (checkpoint), exit 130",
        priority=True),
)


def bindings(scope: str) -> list[BindingType]:
    """The BINDINGS of the app (`scope` "app") or of the monitor screen ("screen")."""
    return [Binding(k.keys, k.action, k.label, show=k.footer, priority=k.priority)
            for k in KEYS if k.action and k.scope == scope]


def help_rows(where: str) -> tuple[tuple[str, str], ...]:
    """(key, description) rows of the help screen for `where` (`all` or `replay`)."""
    return tuple((k.shown, k.help) for k in KEYS if k.where == where and k.help)


def palette_commands() -> tuple[tuple[str, str, str, str], ...]:
    """(title, help, action, scope) of each command the palette offers; its help names the key."""
    return tuple((k.palette, f"{k.help or _pair_help(k)} ({k.shown})", k.action, k.scope)
                 for k in KEYS if k.palette and k.action)


def _pair_help(key: Key) -> str:
    """The description of the pair a key belongs to (`E` says what `e / E` says)."""
    index = KEYS.index(key)
    return next(k.help for k in reversed(KEYS[:index]) if k.help)
