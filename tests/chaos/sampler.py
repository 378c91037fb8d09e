#!/usr/bin/python3
"""sampler.py: which of the lab's PostgreSQL servers accept writes, every 100 ms.

Run as the postgres OS user (peer authentication on each site's socket,
LAB_DIR/dcN/pgsock). Prints one JSON line whenever a site's state changes:
  {"t": <wall seconds>, "site": "dc1", "writable": true|false|null}
writable: not in recovery and default_transaction_read_only off; null when
the server does not answer. SIGTERM stops it. The chaos campaign turns the
lines into intervals and checks that no two sites were writable at once.
"""

import json
import os
import signal
import sys
import time

import psycopg2

LAB_DIR = os.environ.get("LAB_DIR", "/tmp/triad-lab")
SITES = ("dc1", "dc2", "dc3")
running = True


def stop(*_):
    global running
    running = False


def main():
    signal.signal(signal.SIGTERM, stop)
    conns = {}
    last = {}
    while running:
        t0 = time.time()
        for s in SITES:
            state = None
            try:
                c = conns.get(s)
                if c is None:
                    c = psycopg2.connect(host=os.path.join(LAB_DIR, s, "pgsock"), port=5432,
                                         dbname="postgres", user="postgres", connect_timeout=1)
                    c.autocommit = True
                    conns[s] = c
                with c.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery(), "
                                "current_setting('default_transaction_read_only')")
                    rec, ro = cur.fetchone()
                    state = (not rec) and ro == "off"
            except Exception:  # down, restarting, or killed: not answering
                c = conns.pop(s, None)
                if c is not None:
                    try:
                        c.close()
                    except Exception:
                        pass
            if last.get(s, "unset") != state:
                last[s] = state
                print(json.dumps({"t": round(t0, 3), "site": s, "writable": state}), flush=True)
        time.sleep(max(0.0, 0.1 - (time.time() - t0)))


if __name__ == "__main__":
    sys.exit(main())
