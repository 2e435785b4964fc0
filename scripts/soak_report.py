"""Checks and summary of scripts/soak.sh (make soak). Reads the run's data
from SOAK_* environment variables (see soak.sh), prints a plain-text summary
and exits 1 when a check fails."""
import csv
import json
import os
import re
import sys

env = os.environ
violations = []


def fields(line):
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split())}


warm = fields(env["SOAK_WARM"])
soak = fields(env["SOAK_SOAK"])
s0 = json.loads(env["SOAK_STATS0"])
s1 = json.loads(env["SOAK_STATS1"])
pct = int(env["SOAK_RSS_PCT"])
workers = env["SOAK_WORKERS"].split()
sink_records, sink_bytes = (int(x) for x in env["SOAK_SINK"].split())


def d(name):
    return s1.get(name, 0) - s0.get(name, 0)


out = []
say = out.append

# --- load --------------------------------------------------------------------
total = warm["requests"] + soak["requests"]
say("soak: %d requests (warm-up %d in %s s, soak %d in %s s at %d req/s, p99 %.1f ms), %d connections, "
    "paced to %s req/s" % (total, warm["requests"], env["SOAK_WARMUP_RUN"], soak["requests"],
                           env["SOAK_SECONDS_RUN"], soak["rps"], soak["p99_us"] / 1000, int(env["SOAK_CONNS"]),
                           env["SOAK_RATE"]))
for name, r in (("warm-up", warm), ("soak", soak)):
    say("  %-8s 200: %d  401: %d  403: %d  other: %d  socket errors: %d"
        % (name, r["s200"], r["s401"], r["s403"], r["other"], r["errors"]))
    if r["other"] or r["errors"]:
        violations.append("%s: %d answers other than 200/401/403, %d socket errors"
                          % (name, r["other"], r["errors"]))
    for status in ("s200", "s401", "s403"):
        if r[status] == 0:
            violations.append("%s: no %s answer at all: the mix did not run" % (name, status[1:]))

# --- counters ------------------------------------------------------------------
say("counters over the soak phase (both workers):")
say("  requests %d, l1_hits %d, l2_hits %d, misses %d, negative_hits %d, denied %d, no_credential %d"
    % (d("requests"), d("l1_hits"), d("l2_hits"), d("misses"), d("negative_hits"), d("denied"),
       d("no_credential")))
say("  auth_calls %d, log_queued %d, log_sent %d, log_dropped %d, log_retried %d; sink flapped down %s times"
    % (d("auth_calls"), d("log_queued"), d("log_sent"), d("log_dropped"), d("log_retried"),
       env["SOAK_FLAPS"]))
say("  the sink counted %d records (%.1f MiB) over the whole run; the gateway counted %d sent"
    % (sink_records, sink_bytes / 2**20, s1.get("log_sent", 0)))
for name in ("internal_errors", "log_failed", "auth_errors_unreachable", "auth_errors_timeout",
             "auth_errors_status", "auth_errors_invalid", "auth_errors_lock_timeout",
             "auth_errors_flight_failed", "auth_calls_rejected", "slots_reclaimed"):
    if s1.get(name, 0):
        violations.append("counter %s = %d (the auth service and the plugin were healthy)"
                          % (name, s1[name]))
for name in ("live_slots", "log_queue_bytes"):
    if s1.get(name, 0):
        violations.append("gauge %s = %d at the end (expected 0)" % (name, s1[name]))
if s1.get("log_queued", 0) != s1.get("log_sent", 0) + s1.get("log_dropped", 0):
    violations.append("log books: queued %d != sent %d + dropped %d"
                      % (s1.get("log_queued", 0), s1.get("log_sent", 0), s1.get("log_dropped", 0)))
for name in ("l1_hits", "misses", "denied", "no_credential", "log_sent"):
    if d(name) == 0:
        violations.append("counter %s did not move during the soak: the mix did not run" % name)

# --- memory and descriptors ------------------------------------------------------
# Quiet points (soak.sh): "base" after the warm-up, "end" after the soak, each
# after a full Lua GC; "*_trimmed" right after, once glibc's malloc_trim(0)
# gave free heap pages back. The check compares the trimmed points: memory in
# use, not pages glibc keeps from the last burst (a sink outage fills the log
# queue, its records are freed in the drain); a leak grows both alike.
rows = list(csv.DictReader(open(env["SOAK_SAMPLES"])))
heap = {}
for line in open(env["SOAK_LUA_HEAP"]):
    phase, rest = line.strip().split(",", 1)
    pid, kb = rest.split()
    heap[(pid, phase)] = int(kb)
