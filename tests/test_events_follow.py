"""LogFollower: history then live, across rotations, partial lines and a writer that starts late."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from kbert_tui.events import Event
from kbert_tui.events.follow import LogFollower
from kbert_tui.events.store import JsonlStore, read_events


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event("training.batch_completed", {"step": start + i, "pad": "x" * 40}) for i in range(n)]


def test_history_then_appended_lines_in_order(tmp_path: Path):
    store = JsonlStore(tmp_path / "events.jsonl")
    first = _events(50)
    for event in first:
        store.append(event)
    store.wait_written()
    follower = LogFollower(tmp_path / "events.jsonl")
    assert [e.id for e in follower.read_events()] == [e.id for e in first]
    assert follower.read_events() == [] and follower.caught_up
    more = _events(5, 50)
    for event in more:
        store.append(event)
    store.close()
    assert [e.id for e in follower.read_events()] == [e.id for e in more]
    assert follower.position == 55
    follower.close()


def test_a_line_is_delivered_only_once_its_newline_is_written(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    line = Event("a.b", {"k": 1}).id
    with open(path, "wb") as fh:
        follower = LogFollower(path)
        fh.write(b'{"name":"a.b","data":{},"id":"' + line.encode())
        fh.flush()
        assert follower.read_lines() == []
        fh.write(b'"}\n')
        fh.flush()
        (got,) = follower.read_lines()
        assert got.endswith(b'"}')
    follower.close()


def test_following_across_many_rotations_while_the_writer_runs(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path, max_file_size_mb=0.01)  # ~10 KB segments: dozens of rotations
    written = _events(3000)
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        follower = LogFollower(path)
        while True:
            batch = follower.read_events(500)
            seen.extend(e.id for e in batch)
            if not batch:
                if done.is_set() and len(seen) >= len(written):
                    break
                time.sleep(0.001)
        follower.close()

    reader = threading.Thread(target=follow)
    reader.start()
    for i, event in enumerate(written):
        store.append(event)
        if i % 97 == 0:
            time.sleep(0.001)  # let rotations land between the follower's reads
    store.close()
    done.set()
    reader.join(30)
    assert not reader.is_alive()
    assert store.rotations > 20
    assert seen == [e.id for e in written]
    assert [e.id for e in read_events(path)] == seen


def test_several_rotations_between_two_reads_are_all_read(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path, max_file_size_mb=0.002)
    follower = LogFollower(path)
    first = _events(3)
    for event in first:
        store.append(event)
    store.wait_written()
    assert [e.id for e in follower.read_events()] == [e.id for e in first]  # holds the active file open
    more = _events(200, 3)
    for event in more:
        store.append(event)
    store.close()
    assert store.rotations >= 5
    assert [e.id for e in follower.read_events()] == [e.id for e in more]
    assert follower.rotations >= 1
    follower.close()


def test_a_log_that_does_not_exist_yet_is_picked_up_when_it_appears(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    follower = LogFollower(path)
    assert follower.read_lines() == []
    store = JsonlStore(path)
    event = _events(1)[0]
    store.append(event)
    store.close()
    assert [e.id for e in follower.read_events()] == [event.id]


def test_from_end_skips_what_is_there_and_malformed_lines_are_counted(tmp_path: Path):
    path = tmp_path / "control.jsonl"
    path.write_bytes(b'{"old": 1}\n')
    follower = LogFollower(path, from_end=True)
    assert follower.read_lines() == []
    with open(path, "ab") as fh:
        fh.write(b"not json\n")
        os.fsync(fh.fileno())
    assert follower.read_events() == [] and follower.malformed == 1
    assert follower.first_error and "line 1" in follower.first_error
    follower.close()


def _lines(events: list[Event]) -> bytes:
    from kbert_tui.events._codec import encode_event_bytes

    return b"".join(encode_event_bytes(e) for e in events)


def test_lines_written_after_the_log_was_truncated_in_place_are_read_and_the_truncation_counted(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    old, shorter, longer = _events(20), _events(3, 100), _events(40, 200)
    path.write_bytes(_lines(old))
    follower = LogFollower(path)
    assert len(follower.read_events()) == 20
    with open(path, "r+b") as fh:  # cut to nothing in place (same inode), then a few new lines
        fh.truncate(0)
    with open(path, "ab") as fh:
        fh.write(_lines(shorter))
    assert [e.id for e in follower.read_events()] == [e.id for e in shorter]
    assert follower.truncations == 1 and "truncated" in (follower.notice or "")
    with open(path, "r+b") as fh:  # and again, the new content already longer than what was read
        fh.truncate(0)
    with open(path, "ab") as fh:
        fh.write(_lines(longer))
    assert [e.id for e in follower.read_events()] == [e.id for e in longer]
    assert follower.truncations == 2 and follower.malformed == 0
    assert follower.position == 20 + 3 + 40
    follower.close()
