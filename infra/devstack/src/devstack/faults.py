"""Faults on a link, for fault tests: what crosses it arrives late.

LatencyProxy     a TCP proxy on loopback, in a thread of its own, that holds every
                 chunk for ``delay`` seconds in each direction (order kept); the
                 delay can change while connections are open. Point a service at it
                 instead of its upstream.
NetnsLink        a link through a network namespace the test makes, whose latency
                 the kernel's netem adds (root and sch_netem needed)
netem_unavailable_because()
                 why netem cannot be used here (None if it can)
"""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from types import TracebackType

from devstack.testing import accepts, free_port, wait_for

_CHUNK = 64 * 1024


class LatencyProxy:
    def __init__(
        self,
        *,
        target_port: int,
        delay: float = 0.0,
        target_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.delay = delay
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self.connections = 0

    def __enter__(self) -> "LatencyProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, self.port), self._loop
        ).result(timeout=10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def set_delay(self, seconds: float) -> None:
        self.delay = seconds

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
                return_exceptions=True,
            )
        except (OSError, asyncio.CancelledError):
            # Refused, or the proxy is closing: the connection just ends (a handler
            # that ends cancelled would make asyncio's stream callback log an error).
            client_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Everything read is written ``delay`` seconds later, in order."""
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(_CHUNK):
                held.put_nowait((time.monotonic() + self.delay, chunk))
            held.put_nowait((0.0, b""))
            await delivering
        finally:
            delivering.cancel()
            with contextlib.suppress(OSError):
                writer.close()


class NetnsLink:
    """A link of the test's own whose latency the kernel adds: a network namespace
    joined to this one by a veth pair (10.231.<n>.1 here, .2 there), with a plain
    forwarder at each end, so that a connection to ``port`` on 127.0.0.1 crosses the
    veth link twice on its way to ``target_port``:

        caller → 127.0.0.1:port → ns 10.231.n.2:port → 10.231.n.1:relay → 127.0.0.1:target

    ``set_delay`` puts a netem qdisc on the namespace's end of the link (one way,
    so a round trip costs the delay twice: there and back through the forwarder in
    the namespace). Everything is removed on exit."""

    def __init__(self, *, target_port: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self._namespace = f"ic-lat-{tag}"
        self._host_end, self._ns_end = f"icl{tag}a", f"icl{tag}b"
        subnet = int(tag, 16) % 250 + 2
        self._host_ip, self._ns_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        self.port = free_port()
        self._relay_port = free_port()
        self._target_port = target_port
        self._exits = contextlib.ExitStack()

    def __enter__(self) -> "NetnsLink":
        try:
            self._plumb()
        except BaseException:
            self._exits.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._exits.close()

    def set_delay(self, seconds: float) -> None:
        action = "replace" if seconds > 0 else "del"
        command = ["tc", "qdisc", action, "dev", self._ns_end, "root"]
        if seconds > 0:
            command += ["netem", "delay", f"{int(seconds * 1000)}ms"]
        _run(["ip", "netns", "exec", self._namespace, *command], check=seconds > 0)

    def _plumb(self) -> None:
        ns = self._namespace
        _run(["ip", "netns", "add", ns])
        self._exits.callback(_run, ["ip", "netns", "del", ns], check=False)
        _run(["ip", "link", "add", self._host_end, "type", "veth", "peer", "name", self._ns_end])
        self._exits.callback(_run, ["ip", "link", "del", self._host_end], check=False)
        _run(["ip", "link", "set", self._ns_end, "netns", ns])
        _run(["ip", "addr", "add", f"{self._host_ip}/30", "dev", self._host_end])
        _run(["ip", "link", "set", self._host_end, "up"])
        for command in (
            ["ip", "addr", "add", f"{self._ns_ip}/30", "dev", self._ns_end],
            ["ip", "link", "set", self._ns_end, "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            _run(["ip", "netns", "exec", ns, *command])
        # Here: the way back in (relay → target), and the way out (127.0.0.1:port → ns).
        self._exits.enter_context(
            LatencyProxy(host=self._host_ip, port=self._relay_port, target_port=self._target_port)
        )
        self._exits.enter_context(LatencyProxy(port=self.port, target_host=self._ns_ip, target_port=self.port))
        # There: a forwarder in the namespace, a process of its own.
        ends = [f"{self._ns_ip}:{self.port}", f"{self._host_ip}:{self._relay_port}"]
        forwarder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "devstack.faults", *ends])
        self._exits.callback(_stop, forwarder)
        wait_for(lambda: accepts(self._ns_ip, self.port), timeout=15, what="the forwarder in the namespace")


def _run(command: list[str], *, check: bool = True) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def netem_unavailable_because() -> str | None:
    if os.geteuid() != 0:
        return "adding latency with tc netem needs root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    namespace = f"ic-probe-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        return f"cannot make a network namespace: {created.stderr.strip()}"
    try:
        probe = subprocess.run(
            ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            return f"this kernel has no netem qdisc (sch_netem): tc said {probe.stderr.strip()!r}"
        return None
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def _forward_forever(listen: str, target: str) -> None:
    """``python -m devstack.faults LISTEN_HOST:PORT TARGET_HOST:PORT``: a plain
    forwarder until SIGTERM (NetnsLink runs one inside its namespace)."""
    host, _, port = listen.rpartition(":")
    target_host, _, target_port = target.rpartition(":")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LatencyProxy(host=host, port=int(port), target_host=target_host, target_port=int(target_port)):
        stop.wait()


if __name__ == "__main__":
    _forward_forever(sys.argv[1], sys.argv[2])
