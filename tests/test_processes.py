"""stickless.processes: the ports it hands out to the servers the harnesses start."""

from __future__ import annotations

import socket

from stickless import processes


def test_free_ports_never_hands_out_a_port_twice() -> None:
    """Servers started one after another, each with a port of its own call, must not share
    one: the kernel offers a closed probe's port again (400 one-port probes repeat a port
    about 5 times), before the first server has bound it."""
    ports = [port for _ in range(400) for port in processes.free_ports(1)]
    assert len(set(ports)) == len(ports)
    many = processes.free_ports(20)
    assert len(set(many)) == 20 and not set(many) & set(ports)


def test_free_ports_are_bindable_on_loopback() -> None:
    for port in processes.free_ports(3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((processes.LOOPBACK, port))
