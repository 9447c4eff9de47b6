"""Ports for servers that tests start: outside the kernel's ephemeral range, so that no
outgoing connection can hold one by the time its server binds it."""

import socket

from devstack import testing
from devstack.testing import _ephemeral_ports, free_port


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat():
    ephemeral = _ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert not [port for port in ports if port in ephemeral]
    assert len(set(ports)) == len(ports)


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch):
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as spare,
    ):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spare.bind(("127.0.0.1", 0))
        busy, free = taken.getsockname()[1], spare.getsockname()[1]
        spare.close()
        monkeypatch.setattr(testing, "_LISTEN_PORTS", [busy, free])
        monkeypatch.setattr(testing, "_ephemeral_ports", lambda: range(0))
        monkeypatch.setattr(testing, "_handed_out", set())
        assert free_port() == free