say("worker memory (kB) and descriptors at the quiet points (base: after the warm-up, end: after the soak;")
say("each after a full Lua GC, \"trimmed\" also after malloc_trim(0)); the check is on trimmed VmRSS:")
say("  %-7s %9s %9s %9s %9s %7s %9s %9s %9s %9s %5s %5s"
    % ("pid", "RSS base", "RSS end", "trimmed", "trimmed", "growth", "Anon", "Anon", "Lua heap", "Lua heap",
       "fds", "fds"))
say("  %-7s %9s %9s %9s %9s %7s %9s %9s %9s %9s %5s %5s"
    % ("", "", "", "base", "end", "", "base", "end", "base", "end", "base", "end"))
for pid in workers:
    mine = [r for r in rows if r["pid"] == pid]

    def last(phase):
        got = [r for r in mine if r["phase"] == phase]
        return got[-1] if got else None

    b, e, bt, et = last("base"), last("end"), last("base_trimmed"), last("end_trimmed")
    during = [r for r in mine if r["phase"] == "soak"]
    if not (b and e and bt and et):
        violations.append("worker %s: a quiet-point sample is missing" % pid)
        continue
    rb, re_ = int(bt["vmrss_kb"]), int(et["vmrss_kb"])
    growth = 100.0 * (re_ - rb) / rb
    say("  %-7s %9s %9s %9d %9d %6.2f%% %9s %9s %9s %9s %5s %5s"
        % (pid, b["vmrss_kb"], e["vmrss_kb"], rb, re_, growth, bt["rssanon_kb"], et["rssanon_kb"],
           heap.get((pid, "base"), "?"), heap.get((pid, "end"), "?"), b["fds"], e["fds"]))
    if during:
        say("  %-7s under load: VmRSS %d..%d kB, RssShmem %d..%d kB, fds %d..%d (%d samples)"
            % ("", min(int(r["vmrss_kb"]) for r in during), max(int(r["vmrss_kb"]) for r in during),
               min(int(r["rssshmem_kb"]) for r in during), max(int(r["rssshmem_kb"]) for r in during),
               min(int(r["fds"]) for r in during), max(int(r["fds"]) for r in during), len(during)))
    if re_ > rb * (1 + pct / 100.0):
        violations.append("worker %s: RSS grew %.2f%% (%d -> %d kB), more than %d%%" % (pid, growth, rb, re_, pct))
    if int(e["fds"]) > int(b["fds"]):
        violations.append("worker %s: open descriptors grew %s -> %s" % (pid, b["fds"], e["fds"]))

# --- error log -----------------------------------------------------------------------
EXPECTED = [
    ("collector failed (ours)", re.compile(r"\[auth-router\] log collector 127\.0\.0\.1:\d+ failed: ")),
    # nginx core's own line, in the log timer or (OpenResty 1.25) on a pooled
    # idle connection the killed sink reset: no request context either way
    ("nginx reset/pipe (log timer, pool)",
     re.compile(r"\b(recv|send|writev)\(\) failed \((104: Connection reset by peer|32: Broken pipe)\)"
                r"(.*context: ngx\.timer|\s*$)")),
]
LEVEL = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(emerg|alert|crit|error|warn)\]")
with open(env["SOAK_LOG"], "rb") as f:
    raw = f.read()
mark = int(env["SOAK_LOG_MARK"])
counts = {name: [0, 0] for name, _ in EXPECTED}
unexpected = []
pos = 0
for raw_line in raw.splitlines(True):
    in_soak = pos >= mark
    pos += len(raw_line)
    line = raw_line.decode("utf-8", "replace")
    if not LEVEL.match(line):
        if "stack traceback" in line:
            unexpected.append(line.rstrip())
        continue
    for name, pat in EXPECTED:
        if pat.search(line):
            counts[name][0] += 1
            counts[name][1] += in_soak
            break
    else:
        unexpected.append(line.rstrip())
say("error log (warn or worse): %d lines, whole run / soak phase:"
    % (sum(c[0] for c in counts.values()) + len(unexpected)))
for name, (n_all, n_soak) in counts.items():
    say("  %-36s %6d / %d" % (name, n_all, n_soak))
say("  %-36s %6d" % ("unexpected", len(unexpected)))
if unexpected:
    violations.append("%d unexpected error-log line(s), first: %s" % (len(unexpected), unexpected[0][:300]))

if violations:
    say("FAILED:")
    for v in violations:
        say("  - " + v)
else:
    say("OK: RSS growth <= %d%% and no descriptor growth per worker; statuses, counters and the "
        "error log as expected" % pct)
print("\n".join(out))
sys.exit(1 if violations else 0)
