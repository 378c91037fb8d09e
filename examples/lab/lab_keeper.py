#!/usr/bin/python3
"""lab_keeper.py: the parent (and reaper) of every long-running lab process.

Why: on this machine PID 1 (a VM agent, not an init) reaps orphans only
now and then: a daemon started by lab.sh outlives lab.sh, is re-parented to
PID 1 and, once killed, stays a zombie for 1.5-2 s (measured). A zombie
postmaster is worse than clutter: its PID still answers kill(pid, 0), so
PostgreSQL refuses to start again right after a simulated power cut ("lock
file postmaster.pid already exists"), and `kill` followed at once by
`revive` would fail depending on timing.

So `lab.sh up` starts one keeper inside the lab's network namespace. It
marks itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), starts the
lab's daemons on request (each in its own session, stdin /dev/null,
stdout+stderr appended to a log file), and reaps every process below it,
including the ones that pg_ctl or the BMC stand-in leave behind.

  lab_keeper.py serve --socket PATH [--pidfile F]
  lab_keeper.py call  --socket PATH [--log F] [--wait SECONDS] -- ARGV...
      Runs ARGV under the keeper with the caller's environment. Prints the
      child's pid. With --wait, waits up to SECONDS for it to exit and exits
      with its status (or 0 with "running" printed when it is still running,
      so `triad daemon` can be checked for an immediate failure); 124 when a
      --wait of a command that must finish (--must-exit) runs out.
  lab_keeper.py ping --socket PATH

The socket is created mode 0600 (root only). Standard library only.
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


class Keeper:
    def __init__(self):
        self.cond = threading.Condition()
        self.exited = {}  # pid -> (status, time)

    def reaper(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.1)
                continue
            except InterruptedError:
                continue
            with self.cond:
                self.exited[pid] = (os.waitstatus_to_exitcode(status), time.monotonic())
                if len(self.exited) > 2000:  # forget old, never asked-for statuses
                    cutoff = time.monotonic() - 300
                    for p in [p for p, (_, t) in self.exited.items() if t < cutoff]:
                        del self.exited[p]
                self.cond.notify_all()

    def spawn(self, req):
        argv = req["argv"]
        env = req.get("env") or {}
        log = req.get("log") or "/dev/null"
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        with self.cond:
            # Under the lock, so the reaper cannot record this pid before we
            # are ready to look for it.
            pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True)
        wait = float(req.get("wait") or 0)
        if wait <= 0:
            return {"pid": pid}
        deadline = time.monotonic() + wait
        with self.cond:
            while pid not in self.exited:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"pid": pid, "running": True}
                self.cond.wait(left)
            rc, _ = self.exited.pop(pid)
        return {"pid": pid, "rc": rc}

    def handle(self, conn):
        try:
            with conn, conn.makefile("rwb") as f:
                line = f.readline(1 << 20)
                try:
                    req = json.loads(line)
                    if req.get("op") == "ping":
                        resp = {"ok": True, "pid": os.getpid()}
                    elif req.get("op") == "spawn":
                        resp = self.spawn(req)
                    else:
                        resp = {"error": "unknown op"}
                except (ValueError, KeyError, TypeError, OSError) as e:
                    resp = {"error": "%s: %s" % (type(e).__name__, e)}
                f.write((json.dumps(resp) + "\n").encode())
                f.flush()
        except OSError:
            pass


def serve(args):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("lab_keeper: prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))
    os.chdir("/")
    k = Keeper()
    threading.Thread(target=k.reaper, daemon=True).start()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    srv.bind(args.socket)
    os.umask(old)
    srv.listen(64)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.pidfile:
        with open(args.pidfile, "w", encoding="utf-8") as f:
            f.write("%d\n" % os.getpid())
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=k.handle, args=(conn,), daemon=True).start()
    finally:
        try:
            os.unlink(args.socket)
        except OSError:
            pass


def request(sock_path, req, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall((json.dumps(req) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return json.loads(data)


def call(args):
    argv = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv
    if not argv:
        sys.exit("lab_keeper call: no command")
    req = {"op": "spawn", "argv": argv, "env": dict(os.environ), "log": args.log,
           "wait": args.wait}
    try:
        resp = request(args.socket, req, args.wait + 10)
    except (OSError, ValueError) as e:
        sys.exit("lab_keeper call: keeper at %s: %s" % (args.socket, e))
    if "error" in resp:
        sys.exit("lab_keeper call: %s" % resp["error"])
    if resp.get("running"):
        print("%d running" % resp["pid"])
        return 124 if args.must_exit else 0
    print(resp["pid"])
    return resp.get("rc", 0)


def main():
    ap = argparse.ArgumentParser(description="parent and reaper of the lab's processes")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--socket", required=True)
    s.add_argument("--pidfile", default="")
    c = sub.add_parser("call")
    c.add_argument("--socket", required=True)
    c.add_argument("--log", default="")
    c.add_argument("--wait", type=float, default=0)
    c.add_argument("--must-exit", action="store_true")
    c.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("ping")
    p.add_argument("--socket", required=True)
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
        return 0
    if args.cmd == "ping":
        try:
            print(request(args.socket, {"op": "ping"}, 2)["pid"])
            return 0
        except (OSError, ValueError, KeyError):
            return 1
    return call(args)


if __name__ == "__main__":
    sys.exit(main())
