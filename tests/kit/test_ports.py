"""`free_port` never hands out the same port twice, even when the kernel offers it again (issue 12.8)."""

from __future__ import annotations

import socket

import pytest

from tradebot.kit import ports
from tradebot.kit.ports import free_port, reserve_ports


def kernel_offers(monkeypatch: pytest.MonkeyPatch, offers: list[int]) -> None:
    """A kernel that offers these ports in turn for port 0 (a just-closed port may well come again)."""
    offered = iter(offers)
    monkeypatch.setattr(ports, "_taken", set())
    monkeypatch.setattr(ports, "_offered_port", lambda host: next(offered))


def test_a_port_the_kernel_offers_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_offers(monkeypatch, [41001, 41001, 41002, 41001, 41002, 41003])
    assert [free_port(), free_port(), free_port()] == [41001, 41002, 41003]


def test_reserved_ports_are_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_offers(monkeypatch, [41001, 41002, 41003])
    reserve_ports(41001, 41002)
    assert free_port() == 41003


def test_real_ports_are_distinct_and_free_when_handed_out() -> None:
    handed_out = [free_port() for _ in range(200)]
    assert len(set(handed_out)) == len(handed_out)
    with socket.socket() as server:
        server.bind(("127.0.0.1", handed_out[-1]))
