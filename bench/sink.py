"""Log sink for the bench's log variants: a TCP (NDJSON) collector that reads
and discards, counting records (newlines) and bytes. Writing 16 KiB records to
disk like spec/fixtures/collector.lua would make the collector, not the
gateway, the bottleneck.

    python3 bench/sink.py PORT CONTROL_PORT WATCH_PID

A connection to CONTROL_PORT gets one line "<records> <bytes>\n". Exits when
WATCH_PID (the bench script) is gone, so an aborted run leaves nothing behind.
"""
import asyncio
import os
import sys

records = 0
received = 0


async def sink(reader, writer):
    global records, received
    while True:
        data = await reader.read(1 << 17)
        if not data:
            break
        records += data.count(b"\n")
        received += len(data)
    writer.close()


async def control(reader, writer):
    writer.write(f"{records} {received}\n".encode())
    await writer.drain()
    writer.close()


async def main(port, control_port, watch):
    await asyncio.start_server(sink, "127.0.0.1", port)
    await asyncio.start_server(control, "127.0.0.1", control_port)
    while True:
        await asyncio.sleep(0.5)
        try:
            os.kill(watch, 0)
        except OSError:
            return


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
