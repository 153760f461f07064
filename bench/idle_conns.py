#!/usr/bin/env python3
"""Idle keep-alive memory probe for bench/run.sh.

Opens COUNT HTTP/1.1 keep-alive connections to 127.0.0.1:PORT, sends one
request on each and reads the response, then leaves them all idle and
compares the server's RSS (VmRSS of --pid, summed if several) before and
after. Prints one JSON object on stdout.

RSS is user-space memory only: kernel socket buffers are not included.
With --tls the connections are TLS (certificate not verified: benchmark only).
"""

import argparse
import asyncio
import json
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def rss_kib(pids, field="VmRSS"):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])  # value is in kB
    return total


TLS_CONTEXT = None


async def one_request(port):
    """Open a connection, do one request/response, return the open streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=TLS_CONTEXT)
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise RuntimeError(f"status {status.decode()}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        # Every peer here answers with Content-Length; chunked is not handled.
        raise RuntimeError("response without content-length")
    await reader.readexactly(length)
    return reader, writer


async def main(args):
    pids = [int(p) for p in args.pid.split(",")]
    if args.tls:
        global TLS_CONTEXT
        TLS_CONTEXT = ssl.create_default_context()
        TLS_CONTEXT.check_hostname = False
        TLS_CONTEXT.verify_mode = ssl.CERT_NONE

    # Warm the server up with one connection first so lazily allocated
    # state (first-request buffers, thread caches) is not billed per conn.
    _, w = await one_request(args.port)
    w.close()
    await asyncio.sleep(0.5)
    before = rss_kib(pids)

    # Bounded concurrency: a burst of 10k SYNs would overflow the listen
    # backlog and stall on SYN retransmits.
    sem = asyncio.Semaphore(args.concurrency)
    conns, errors = [], []

    async def worker():
        async with sem:
            try:
                conns.append(await one_request(args.port))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.count)))
    open_secs = time.monotonic() - t0

    await asyncio.sleep(args.settle)
    after = rss_kib(pids)
    hwm = rss_kib(pids, "VmHWM")

    # Connections the server dropped while idle show up as EOF here.
    alive = 0
    for reader, _ in conns:
        if not reader.at_eof():
            alive += 1

    for _, w in conns:
        w.close()

    ok = len(conns)
    result = {
        "requested": args.count,
        "opened": ok,
        "alive_after_settle": alive,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "hwm_kib": hwm,
        "kib_per_conn": round((after - before) / ok, 2) if ok else None,
        "open_secs": round(open_secs, 2),
    }
    print(json.dumps(result))
    return 0 if ok == args.count and alive == ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", required=True, help="server pid(s), comma separated")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait before reading RSS")
    sys.exit(asyncio.run(main(p.parse_args())))
