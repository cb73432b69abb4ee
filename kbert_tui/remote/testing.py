"""A private `redis-server` for tests and benchmarks: 127.0.0.1, a free port, a temporary folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def _die_with_parent() -> list[str]:
    """A command prefix (Linux util-linux `setpriv`) so the server gets SIGKILL when the process that
    started it dies, even hard; without it, stop() in the fixture's teardown is all there is."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Starts `redis-server` without persistence (a restart comes back empty, the hardest case)."""

    def __init__(self, folder: Path, binary: str = "redis-server") -> None:
        self.folder = folder
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [*_die_with_parent(), self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--appendonly", "no", "--protected-mode", "yes",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
