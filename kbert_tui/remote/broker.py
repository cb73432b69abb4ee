"""A run's events on Redis Streams: published by the run, read back by `kbert-tui attach redis://…`.

Keys (all under ``kbert:``):

- ``kbert:runs``: a hash, run id → JSON ``{run_id, name, state, host, pid, started_at, ended_at,
  events_published, control}``; ``state`` is ``running`` until the run closes.
- ``kbert:run:<run id>:events``: a stream, one entry per line of the run's JSONL log, in log order.
  The entry id is ``<n>-0`` where n is the line's position in the log, and its field ``event`` is
  the line itself. Redis refuses an id at or below the stream's top, so re-sending a line after a
  reconnect can never duplicate it, and a viewer resumes after the last id it saw.
- ``kbert:run:<run id>:control``: a stream of control requests from viewers: ``event`` (an event
  line) and ``token``, checked against the run's ``[events] broker_token``.

The log stays the source of truth: the publisher reads the log (never the bus) and, after an outage,
asks Redis how far the stream got and carries on from there, so the run never waits for Redis.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.events.follow import LogFollower, decode_lines

from .local import (
    CONTROL_REQUESTS,
    FINAL_TRAINING_EVENTS,
    MAX_REQUEST_BYTES,
    RejectionBudget,
    control_line,
    rejection,
    requester_name,
)

__all__ = ["BrokerPublisher", "BrokerRun", "BrokerError", "list_runs", "redact", "REGISTRY"]

REGISTRY = "kbert:runs"
_RETRY_MAX_S = 2.0


def _errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def stream_key(run_id: str) -> str:
    return f"kbert:run:{run_id}:events"


def control_key(run_id: str) -> str:
    return f"kbert:run:{run_id}:control"


def redact(url: str) -> str:
    """`url` without its password, for messages and events."""
    return re.sub(r"://([^/@]*)@", lambda m: "://" + ("***@" if m.group(1) else "@"), url)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _no_retry() -> dict[str, Any]:
    # redis-py retries 3 times by default: an outage must be noticed at once, the callers retry themselves.
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"retry": Retry(NoBackoff(), 0)}


def _async_client(url: str, *, socket_timeout: float) -> Any:
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.from_url(url, socket_connect_timeout=1.0, socket_timeout=socket_timeout,
                                  retry=Retry(NoBackoff(), 0))


class BrokerError(RuntimeError):
    """The broker can't be used as asked (unreachable, unknown run): the message says why."""


# ------------------------------------------------------------------------------ the run's side


