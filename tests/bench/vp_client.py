#!/usr/bin/python3
"""vp_client.py: the clients of tests/bench/vs-patroni.sh, and their analysis.

The side-by-side benchmark needs the same measurements on two clusters (the
lab's PostgreSQL run by triad, and a Patroni cluster): when does some
PostgreSQL accept a write again after the primary site is killed, when does
an ordinary client succeed again, and was any acknowledged write lost.

  vp_client.py poll  --hosts A,B,C --dbname DB --user U --password-file F
                     --table T --log FILE
      One thread per host, every 100 ms on a kept connection:
      `SELECT pg_is_in_recovery()` and, when that is false, one INSERT into
      T (autocommit). The write counts only when it commits without error
      and without the "canceling wait for synchronous replication" warning
      (a cancel is sent after 1 s: statement_timeout does not cover the
      synchronous-standby wait). Each success is a JSON line
      {"ev":"ok","host","wall"}. SIGTERM stops it.

  vp_client.py write --hosts A,B,C --dbname DB --user U --password-file F
                     --log FILE [--rate 10]
      What a Patroni user without a proxy runs: one libpq multi-host
      connection string with target_session_attrs=read-write, numbered
      writes (INSERT INTO vp_writes (id) ... RETURNING inet_server_addr()),
      reconnecting after any connection error. Client timeouts as the lab's
      Synapse stand-in uses (connect_timeout 2, keepalives, statement_timeout
      5 s, a cancel after 5 s of synchronous-standby wait), plus
      tcp_user_timeout 2 s so that a write in flight to a dead host fails
      like the lab writer's 2 s HTTP timeout instead of hanging for TCP's
      retransmission limit. JSON lines: {"ev":"attempt"|"ack"|"fail","id",
      "host","wall",...}. Run it with the lab's bind shim so that partitions
      apply to it.

  vp_client.py first --log FILE --t0 MS --old HOST [--ev ok|ack]
      The wall time (ms) of the first success after T0 from a host other
      than HOST, and how many successes HOST had later than 2 s after T0
      (--grace-ms; the kill itself takes a moment: a killed site must have
      none). JSON.

  vp_client.py audit --log FILE --hosts A,B,C --dbname DB --user U
                     --password-file F
      Finds the primary (the one host not in recovery) and counts the
      acknowledged ids missing from its vp_writes. JSON; exit 1 if any lost,
      2 if no single primary.

Debian's /usr/bin/python3 with python3-psycopg2.
"""

import argparse
import json
import signal
import sys
import threading
import time

import psycopg2

SYNC_CANCEL = "synchronous replication"


def password(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def logger(path):
    f = open(path, "a", encoding="utf-8")
    lock = threading.Lock()

    def emit(rec):
        with lock:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()

    return emit


def cancel(conn):
    try:
        conn.cancel()
    except psycopg2.Error:
        pass


def timed(conn, seconds, cur, sql, params):
    """Runs sql; cancels it after `seconds` (the synchronous-standby wait
    is not covered by statement_timeout). True when it committed without
    the synchronous-replication cancel warning."""
    del conn.notices[:]
    timer = threading.Timer(seconds, cancel, (conn,))
    timer.daemon = True
    timer.start()
    try:
        cur.execute(sql, params)
    finally:
        timer.cancel()
    return not any(SYNC_CANCEL in n for n in conn.notices)


def close(conn):
    if conn is not None:
        try:
            conn.close()
        except psycopg2.Error:
            pass


def stop_event():
    ev = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: ev.set())
    signal.signal(signal.SIGINT, lambda *a: ev.set())
    return ev


# --- poll ---------------------------------------------------------------------


def poll_host(host, args, pw, emit, stop):
    conn = None
    while not stop.is_set():
        t = time.monotonic()
        ok = False
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(
                    host=host, port=args.port, dbname=args.dbname, user=args.user,
                    password=pw, connect_timeout=2, application_name="vp-poll",
                    keepalives=1, keepalives_idle=1, keepalives_interval=1,
                    keepalives_count=2, tcp_user_timeout=1000)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                if not cur.fetchone()[0]:
                    ok = timed(conn, 1.0, cur,
                               "INSERT INTO %s (host) VALUES (%%s)" % args.table, (host,))
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            close(conn)
            conn = None
        except psycopg2.Error:
            pass  # read-only, replica: the connection is fine
        if ok:
            emit({"ev": "ok", "host": host, "wall": time.time()})
        stop.wait(max(0.0, t + 0.1 - time.monotonic()))
    close(conn)


def cmd_poll(args):
    pw = password(args.password_file)
    emit = logger(args.log)
    stop = stop_event()
    threads = [threading.Thread(target=poll_host, args=(h, args, pw, emit, stop), daemon=True)
               for h in args.hosts.split(",")]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(3)
    return 0


# --- write --------------------------------------------------------------------


