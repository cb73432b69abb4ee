"""The bus's composition hooks: a metadata stamp on every event it makes, and taps that see the log's order."""

from __future__ import annotations

import asyncio
import threading

from kbert_tui.events import EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.events.testing import RecordingBus
from kbert_tui.session import RankedEventBus


def test_the_stamp_is_on_every_event_the_bus_makes_under_the_emitters_own_metadata():
    stamp = {"rank": 1, "world_size": 2, "host": "h"}
    bus = RecordingBus(stamp=stamp)
    stamp["rank"] = 7  # the bus keeps its own copy
    bus.emit_sync("a.b", {"x": 1})
    bus.emit_sync("a.c", {}, metadata={"rank": 0, "extra": True})
    asyncio.run(bus.emit("a.d"))
    bus.subscribe_sync("a.b", lambda event: 1 / 0)
    bus.emit_sync("a.b")  # its handler fails: the bus's own report is stamped too
    by_name = {e.name: e.metadata for e in bus.events}
    assert by_name["a.b"] == {"rank": 1, "world_size": 2, "host": "h"}
    assert by_name["a.c"] == {"rank": 0, "world_size": 2, "host": "h", "extra": True}
    assert by_name["a.d"]["rank"] == 1 and by_name[ev.BUS_HANDLER_ERROR]["rank"] == 1
    bus.events[0].metadata["rank"] = 5  # one event's metadata is its own
    assert bus.events[1].metadata["world_size"] == 2 and bus.events[2].metadata["rank"] == 1
    bus.close()


def test_ranked_bus_only_configures_the_stamp():
    bus = RankedEventBus({"rank": 3})
    assert "emit" not in vars(RankedEventBus) and "emit_sync" not in vars(RankedEventBus)
    seen = []
    bus.add_tap(seen.append)
    bus.emit_sync("x.y")
    assert seen[0].metadata == {"rank": 3}
    bus.close()


def test_taps_see_every_accepted_event_in_log_order_from_every_thread(tmp_path):
    bus = EventBus(persistence_path=tmp_path / "e.jsonl")
    seen: list[str] = []
    bus.add_tap(lambda event: seen.append(event.id))

    def flood(tag: str) -> None:
        for i in range(300):
            bus.emit_sync(f"t.{tag}", {"i": i})

    threads = [threading.Thread(target=flood, args=(tag,)) for tag in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bus.close()
    logged = [line.split('"id":"')[1].split('"')[0] for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(seen) == 900 and seen == logged


def test_a_failing_tap_is_counted_and_stops_nothing_and_a_removed_tap_sees_no_more():
    bus = EventBus()
    seen: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("tap down")

    bus.add_tap(broken)
    bus.add_tap(lambda event: seen.append(event.name))
    got: list[str] = []
    bus.subscribe_sync("*", lambda event: got.append(event.name))
    bus.emit_sync("a.one")
    assert seen == ["a.one"] and got == ["a.one"] and bus.metrics().handler_errors == 1
    assert bus.remove_tap(broken) and not bus.remove_tap(broken)
    bus.emit_sync("a.two")
    assert seen == ["a.one", "a.two"] and bus.metrics().handler_errors == 1
    bus.close()