class BrokerPublisher:
    """Copies a run's log into its Redis stream and relays control requests from the control stream.

    Runs as two tasks on the run's loop; Redis being down or slow never blocks anything else: while it
    is away nothing is read from the log, and at most `batch` lines are held in memory.
    """

    def __init__(self, bus: EventBus, run_id: str, events_path: Path, url: str, *, maxlen: int,
                 token: str | None, relay: Callable[..., Awaitable[bool]], info: dict[str, Any],
                 batch: int = 500, poll_s: float = 0.02) -> None:
        self.bus = bus
        self.run_id = run_id
        self.events_path = events_path
        self.url = url
        self.maxlen = maxlen
        self.token = token
        self.relay = relay
        self.info = dict(info, run_id=run_id, state="running", control=token is not None, started_at=_now())
        self.batch = batch
        self.poll_s = poll_s
        self.stream = stream_key(run_id)
        self.control_stream = control_key(run_id)
        self.rejections = RejectionBudget()  # unauthenticated requests can't grow the log past a few lines a minute
        self.published = 0  # lines of the log confirmed in the stream
        self.accepted = 0  # events the bus accepted (what the log will hold)
        self.disconnects = 0
        self.republished = 0  # lines sent again because Redis had lost them
        self.connected = False
        self.unpublished: int | None = None  # set by close() when it had to give up
        self._follower = LogFollower(events_path)
        self._pending: list[bytes] = []
        self._down_since: float | None = None
        self._client: Any = None
        self._closing = asyncio.Event()
        self._drained = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: str | None = None

    async def start(self) -> None:
        self._sub = self.bus.subscribe_sync("*", self._count)
        self._tasks = [asyncio.create_task(self._publish_forever(), name=f"broker-publish:{self.run_id}"),
                       asyncio.create_task(self._control_forever(), name=f"broker-control:{self.run_id}")]

    def _count(self, event: Event) -> None:
        self.accepted += 1

    async def close(self, outcome: str | None, *, timeout: float = 5.0) -> None:
        """After the log is complete: publish what is left (within `timeout`), then record the outcome."""
        if not self._tasks:
            return
        publish, control = self._tasks
        self._tasks = []
        self._closing.set()
        if not self.connected:
            timeout = min(timeout, 1.0)  # Redis is away: one more try, the log has everything anyway
        # Both tasks end by themselves once closing is set (redis-py's blocking reads do not always
        # take a cancel well, so cancelling is the last resort and is never waited for).
        done, _ = await asyncio.wait([publish, control], timeout=timeout)
        for task in (publish, control):
            if task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a failure here was already reported as an event
            else:
                task.cancel()
        if self.published_all:
            self.info.update(state=outcome or "failed", ended_at=_now(), events_published=self.published)
            unreachable: tuple[type[BaseException], ...] = (*_errors(), TimeoutError)
            try:
                if self._client is None:
                    self._client = _async_client(self.url, socket_timeout=2.0)
                await asyncio.wait_for(self._register(), 2.0)
            except unreachable:
                self.unpublished = 0  # the stream is whole; only the registry could not say so
        else:
            self.unpublished = self._follower.position - self.published + len(self._follower.read_lines())
        self._follower.close()
        await self._drop_client()

    @property
    def published_all(self) -> bool:
        """The whole (final) log is in the stream."""
        return self._drained

    # -- publishing ----------------------------------------------------------------------------------
    async def _publish_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._connect()
                backoff = 0.1
                await self._pump()
                return
            except asyncio.CancelledError:
                raise
            except _errors() as exc:
                await self._lost(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)

    async def _connect(self) -> None:
        client = self._client = _async_client(self.url, socket_timeout=5.0)
        await client.ping()
        top = await self._top(client)
        confirmed = self.published
        if top < confirmed:  # Redis lost entries (restarted without persistence): send them again
            self.republished += confirmed - top
            self._follower.close()
            self._follower = LogFollower(self.events_path)
            self._pending = []
            self._skip(top)
        elif top > confirmed:  # a batch landed before the connection dropped
            landed = min(top - confirmed, len(self._pending))
            del self._pending[:landed]
            self._skip(top - confirmed - landed)
        self.published = top
        await self._register()
        self.connected = True
        if self._down_since is not None:
            down_s = time.monotonic() - self._down_since
            self._down_since = None
            await self._emit(ev.BUS_BROKER_RECONNECTED, {
                "broker": redact(self.url), "behind": max(0, self.accepted - top), "down_s": round(down_s, 3),
                "republish": self.republished,
            })

    def _skip(self, count: int) -> None:
        while count > 0:
            got = self._follower.read_lines(min(count, 10_000))
            if not got:
                break  # the stream is ahead of our log: cannot happen for one writer; carry on from here
            count -= len(got)

    async def _top(self, client: Any) -> int:
        last = await client.xrevrange(self.stream, count=1)
        return int(last[0][0].split(b"-")[0]) if last else 0

    async def _register(self) -> None:
        await self._client.hset(REGISTRY, self.run_id, json.dumps(self.info))

    async def _pump(self) -> None:
        client = self._client
        while True:
            if not self._pending:
                self._pending = self._follower.read_lines(self.batch)
            if self._pending:
                pipe = client.pipeline(transaction=False)
                first = self.published + 1
                for offset, line in enumerate(self._pending):
                    pipe.xadd(self.stream, {"event": line}, id=f"{first + offset}-0",
                              maxlen=self.maxlen, approximate=True)
                for result in await pipe.execute(raise_on_error=False):
                    if isinstance(result, Exception) and "equal or smaller" not in str(result):
                        raise result  # anything but "already there"
                self.published += len(self._pending)
                self._pending = []
                continue
            if self._closing.is_set():
                self._drained = True  # the log is complete (close() comes after the bus's shutdown), all of it out
                return
            try:
                await asyncio.wait_for(self._closing.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def _lost(self, exc: BaseException) -> None:
        self.connected = False
        await self._drop_client()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.disconnects += 1
            await self._emit(ev.BUS_BROKER_DISCONNECTED, {
                "broker": redact(self.url), "error": f"{type(exc).__name__}: {exc}",
                "published": self.published, "behind": max(0, self.accepted - self.published),
            })

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:
                pass  # the connection is already gone

    async def _emit(self, name: str, data: dict[str, Any]) -> None:
        if not self.bus.is_closed:
            await self.bus.emit(name, data, source="broker", correlation_id=self.run_id)

    # -- control requests ---------------------------------------------------------------------------
    async def _control_forever(self) -> None:
        last: bytes | None = None
        backoff = 0.1
        while not self._closing.is_set():
            client = None
            try:
                client = _async_client(self.url, socket_timeout=5.0)
                if last is None:  # requests sent before the run started are not acted on
                    newest = await client.xrevrange(self.control_stream, count=1)
                    last = newest[0][0] if newest else b"0-0"
                while not self._closing.is_set():
                    reply = await client.xread({self.control_stream: last}, count=100, block=250)
                    backoff = 0.1
                    for _, entries in reply or ():
                        for entry_id, fields in entries:
                            last = entry_id
                            await self._control_request(fields)
            except asyncio.CancelledError:
                raise
            except _errors():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RETRY_MAX_S)
            finally:
                if client is not None:
                    try:
                        await client.aclose()
                    except Exception:
                        pass

    async def _control_request(self, fields: dict[bytes, bytes]) -> None:
        line = fields.get(b"event", b"")
        if len(line) > MAX_REQUEST_BYTES:
            await self._reject(None, f"a request longer than {MAX_REQUEST_BYTES} bytes: not read")
            return
        events, _ = decode_lines([line])
        request = events[0] if events else None
        if request is None or request.name not in CONTROL_REQUESTS:
            reason = "not a control request"
        elif self.token is None:
            reason = "control through the broker is off: the run sets no [events] broker_token"
        elif not hmac.compare_digest(fields.get(b"token", b""), self.token.encode()):
            reason = "wrong token"
        else:
            await self.relay(request, via="redis")
            return
        await self._reject(request, reason)

    async def _reject(self, request: Event | None, reason: str) -> None:
        """`control.request_rejected`, its fields clipped, within this minute's budget (the rest counted)."""
        suppressed = self.rejections.take()
        if suppressed is None:
            return
        await self._emit(ev.CONTROL_REQUEST_REJECTED, rejection(
            request.name if request is not None else "", reason, "redis", suppressed,
            requested_by=request.data.get("requested_by") if request is not None else None))


