"""Idle websocket subscribers, held open by a process of their own.

Run: ``python -m bench.subscribers URL DSID TOKENS_FILE PER_TOKEN``. ``TOKENS_FILE`` has one
client token per line; at most ``PER_TOKEN`` sockets are opened per token (the store limits
sockets per client id). Commands on standard input, one a line:

- ``open N``: open ``N`` more ``/sub/<DSID>/job`` sockets; answers ``opened <total> <failed>``.
- ``quit``: close everything and exit.

Each socket has a reader task, which answers the store's heartbeat pings and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from pathlib import Path

import aiohttp

CONCURRENT_OPENS = 200


def raise_nofile() -> None:
    """Raise the open-files soft limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def hold(url: str, dsid: str, tokens: list[str], per_token: int) -> None:
    """Serve the commands until ``quit`` or end of input."""
    ws_url = url.replace("http://", "ws://", 1) + f"/sub/{dsid}/job"
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []
    failed = 0
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    connector = aiohttp.TCPConnector(limit=0)
    gate = asyncio.Semaphore(CONCURRENT_OPENS)

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    async with aiohttp.ClientSession(connector=connector) as session:

        async def open_one(index: int) -> None:
            nonlocal failed
            token = tokens[(index // per_token) % len(tokens)]
            async with gate:
                try:
                    ws = await session.ws_connect(
                        ws_url, headers={"Authorization": f"Bearer {token}"}, autoping=True
                    )
                except (aiohttp.ClientError, OSError):
                    failed += 1
                    return
            sockets.append(ws)
            readers.append(asyncio.create_task(read(ws)))

        while line := (await stdin.readline()).decode().split():
            if line[0] == "open":
                first = len(sockets) + failed
                wanted = int(line[1])
                await asyncio.gather(*(open_one(first + i) for i in range(wanted)))
                print(f"opened {len(sockets)} {failed}", flush=True)
            elif line[0] == "quit":
                break
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def main() -> None:
    """Command line."""
    url, dsid, tokens_file, per_token = sys.argv[1:5]
    raise_nofile()
    tokens = [t for t in Path(tokens_file).read_text().split() if t]
    print("ready", flush=True)
    asyncio.run(hold(url, dsid, tokens, int(per_token)))


if __name__ == "__main__":
    main()
