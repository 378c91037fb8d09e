#!/usr/bin/python3
"""delayproxy.py: slow links between the lab's triad daemons (the kernel here
has no netem).

  delayproxy.py --control FILE [--sites 3]

For each site N, listens on 127.0.N.2:7401 and forwards to the daemon's
peer port 127.0.N.1:7400. The chaos campaign redirects the daemons' peer
connections here with an nftables DNAT rule (see campaign.sh). The leg to
the daemon leaves from 127.0.M.3, M being the client's site, so that the
lab's partitions (rules on /24 source and destination) still cut it.

Every byte is held for the delay of its direction before it is passed on,
in order (latency, not reordering; TCP has no loss to show: a lost segment
is a late one). The delays are read from FILE, one line per direction:
    dc1 dc2 800     # 800 ms from dc1 to dc2
    * dc1 1500      # 1.5 s from any site to dc1
    dc3 * 0
The first matching line wins; no line, no delay. The file is read again
whenever it changes.
"""

import argparse
import asyncio
import os
import sys

PEER_PORT = 7400
PROXY_PORT = 7401
CHUNK = 65536


class Delays:
    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.rules = []

    def get(self, src, dst):
        try:
            m = os.stat(self.path).st_mtime_ns
        except OSError:
            m = None
        if m != self.mtime:
            self.mtime = m
            self.rules = []
            try:
                with open(self.path, encoding="utf-8") as f:
                    for line in f:
                        p = line.split("#", 1)[0].split()
                        if len(p) == 3:
                            self.rules.append((p[0], p[1], int(p[2])))
            except (OSError, ValueError):
                self.rules = []
        for a, b, ms in self.rules:
            if a in ("*", src) and b in ("*", dst):
                return ms / 1000.0
        return 0.0


def site_of(addr):
    parts = addr.split(".")
    return "dc" + parts[2] if len(parts) == 4 and parts[0] == "127" else "?"


async def pump(reader, writer, delays, src, dst):
    """Copies reader to writer, each chunk held for the current delay."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(maxsize=256)

    async def feed():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time(), data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time(), b""))

    async def drain():
        try:
            while True:
                t, data = await queue.get()
                wait = t + delays.get(src, dst) - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    await asyncio.gather(feed(), drain())


def make_handler(n, delays):
    async def handle(creader, cwriter):
        peer = cwriter.get_extra_info("peername")
        src = site_of(peer[0]) if peer else "?"
        dst = "dc%d" % n
        m = src[2:] if src.startswith("dc") else "9"
        try:
            sreader, swriter = await asyncio.open_connection(
                "127.0.%d.1" % n, PEER_PORT, local_addr=("127.0.%s.3" % m, 0))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pump(creader, swriter, delays, src, dst),
                             pump(sreader, cwriter, delays, dst, src))

    return handle


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--control", required=True)
    ap.add_argument("--sites", type=int, default=3)
    args = ap.parse_args()
    delays = Delays(args.control)
    servers = []
    for n in range(1, args.sites + 1):
        servers.append(await asyncio.start_server(make_handler(n, delays),
                                                  "127.0.%d.2" % n, PROXY_PORT))
    print("delayproxy: listening", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
