"""A WebSocket client that counts and checks ticks at line rate, for the simulator benchmark.

`python ws_counter.py PORT SECONDS`: connects, subscribes to every symbol, skips the first second, then
for SECONDS reads frames straight off the socket, decodes every tick (orjson) and checks that each
symbol's `seq` goes up by one. Prints one JSON line: ticks, seconds, rate, gaps. A plain socket and a
frame parser of a few lines keep the client's cost per tick near a microsecond, so five of them on a
2-core machine measure the server rather than themselves. Run as a script: stdlib and orjson only.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import time

import orjson


def handshake(sock: socket.socket, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"handshake refused: {head[:200]!r}")
    return rest


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def main(port: int, seconds: float) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
    buffer = bytearray(handshake(sock, port))
    sock.sendall(client_frame(0x1, b'{"op": "subscribe", "symbols": "*"}'))
    last_seq: dict[str, int] = {}
    ticks = gaps = 0
    started = time.monotonic()
    counting_from = started + 1.0  # warm-up
    stop_at = counting_from + seconds
    counting = False
    pos = 0
    while True:
        now = time.monotonic()
        if now >= stop_at:
            break
        if not counting and now >= counting_from:
            counting, ticks, first = True, 0, now
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buffer += chunk
        end = len(buffer)
        while end - pos >= 2:
            opcode = buffer[pos] & 0x0F
            size = buffer[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if end - pos < 4:
                    break
                size = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif size == 127:
                if end - pos < 10:
                    break
                size = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if end - pos < head + size:
                break
            payload = bytes(buffer[pos + head : pos + head + size])
            pos += head + size
            if opcode == 0x1:
                message = orjson.loads(payload)
                if message.get("type") == "tick":
                    symbol, seq = message["symbol"], message["seq"]
                    before = last_seq.get(symbol)
                    if before is not None and seq != before + 1:
                        gaps += 1
                    last_seq[symbol] = seq
                    ticks += 1
            elif opcode == 0x9:
                sock.sendall(client_frame(0xA, payload))
            elif opcode == 0x8:
                stop_at = 0.0
        del buffer[:pos]
        pos = 0
    elapsed = time.monotonic() - first if counting else 0.0
    sock.close()
    print(
        orjson.dumps(
            {"ticks": ticks, "seconds": elapsed, "rate": ticks / elapsed if elapsed else 0.0, "gaps": gaps}
        ).decode()
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
