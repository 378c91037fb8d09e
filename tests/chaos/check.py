#!/usr/bin/python3
"""check.py: the chaos campaign's invariants over one schedule's traces.

  check.py LAB_DIR CHAOS_DIR

Reads CHAOS_DIR/sampler.jsonl (writable PostgreSQL servers over time),
CHAOS_DIR/events.jsonl (what the schedule did, with wall times),
CHAOS_DIR/writer-check.json (the writer's audit), the daemons' logs
(LAB_DIR/dcN/triad.log) and the run journals (LAB_DIR/dcN/state/runs).
Prints one line per violation and a last line `violations: N`; exit 1 when
N > 0.

Invariants:
  two-primaries   never two servers writable at the same time, except a
                  server the schedule itself restarted, for REVIVAL_S after
                  its start (it comes back as it was on disk, and its
                  daemon fences it again: the binding to the daemon that
                  prevents this in production is not modelled by the lab)
  acked-lost      no acknowledged write lost, none taken by two primaries
                  (the writer's audit; synchronous replication)
  majority        every decision was accepted by a majority (the leader's
                  +decision and the followers' +decision-accepted); at most
                  one leader per epoch
  runs            every run ended (done, failed or aborted), and a run that
                  did not complete says why
  crash           no daemon died but those the schedule killed (from
                  events.jsonl: the campaign checked liveness)
"""

import glob
import json
import os
import re
import sys

REVIVAL_S = 7.0  # the daemon's fence retry (at most 5 s) and the fence itself
SITES = ("dc1", "dc2", "dc3")


def load_jsonl(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def intervals(samples, end):
    """Per site, the [start, stop) spans in which it was writable."""
    spans = {s: [] for s in SITES}
    since = {}
    for ev in samples:
        s, t, w = ev["site"], ev["t"], ev["writable"]
        if w is True and s not in since:
            since[s] = t
        elif w is not True and s in since:
            spans[s].append((since.pop(s), t))
    for s, t in since.items():
        spans[s].append((t, end))
    return spans


def main():
    lab, chaos = sys.argv[1], sys.argv[2]
    violations = []
    samples = load_jsonl(os.path.join(chaos, "sampler.jsonl"))
    events = load_jsonl(os.path.join(chaos, "events.jsonl"))
    end = max([e["t"] for e in samples] + [e["t"] for e in events] + [0])

    # --- two writable primaries ---
    restarts = {s: [e["t"] for e in events if e.get("what") == "pg-start" and e.get("site") == s]
                for s in SITES}
    spans = intervals(samples, end)

    def excused(site, a, b):
        return any(r - 0.5 <= a <= r + REVIVAL_S and b <= r + REVIVAL_S for r in restarts[site])

    for i, s1 in enumerate(SITES):
        for s2 in SITES[i + 1:]:
            for a1, b1 in spans[s1]:
                for a2, b2 in spans[s2]:
                    lo, hi = max(a1, a2), min(b1, b2)
                    if lo < hi and not excused(s1, a1, b1) and not excused(s2, a2, b2):
                        violations.append("two-primaries: %s and %s both writable for %.1f s from "
                                          "%.3f" % (s1, s2, hi - lo, lo))

    # --- the writer's audit ---
    try:
        with open(os.path.join(chaos, "writer-check.json"), encoding="utf-8") as f:
            audit = json.load(f)
        if audit.get("lost", 0) or audit.get("split_brain", 0):
            violations.append("acked-lost: writer audit lost=%s split_brain=%s" %
                              (audit.get("lost"), audit.get("split_brain")))
    except (OSError, ValueError) as e:
        violations.append("acked-lost: no writer audit (%s)" % e)

    # --- decisions on a majority, one leader per epoch ---
    decided, accepted, leaders = {}, {}, {}
    for s in SITES:
        try:
            text = open(os.path.join(lab, s, "triad.log"), encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for m in re.finditer(r"event=\+decision epoch=(\d+)", text):
            decided.setdefault(int(m.group(1)), set()).add(s)
        for m in re.finditer(r"event=\+decision-accepted epoch=(\d+)", text):
            accepted.setdefault(int(m.group(1)), set()).add(s)
        for m in re.finditer(r"event=\+leader epoch=(\d+)", text):
            leaders.setdefault(int(m.group(1)), []).append(s)
    for epoch, who in decided.items():
        n = len(who | accepted.get(epoch, set()))
        if n < 2:
            violations.append("majority: decision of epoch %d held by %d site(s)" % (epoch, n))
    for epoch, who in leaders.items():
        if len(set(who)) > 1:
            violations.append("majority: epoch %d had leaders %s" % (epoch, sorted(set(who))))

    # --- runs ended, failures explained ---
    seen = {}
    for path in glob.glob(os.path.join(lab, "dc?", "state", "runs", "*.jsonl")):
        run = os.path.basename(path)[:-6]
        recs = load_jsonl(path)
        end_rec = [r for r in recs if r.get("t") == "run-end"]
        state = end_rec[-1].get("state") if end_rec else None
        detail = end_rec[-1].get("reason", "") if end_rec else ""
        prev = seen.get(run)
        if prev is None or (state and not prev[0]):
            seen[run] = (state, detail)
    for run, (state, detail) in seen.items():
        if state is None:
            violations.append("runs: run %s never ended" % run)
        elif state != "done" and not detail:
            violations.append("runs: run %s ended %s without a reason" % (run, state))

    # --- crashes ---
    for e in events:
        if e.get("what") == "crash":
            violations.append("crash: %s" % e.get("detail"))

    for v in violations:
        print(v)
    print("violations: %d" % len(violations))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
