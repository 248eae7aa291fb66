"""Fixtures: private broker servers and a mesh node, started as the Rust suites start them.

Each server runs on a free loopback port with a directory of its own and is stopped after the
test module. When a binary is missing, ``REDIS_URL`` / ``NATS_URL`` name a shared server
instead; without either the test is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not accept connections within {within} s")


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)")
    pytest.skip(reason)


class Server(NamedTuple):
    url: str
    #: The private server's process (None for a shared server named by an environment variable).
    process: Optional[subprocess.Popen[bytes]]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    binary = shutil.which("redis-server")
    if binary is None:
        url = os.environ.get("REDIS_URL")
        if not url:
            unavailable("no redis-server on PATH and REDIS_URL is not set")
        yield Server(str(url), None)
        return
    with tempfile.TemporaryDirectory(prefix="netbus-redis-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, proc, "redis-server")
            yield Server(f"redis://127.0.0.1:{port}", proc)
        finally:
            stop(proc)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[Server]:
    binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    if binary is None:
        url = os.environ.get("NATS_URL")
        if not url:
            unavailable("no nats-server on PATH and NATS_URL is not set")
        yield Server(str(url), None)
        return
    with tempfile.TemporaryDirectory(prefix="netbus-nats-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, proc, "nats-server")
            yield Server(f"nats://127.0.0.1:{port}", proc)
        finally:
            stop(proc)


def net_binary() -> Optional[str]:
    """The `net` command: NET_BIN, then the workspace's debug and release builds, then PATH."""
    candidates: List[Optional[str]] = [
        os.environ.get("NET_BIN"),
        str(REPO / "target" / "debug" / "net"),
        str(REPO / "target" / "release" / "net"),
        shutil.which("net"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


class MeshNode(NamedTuple):
    addr: str
    psk_file: Path


@pytest.fixture(scope="module")
def mesh_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshNode]:
    binary = net_binary()
    if binary is None:
        unavailable("no `net` binary (build it with `cargo build -p net-cli`, or set NET_BIN)")
    assert binary is not None
    tmp = tmp_path_factory.mktemp("mesh")
    key, psk = tmp / "node.key", tmp / "mesh.psk"
    subprocess.run([binary, "keygen", "-o", str(key), "--psk", str(psk)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    log = open(tmp / "node.log", "wb")
    proc = subprocess.Popen(
        [binary, "node", "--listen", addr, "--identity", str(key), "--psk-file", str(psk)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, "net node")
        yield MeshNode(addr, psk)
    finally:
        stop(proc)
        log.close()