def cmd_write(args):
    hosts = args.hosts.split(",")
    dsn = dict(host=",".join(hosts), port=",".join([str(args.port)] * len(hosts)),
               dbname=args.dbname, user=args.user, password=password(args.password_file),
               target_session_attrs="read-write", connect_timeout=2,
               application_name="vp-writer", keepalives=1, keepalives_idle=2,
               keepalives_interval=1, keepalives_count=2, tcp_user_timeout=2000,
               options="-c statement_timeout=5000")
    emit = logger(args.log)
    stop = stop_event()
    period = 1.0 / args.rate
    conn = None
    wid = 0
    tick = time.monotonic()
    while not stop.is_set():
        wid += 1
        t0 = time.monotonic()
        emit({"ev": "attempt", "id": wid, "wall": time.time()})
        host, err = None, None
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(**dsn)
                conn.autocommit = True
            with conn.cursor() as cur:
                if timed(conn, 5.0, cur,
                         "INSERT INTO vp_writes (id) VALUES (%s) RETURNING inet_server_addr()::text",
                         (wid,)):
                    host = cur.fetchone()[0].split("/")[0]
                else:
                    err = "committed locally, synchronous standby wait cancelled"
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            err = "%s: %s" % (type(e).__name__, str(e).strip())
            close(conn)
            conn = None
        except psycopg2.Error as e:
            err = "%s: %s" % (type(e).__name__, str(e).strip())
            close(conn)  # e.g. read-only after a demotion: find the primary again
            conn = None
        t1 = time.monotonic()
        if host:
            emit({"ev": "ack", "id": wid, "host": host, "wall": time.time(),
                  "latency_ms": round((t1 - t0) * 1000, 1)})
        else:
            emit({"ev": "fail", "id": wid, "error": err[:300], "wall": time.time(),
                  "latency_ms": round((t1 - t0) * 1000, 1)})
        tick += period
        now = time.monotonic()
        if tick < now:
            tick = now  # never burst to catch up
        else:
            stop.wait(tick - now)
    close(conn)
    return 0


# --- analysis -------------------------------------------------------------------


def read_log(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill
    except FileNotFoundError:
        pass
    return out


def cmd_first(args):
    first, old_after = None, 0
    for e in read_log(args.log):
        if e.get("ev") != args.ev or e["wall"] * 1000 <= args.t0:
            continue
        if e.get("host") == args.old:
            # The kill takes a moment after T0 (isolation first, then SIGKILL).
            if e["wall"] * 1000 > args.t0 + args.grace_ms:
                old_after += 1
        elif first is None:
            first = int(e["wall"] * 1000)
    print(json.dumps({"first_ms": first,
                      "after_s": None if first is None else round((first - args.t0) / 1000, 2),
                      "old_after": old_after}))
    return 0 if first is not None else 1


def cmd_audit(args):
    pw = password(args.password_file)
    primaries = []
    for h in args.hosts.split(","):
        try:
            c = psycopg2.connect(host=h, port=args.port, dbname=args.dbname, user=args.user,
                                 password=pw, connect_timeout=2)
        except psycopg2.Error:
            continue
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                if not cur.fetchone()[0]:
                    cur.execute("SELECT id FROM vp_writes")
                    primaries.append((h, {r[0] for r in cur.fetchall()}))
        finally:
            c.close()
    acked = [e["id"] for e in read_log(args.log) if e.get("ev") == "ack"]
    res = {"acknowledged": len(acked), "primaries": [p[0] for p in primaries]}
    if len(primaries) != 1:
        res["lost"] = None
        print(json.dumps(res))
        return 2
    have = primaries[0][1]
    lost = sorted(i for i in acked if i not in have)
    res.update({"primary": primaries[0][0], "lost": len(lost), "lost_ids": lost[:20]})
    print(json.dumps(res))
    return 1 if lost else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def conn_args(q):
        q.add_argument("--hosts", required=True)
        q.add_argument("--port", type=int, default=5432)
        q.add_argument("--dbname", required=True)
        q.add_argument("--user", required=True)
        q.add_argument("--password-file", required=True)

    q = sub.add_parser("poll")
    conn_args(q)
    q.add_argument("--table", required=True)
    q.add_argument("--log", required=True)
    q = sub.add_parser("write")
    conn_args(q)
    q.add_argument("--log", required=True)
    q.add_argument("--rate", type=float, default=10.0)
    q = sub.add_parser("first")
    q.add_argument("--log", required=True)
    q.add_argument("--t0", type=int, required=True)
    q.add_argument("--old", required=True)
    q.add_argument("--ev", default="ok")
    q.add_argument("--grace-ms", type=int, default=2000)
    q = sub.add_parser("audit")
    conn_args(q)
    q.add_argument("--log", required=True)
    args = p.parse_args()
    return {"poll": cmd_poll, "write": cmd_write, "first": cmd_first,
            "audit": cmd_audit}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
