"""HeldHeadTransport over a real socket: one write for a head and its body, and nothing lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from inferwatch.sidecar._held_head import HeldHeadTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class CountedWrites:
    """A real transport whose writes are also counted (what the wire cannot tell apart)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.writes.append(b"".join(chunks))
        self.transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def run(
    scenario: Callable[[HeldHeadTransport, CountedWrites], Awaitable[None]],
) -> tuple[list[bytes], bytes]:
    """Run ``scenario`` on a held transport over a socket pair; the writes and what arrived."""

    async def main() -> tuple[list[bytes], bytes]:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        counted = CountedWrites(transport)  # type: ignore[arg-type]
        held = HeldHeadTransport(counted, loop)  # type: ignore[arg-type]

        async def read_all() -> bytes:
            arrived = b""
            while chunk := await loop.sock_recv(theirs, 1 << 20):
                arrived += chunk
            return arrived

        reading = asyncio.create_task(read_all())
        await scenario(held, counted)
        await asyncio.sleep(0.05)
        if not transport.is_closing():
            transport.close()
        arrived = await asyncio.wait_for(reading, 10)
        theirs.close()
        return counted.writes, arrived

    return asyncio.run(main())


def test_a_head_leaves_with_its_body_in_one_write() -> None:
    async def scenario(held: HeldHeadTransport, counted: CountedWrites) -> None:
        held.hold_next()
        held.write(HEAD)
        assert counted.writes == []
        held.write(b"hello")
        held.write(b"")  # what uvicorn writes for a response already complete, and the next
        held.write(HEAD + b"again")  # response's head, not held: nothing asked for it

    writes, arrived = run(scenario)
    assert writes == [HEAD + b"hello", b"", HEAD + b"again"]
    assert arrived == HEAD + b"hello" + HEAD + b"again"


def test_a_head_without_a_body_yet_leaves_at_the_end_of_the_step() -> None:
    async def scenario(held: HeldHeadTransport, counted: CountedWrites) -> None:
        held.hold_next()
        held.write(HEAD)
        await asyncio.sleep(0)
        assert counted.writes == [HEAD]  # a stream's head does not wait for its body
        held.write(b"hello")

    writes, arrived = run(scenario)
    assert writes == [HEAD, b"hello"]
    assert arrived == HEAD + b"hello"


@pytest.mark.parametrize("size", [1, 64 * 1024, 64 * 1024 + 1, 1 << 20])
def test_bodies_of_any_size_follow_the_head_whole(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async def scenario(held: HeldHeadTransport, counted: CountedWrites) -> None:
        held.hold_next()
        held.write(HEAD)
        held.write(body)

    writes, arrived = run(scenario)
    assert len(writes) == 1
    assert arrived == HEAD + body


def test_close_sends_a_held_head_first_and_abort_drops_it() -> None:
    async def closes(held: HeldHeadTransport, counted: CountedWrites) -> None:
        held.hold_next()
        held.write(HEAD)
        held.close()
        assert held.is_closing()

    async def aborts(held: HeldHeadTransport, counted: CountedWrites) -> None:
        held.hold_next()
        held.write(HEAD)
        held.abort()
        await asyncio.sleep(0)

    assert run(closes) == ([HEAD], HEAD)
    assert run(aborts) == ([], b"")
