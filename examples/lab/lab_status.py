#!/usr/bin/python3
"""lab_status.py: `lab.sh status [--json]`, the state of every lab component.

Runs inside the lab's network namespace without the bind shim, so its own
connections have source == destination and no partition rule applies to
them: it reports what runs, not what a site can reach. PostgreSQL is asked
as the `triad` role (pg_monitor is enough to read pg_stat_replication and
pg_stat_wal_receiver in full).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import psycopg2

LAB_DIR = os.environ.get("LAB_DIR", "/tmp/triad-lab")
SITES = ["dc1", "dc2", "dc3"]


def pid_alive(pidfile):
    try:
        with open(pidfile, encoding="utf-8") as f:
            pid = int(f.readline().strip())
        with open("/proc/%d/stat" % pid, encoding="utf-8", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return pid if state not in ("Z", "X") else None
    except (OSError, ValueError, IndexError):
        return None


def tcp_open(host, port, timeout=0.5):
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


def read(path, default=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return default


def component(pidfile, host, port):
    pid = pid_alive(pidfile)
    return {"up": bool(pid) and tcp_open(host, port), "pid": pid}


def postgres(site):
    n = site[2:]
    out = {"up": False, "pid": pid_alive(os.path.join(LAB_DIR, site, "pgdata", "postmaster.pid"))}
    try:
        c = psycopg2.connect(host="127.0.%s.5" % n, port=5432, dbname="postgres", user="triad",
                             password=read(os.path.join(LAB_DIR, "secrets", "pg-triad.pass")),
                             connect_timeout=1, application_name="lab-status")
    except psycopg2.Error as e:
        out["error"] = (str(e).strip().splitlines() or ["error"])[0]
        return out
    try:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
            recovery, ro = cur.fetchone()
            out.update(up=True, role="replica" if recovery else "primary", read_only=ro == "on")
            if not recovery:
                cur.execute("SELECT timeline_id FROM pg_control_checkpoint()")
                out["timeline"] = cur.fetchone()[0]
                cur.execute("""SELECT application_name, client_addr::text, state, sync_state,
                                      pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
                               FROM pg_stat_replication ORDER BY application_name""")
                out["replication"] = [
                    {"name": r[0], "client": r[1], "state": r[2], "sync_state": r[3],
                     "replay_lag_bytes": r[4]} for r in cur.fetchall()]
            else:
                cur.execute("SELECT status, sender_host, received_tli FROM pg_stat_wal_receiver")
                r = cur.fetchone()
                out["wal_receiver"] = {"status": r[0], "sender": r[1], "timeline": r[2]} if r else None
    except psycopg2.Error as e:
        out["error"] = str(e).strip()
    finally:
        c.close()
    return out


def synapse(site):
    n = site[2:]
    out = component(os.path.join(LAB_DIR, site, "synapse.pid"), "127.0.%s.20" % n, 8008)
    if out["up"]:
        try:
            with urllib.request.urlopen("http://127.0.%s.20:8008/_standin/status" % n, timeout=1) as r:
                out["serving"] = bool(json.load(r).get("serving"))
        except (OSError, ValueError):
            out["serving"] = None
    return out


def dig(rtype, name):
    try:
        r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "@127.0.9.53", name, rtype],
                           capture_output=True, text=True, timeout=5)
        ans = r.stdout.strip()
        return ans if r.returncode == 0 and not ans.startswith(";;") else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def nft_rules(mode):
    if mode != "netns":
        return None
    r = subprocess.run(["nft", "list", "chain", "inet", "triad_lab", "output"],
                       capture_output=True, text=True)
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("ip saddr")]


def gather(args):
    st = {"up": True, "lab_dir": LAB_DIR, "mode": args.mode,
          "netns": args.netns if args.mode == "netns" else None,
          "keeper": bool(pid_alive(os.path.join(LAB_DIR, "keeper.pid"))), "sites": {}}
    for s in SITES:
        n = s[2:]
        d = os.path.join(LAB_DIR, s)
        bmc = component(os.path.join(LAB_DIR, "bmc-%s.pid" % s), "127.0.8.%s" % n, 8000)
        bmc["power"] = read(os.path.join(d, "bmc-power"), "On")
        bmc["fault"] = read(os.path.join(d, "bmc-fault")) or None
        k8s = component(os.path.join(d, "k8s.pid"), "127.0.%s.30" % n, 6443)
        k8s["fault"] = read(os.path.join(d, "k8s-fault")) or None
        st["sites"][s] = {
            "killed": os.path.exists(os.path.join(d, "killed")),
            "postgres": postgres(s),
            "nginx": component(os.path.join(d, "nginx", "nginx.pid"), "127.0.%s.10" % n, 443),
            "synapse": synapse(s),
            "k8s": k8s,
            "bmc": bmc,
            "triad": {"up": bool(pid_alive(os.path.join(d, "triad.pid"))),
                      "pid": pid_alive(os.path.join(d, "triad.pid")),
                      "config": os.path.join(d, "triad.yaml")},
        }
    acks = 0
    try:
        with open(os.path.join(LAB_DIR, "writer.jsonl"), encoding="utf-8") as f:
            acks = sum(1 for ln in f if '"ev":"ack"' in ln)
    except OSError:
        pass
    hooks = read(os.path.join(LAB_DIR, "webhooks.jsonl"))
    st["shared"] = {
        "dns": dict(component(os.path.join(LAB_DIR, "dns", "named.pid"), "127.0.9.53", 53),
                    matrix=dig("A", "matrix.lab.test"), fence=dig("TXT", "_triad.matrix.lab.test")),
        "webhook": dict(component(os.path.join(LAB_DIR, "webhook.pid"), "127.0.9.80", 8080),
                        stored=len(hooks.splitlines()) if hooks else 0),
        "writer": {"up": bool(pid_alive(os.path.join(LAB_DIR, "writer.pid"))), "acks": acks},
    }
    st["partitions"] = nft_rules(args.mode)
    return st


def word(c):
    return "up" if c.get("up") else "DOWN"


def show(st):
    print("lab %s  mode %s%s  keeper %s" % (st["lab_dir"], st["mode"],
                                          " (namespace %s)" % st["netns"] if st["netns"] else "",
                                          "up" if st["keeper"] else "DOWN"))
    if st["mode"] != "netns":
        print("  !! plain loopback: partitions are disabled")
    print("%-5s %-22s %-6s %-14s %-6s %-14s %s" % ("site", "postgres", "nginx", "synapse", "k8s",
                                                    "bmc", "triad"))
    for s, v in st["sites"].items():
        pg = v["postgres"]
        pgw = "%s %s%s" % (word(pg), pg.get("role", ""), " read-only" if pg.get("read_only") else "")
        syn = v["synapse"]
        synw = word(syn) + ("" if not syn.get("up") else
                            " serving" if syn.get("serving") else " 503")
        bmc = v["bmc"]
        print("%-5s %-22s %-6s %-14s %-6s %-14s %s%s" % (
            s, pgw, word(v["nginx"]), synw, word(v["k8s"]) + ("!" if v["k8s"]["fault"] else ""),
            "%s %s%s" % (word(bmc), bmc["power"], "!" if bmc["fault"] else ""),
            "up" if v["triad"]["up"] else "-", "  [KILLED]" if v["killed"] else ""))
    for s, v in st["sites"].items():
        pg = v["postgres"]
        for r in pg.get("replication") or []:
            print("replication %s -> %s: %s, %s, replay lag %s bytes" % (
                s, r["name"], r["state"], r["sync_state"], r["replay_lag_bytes"]))
        if pg.get("role") == "primary" and not pg.get("replication"):
            print("replication %s: no standby connected" % s)
        if pg.get("role") == "replica":
            wr = pg.get("wal_receiver")
            print("wal receiver %s: %s" % (s, "%s from %s" % (wr["status"], wr["sender"]) if wr
                                           else "not running"))
        if pg.get("error"):
            print("postgres %s: %s" % (s, pg["error"]))
    sh = st["shared"]
    print("dns %s: matrix.lab.test -> %s, _triad.matrix.lab.test -> %s" % (
        word(sh["dns"]), sh["dns"]["matrix"], sh["dns"]["fence"]))
    print("webhook sink %s (%d stored)   writer %s (%d acks)" % (
        word(sh["webhook"]), sh["webhook"]["stored"], "running" if sh["writer"]["up"] else "stopped",
        sh["writer"]["acks"]))
    if st["partitions"] is None:
        print("partitions: disabled")
    elif not st["partitions"]:
        print("partitions: none")
    else:
        print("partitions (nft inet triad_lab output):")
        for r in st["partitions"]:
            print("  " + r)


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `lab.sh status | head` is fine
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="netns")
    ap.add_argument("--netns", default="triad-lab")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    st = gather(args)
    if args.json:
        json.dump(st, sys.stdout, indent=1)
        print()
    else:
        show(st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
