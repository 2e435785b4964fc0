"""Writes the auth-router configs of bench/run.sh's variants (one JSON file
each) and bench/kong.sh's plugin config.

    python3 bench/configs.py OUT_DIR AUTH_PORT LEGACY_PORT EMAIL_PORT CALENDAR_PORT SINK_PORT [REDIS_PORT]

REDIS_PORT (bench/run.sh's redis-server) adds the `l3` config.
"""
import json
import sys

out = sys.argv[1]
auth, legacy, email, calendar, sink = map(int, sys.argv[2:7])
redis = int(sys.argv[7]) if len(sys.argv) > 7 else None

HEADERS = {
    "upstream_headers": [{"name": "x-account-id", "pointer": "/id"},
                         {"name": "x-account-plan", "pointer": "/plan"}],
    "response_headers": [{"name": "x-account-plan", "pointer": "/plan"}],
}


def base(**auth_extra):
    return {"auth": {"url": f"http://127.0.0.1:{auth}/auth", "ttl_s": 3600, **auth_extra},
            **HEADERS}


def unmatched(n):
    """n routes whose prefixes the bench's paths (/send, /log) never have."""
    return [{"name": f"r{i:04d}", "paths": [f"/r{i:04d}/"], "target": f"127.0.0.1:{10000 + i}"}
            for i in range(1, n + 1)]


def write(name, conf):
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(conf, f, indent=1)


write("hit", {**base(), "routes": unmatched(20)})
write("hit-1000", {**base(), "routes": unmatched(1000)})
# The motivating table (docs/configuration.md's complete example, trimmed to
# one target per service): /send matches `email` after three routes that do
# not match (the version route resolves the API version, the flag route
# checks flags, the calendar routes check paths).
write("hit-routed", {**base(), "api_version": {"default": "v2"}, "routes": [
    {"name": "legacy-v0", "api_versions": ["v0"], "target": f"127.0.0.1:{legacy}"},
    {"name": "calendar-v2", "paths": ["/events", "/calendars"], "flags": ["calendar_v2"],
     "percentage": 25, "target": f"127.0.0.1:{calendar}"},
    {"name": "calendar", "paths": ["/events", "/calendars"], "target": f"127.0.0.1:{calendar}"},
    {"name": "email", "paths": ["/send"], "target": f"127.0.0.1:{email}"},
]})
write("l2", {**base(cache_size=1), "routes": unmatched(20)})
write("miss", {**base(), "routes": unmatched(20)})
if redis:
    # L1 of one entry and a shared dict of a few hundred entries (bench_l3,
    # 64 KiB) that the variant's 2048 credentials cycle through: every request
    # misses both and reads its verdict from Redis.
    write("l3", {**base(cache_size=1, shared_dict="bench_l3"), "routes": unmatched(20),
                 "cluster": {"enabled": True, "host": "127.0.0.1", "port": redis,
                             "key_secret": "bench-fleet-key-secret"}})
write("log", {**base(), "routes": unmatched(20), "log": {
    "enabled": True, "sink": "tcp", "host": "127.0.0.1", "port": sink,
    # The defaults (flush 1000 ms, queue 8 MiB, batches of 100): a full batch
    # ships at once, so at ~20k req/s nothing is dropped. (Before it did, the
    # queue overflowed between flushes and this config set 50 ms and 64 MiB.)
    "request_body": True, "response_body": True, "redact_body_fields": ["password", "token"]}})