# ------------------------------------------------------------------------------ a viewer's side


def _client(url: str, *, socket_timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=socket_timeout, **_no_retry())


def list_runs(url: str) -> list[dict[str, Any]]:
    """The runs registered on the broker at `url`, newest first. Raises BrokerError."""
    client = _client(url, socket_timeout=5.0)
    try:
        raw = client.hgetall(REGISTRY)
    except _errors() as exc:
        raise BrokerError(f"cannot reach {redact(url)}: {exc}") from None
    finally:
        client.close()
    runs = []
    for value in raw.values():
        try:
            runs.append(json.loads(value))
        except ValueError:
            continue
    return sorted(runs, key=lambda r: str(r.get("started_at", "")), reverse=True)


class BrokerRun:
    """Reads one run's stream: its history, then live, resuming after the last id seen when Redis
    comes back, until the registry says the run is over and everything it published has been read.

    The same interface as `AttachedRun`, so one monitor source and one headless loop serve both.
    """

    idle_wait_s = 0.0  # `read` itself waits on the server (XREAD BLOCK)
    events_path = None

    def __init__(self, url: str, run_id: str, *, token: str | None = None, block_ms: int = 250,
                 registry_every_s: float = 0.25, quiet_s: float = 10.0) -> None:
        self.url = url
        self.run_id = run_id
        self.token = token
        self.block_ms = block_ms
        self.label = f"{redact(url)} {run_id}"
        self.stream = stream_key(run_id)
        self.requester = f"broker {requester_name()}"
        self.last_id = b"0-0"
        self.position = 0
        self.trimmed = 0  # older events the stream no longer holds (MAXLEN); the run's log has them
        self.live = False
        self.ended = False
        self.outcome: str | None = None
        self.note: str | None = None
        self.time_to_live: float | None = None
        self.malformed = 0
        self.first_error: str | None = None
        self.reconnects = 0
        self.connection_note: str | None = None
        self.info: dict[str, Any] | None = None
        self._opened = time.monotonic()
        self._quiet_s = quiet_s
        self._final_seen: str | None = None  # the last training.completed / failed / stopped read
        self._last_growth = self._opened
        self._registry_at = 0.0
        self._registry_every_s = registry_every_s
        self._backoff = 0.1
        self._client: Any = None
        self._connect()

    def _connect(self) -> Any:
        client = _client(self.url, socket_timeout=self.block_ms / 1000 + 5.0)
        try:
            client.ping()
            info = client.hget(REGISTRY, self.run_id)
            exists = info is not None or client.exists(self.stream)
        except _errors() as exc:
            client.close()
            if self._client is None and self.reconnects == 0 and not self.position:
                raise BrokerError(f"cannot reach {redact(self.url)}: {exc}") from None
            raise
        if not exists and not self.position:
            client.close()
            raise BrokerError(f"no run {self.run_id!r} on {redact(self.url)} (`kbert-tui attach URL` lists them)")
        self._client = client
        self._load_info(info)
        return client

    def _load_info(self, raw: bytes | None) -> None:
        if raw is not None:
            try:
                self.info = json.loads(raw)
            except ValueError:
                pass

    @property
    def controllable(self) -> bool:
        info = self.info or {}
        return self.token is not None and bool(info.get("control")) and info.get("state") == "running" \
            and not self.ended

    def read(self, limit: int | None = None) -> list[Event]:
        if self.ended:
            return []
        count = limit or 2000
        try:
            client = self._client or self._reconnected()
            if not self.live:
                entries = client.xrange(self.stream, min=b"(" + self.last_id, max="+", count=count)
                if entries:
                    return self._take(entries)
                self.live = True
                self.time_to_live = time.monotonic() - self._opened
                self._check_registry(client, force=True)
                return []
            reply = client.xread({self.stream: self.last_id}, count=count, block=self.block_ms)
            if reply:
                return self._take(reply[0][1])
            self._check_registry(client)
            return []
        except _errors() as exc:
            self._lost(exc)
            return []

    def _take(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Event]:
        lines = []
        for entry_id, fields in entries:
            n = int(entry_id.split(b"-")[0])
            if self.position == 0 and n > 1:
                self.trimmed = n - 1
            self.position, self.last_id = n, entry_id
            lines.append(fields.get(b"event", b""))
        events, problems = decode_lines(lines)
        self.malformed += len(problems)
        if problems and self.first_error is None:
            self.first_error = f"stream entry {self.position - len(lines) + problems[0][0] + 1}: {problems[0][1]}"
        self._last_growth = time.monotonic()
        for event in events:
            if event.name in FINAL_TRAINING_EVENTS:
                self._final_seen = event.name.partition(".")[2]
        return events

    def _check_registry(self, client: Any, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._registry_at < self._registry_every_s:
            return
        self._registry_at = now
        self._load_info(client.hget(REGISTRY, self.run_id))
        info = self.info or {}
        state = info.get("state")
        if state not in (None, "running") and self.position >= int(info.get("events_published") or 0):
            self.ended = True
            self.outcome = str(state)
            self.note = f"the run ended: {state}"
        elif self._final_seen and now - self._last_growth >= self._quiet_s:
            # The run could not tell the registry it closed (Redis away at its end): its training is over.
            self.ended = True
            self.outcome = self._final_seen
            self.note = (f"the run ended with training.{self._final_seen}; nothing came for {self._quiet_s:g} s and "
                         f"the broker never heard it close (its log has everything)")

    def _reconnected(self) -> Any:
        client = self._connect()
        self.connection_note = None
        self._backoff = 0.1
        return client

    def _lost(self, exc: BaseException) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self.reconnects += 1
        self.connection_note = f"broker unreachable ({type(exc).__name__}), retrying from entry {self.position}"
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _RETRY_MAX_S)

    def send_control(self, name: str, data: dict[str, Any]) -> None:
        """Put a request on the run's control stream (the run checks the token)."""
        _, line = control_line(name, dict(data, requested_by=self.requester), source="broker", run_id=self.run_id)
        client = self._client or self._reconnected()
        client.xadd(control_key(self.run_id), {"event": line, "token": self.token or ""})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
