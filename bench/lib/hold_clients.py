#!/usr/bin/env python3
"""Open N raw sockets to countersign, each sending one small POST on an approve rule, and
keep them open (held) until stdin closes or SIGTERM. Prints "held N" once every request
was sent and the server has not answered any of them (a hold answers nothing until a
decision). Standard library only."""
import asyncio
import signal
import sys


async def one(host, port, path, token, opened):
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"n":1}'
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    opened.append((reader, writer))


async def main():
    host, port, path, token, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    opened = []
    sem = asyncio.Semaphore(200)

    async def bounded():
        async with sem:
            await one(host, port, path, token, opened)

    await asyncio.gather(*(bounded() for _ in range(n)))
    # Give the server time to read every body and create every approval.
    await asyncio.sleep(2)
    answered = 0
    for reader, _ in opened:
        if reader.at_eof() or len(getattr(reader, "_buffer", b"")) > 0:
            answered += 1
    print(f"held {len(opened) - answered} answered {answered}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    for _, w in opened:
        w.close()


asyncio.run(main())
