//! Metrics: the node's counters in the Prometheus text exposition format
//! (version 0.0.4).
//!
//! The renderer is here, in Rust, rather than in Lua, because the metric
//! names, labels and HELP texts sit next to the counters of [`crate::stats`]
//! they are made of: a unit test fails when a counter is added to `stats`
//! without being exported here or listed as left out on purpose, and the
//! format (label escaping, cumulative buckets, number syntax) is tested
//! without nginx. A scrape renders once per request to the metrics location,
//! so the mlua conversion of its input costs nothing that matters. Lua owns
//! the aggregation across workers (shared-dict I/O): this module only turns
//! node-wide sums into text.

use crate::stats::LATENCY_BOUNDS_S;
use std::fmt::Write;

/// The counters of [`crate::stats`] the metrics leave out, and why.
/// `negative_hits` is the sum of the tiers' `negative` lookups; `misses`
/// is `auth_calls_total` with outcome ok or denied; `auth_calls` is the
/// histogram's `_count`; `routed` is the sum of `routed_total` over routes.
pub const NOT_EXPORTED: [&str; 4] = ["negative_hits", "misses", "auth_calls", "routed"];

/// The values a render reads: node-wide sums of [`crate::stats`] counters
/// by name (0 when absent), and of every route's decisions by route name.
pub trait Values {
    /// The sum of counter `name` over the node's workers.
    fn get(&self, name: &str) -> u64;
}

impl<F: Fn(&str) -> u64> Values for F {
    fn get(&self, name: &str) -> u64 {
        self(name)
    }
}

/// What one render covers.
#[derive(Debug, Default)]
pub struct Scope<'a> {
    /// Whether a shared dict (L2) exists: without one there is no `l2` tier.
    pub shared_tier: bool,
    /// `# ` comment lines to put first (one per element, without the `# `).
    pub comments: &'a [String],
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A HELP text on one line (backslash and line feed escaped).
fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(help, out);
    out.push('\n');
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; `labels` are `(name, value)` pairs.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A counter without labels, fed by stats counter `stat`.
fn counter(out: &mut String, v: &dyn Values, name: &str, help: &str, stat: &str) {
    header(out, name, "counter", help);
    sample(out, name, &[], v.get(stat));
}

/// A counter with one label, one sample per `(label value, stats counter)`.
fn labelled(
    out: &mut String,
    v: &dyn Values,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, &str)],
) {
    header(out, name, "counter", help);
    for (value, stat) in series {
        sample(out, name, &[(label, value)], v.get(stat));
    }
}

/// A bucket bound as Prometheus writes it (`0.005`, `1`, `+Inf`).
fn bound_text(bound: Option<f64>) -> String {
    match bound {
        Some(b) => format!("{b}"),
        None => "+Inf".to_string(),
    }
}

/// The stats name of latency bucket `i` (not cumulative).
fn bucket_stat(i: usize) -> String {
    match LATENCY_BOUNDS_S.get(i) {
        Some(b) => format!("auth_latency_le_{b}"),
        None => "auth_latency_le_inf".to_string(),
    }
}

/// Renders every metric. `routes`: `(route name, routed requests)`, in the
/// order to print (the caller sorts them).
pub fn render(v: &dyn Values, routes: &[(String, u64)], scope: &Scope<'_>) -> String {
    let mut out = String::with_capacity(8192);
    for c in scope.comments {
        out.push_str("# ");
        out.push_str(&c.replace('\n', " "));
        out.push('\n');
    }
    counter(
        &mut out,
        v,
        "auth_router_requests_total",
        "Requests that entered the access phase.",
        "requests",
    );
    counter(
        &mut out,
        v,
        "auth_router_responses_total",
        "Responses whose headers went through header_filter.",
        "responses",
    );
    counter(
        &mut out,
        v,
        "auth_router_internal_errors_total",
        "Native calls that failed with an internal error (500 to the client).",
        "internal_errors",
    );
    counter(
        &mut out,
        v,
        "auth_router_configs_compiled_total",
        "Configs compiled (once per worker per config change).",
        "configs_compiled",
    );

    let name = "auth_router_cache_lookups_total";
    header(
        &mut out,
        name,
        "counter",
        "Auth cache lookups by tier (l1: the worker's LRU, l2: the node's shared dict, l3: Redis, \
         the cluster tier) and result (hit: allowed, negative: a cached 401/403, miss: not \
         answered by the tier; an l2 miss went on to Redis or the auth service).",
    );
    let mut tiers: Vec<(&str, [(&str, &str); 3])> = vec![(
        "l1",
        [
            ("hit", "l1_hits"),
            ("negative", "l1_negative_hits"),
            ("miss", "l1_misses"),
        ],
    )];
    if scope.shared_tier {
        tiers.push((
            "l2",
            [
                ("hit", "l2_hits"),
                ("negative", "l2_negative_hits"),
                ("miss", "l2_misses"),
            ],
        ));
    }
    for (tier, results) in &tiers {
        for (result, stat) in results {
            sample(
                &mut out,
                name,
                &[("tier", tier), ("result", result)],
                v.get(stat),
            );
        }
    }
    if scope.shared_tier {
        // Redis is read only behind the shared dict; its misses are the
        // requests that then called auth, counted as l2 misses already.
        for (result, stat) in [("hit", "l3_hits"), ("negative", "l3_negative_hits")] {
            sample(
                &mut out,
                name,
                &[("tier", "l3"), ("result", result)],
                v.get(stat),
            );
        }
    }

    labelled(
        &mut out,
        v,
        "auth_router_verdicts_total",
        "Requests by access verdict: allow (fresh, cached or stale), deny (the auth service's \
         401/403), no_credential (401 without an auth call), failed (auth service failed, \
         nothing stale: failure_status).",
        "verdict",
        &[
            ("allow", "allowed"),
            ("deny", "denied"),
            ("no_credential", "no_credential"),
            ("failed", "failed_closed"),
        ],
    );
    counter(
        &mut out,
        v,
        "auth_router_stale_served_total",
        "Expired verdicts served because the auth service failed.",
        "stale_served",
    );
    labelled(
        &mut out,
        v,
        "auth_router_auth_calls_total",
        "Calls to the auth service by outcome.",
        "outcome",
        &[
            ("ok", "auth_calls_ok"),
            ("denied", "auth_calls_denied"),
            ("unreachable", "auth_errors_unreachable"),
            ("timeout", "auth_errors_timeout"),
            ("status", "auth_errors_status"),
            ("invalid", "auth_errors_invalid"),
        ],
    );
    labelled(
        &mut out,
        v,
        "auth_router_auth_waits_failed_total",
        "Requests that waited for a concurrent auth call and got no verdict from it.",
        "reason",
        &[
            ("lock_timeout", "auth_errors_lock_timeout"),
            ("flight_failed", "auth_errors_flight_failed"),
        ],
    );
    counter(
        &mut out,
        v,
        "auth_router_auth_calls_rejected_total",
        "Auth calls not made: the worker had auth.max_in_flight calls in flight.",
        "auth_calls_rejected",
    );

    let name = "auth_router_auth_call_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Auth service call duration (connect to complete answer, or failure).",
    );
    let mut cumulative = 0u64;
    for i in 0..=LATENCY_BOUNDS_S.len() {
        cumulative += v.get(&bucket_stat(i));
        let le = bound_text(LATENCY_BOUNDS_S.get(i).copied());
        sample(
            &mut out,
            &format!("{name}_bucket"),
            &[("le", &le)],
            cumulative,
        );
    }
    let sum_s = v.get("auth_latency_us") as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum_s}");
    let _ = writeln!(out, "{name}_count {cumulative}");

    let name = "auth_router_routed_total";
    header(
        &mut out,
        name,
        "counter",
        "Authenticated requests sent to a route, by route name.",
    );
    for (route, n) in routes {
        sample(&mut out, name, &[("route", route)], *n);
    }
    counter(
        &mut out,
        v,
        "auth_router_header_values_dropped_total",
        "Account header values dropped (CR, LF or NUL, too long, not a scalar).",
        "header_values_dropped",
    );

    counter(
        &mut out,
        v,
        "auth_router_log_records_queued_total",
        "Log records queued (including ones dropped at once).",
        "log_queued",
    );
    counter(
        &mut out,
        v,
        "auth_router_log_records_sent_total",
        "Log records delivered to the collector.",
        "log_sent",
    );
    counter(
        &mut out,
        v,
        "auth_router_log_records_dropped_total",
        "Log records dropped: queue full, record too large or retry window over.",
        "log_dropped",
    );
    counter(
        &mut out,
        v,
        "auth_router_log_records_failed_total",
        "Log records that could not be built (internal error).",
        "log_failed",
    );
    counter(
        &mut out,
        v,
        "auth_router_log_batches_retried_total",
        "Failed deliveries of a log batch (each retried later, or dropped).",
        "log_retried",
    );
    let name = "auth_router_log_queue_bytes";
    header(
        &mut out,
        name,
        "gauge",
        "Bytes of log records queued now, summed over workers.",
    );
    sample(&mut out, name, &[], v.get("log_queue_bytes"));

    let name = "auth_router_live_slots";
    header(
        &mut out,
        name,
        "gauge",
        "Requests holding native per-request state now, summed over workers.",
    );
    sample(&mut out, name, &[], v.get("live_slots"));
    counter(
        &mut out,
        v,
        "auth_router_redis_errors_total",
        "Redis exchanges of the cluster tier that failed (timeout, unreachable, not RESP, AUTH or \
         SELECT refused); those requests went on without Redis.",
        "redis_errors",
    );
    counter(
        &mut out,
        v,
        "auth_router_slots_reclaimed_total",
        "Slots of requests whose log phase never ran, reclaimed by age.",
        "slots_reclaimed",
    );
    counter(
        &mut out,
        v,
        "auth_router_completed_total",
        "Exchanges closed in the log phase.",
        "completed",
    );
    counter(
        &mut out,
        v,
        "auth_router_response_bytes_total",
        "Response body bytes seen while response bodies are logged.",
        "response_bytes",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn values(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn render_with(pairs: &[(&str, u64)], routes: &[(String, u64)], l2: bool) -> String {
        let map = values(pairs);
        let get = move |n: &str| map.get(n).copied().unwrap_or(0);
        render(
            &get,
            routes,
            &Scope {
                shared_tier: l2,
                comments: &[],
            },
        )
    }

    /// The sample lines as `(series, value)`.
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("sample line");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn value_of(text: &str, series: &str) -> Option<String> {
        samples(text)
            .into_iter()
            .find(|(k, _)| k == series)
            .map(|(_, v)| v)
    }

    #[test]
    fn every_stats_counter_is_exported_or_left_out_on_purpose() {
        let read = RefCell::new(Vec::new());
        let get = |n: &str| {
            read.borrow_mut().push(n.to_string());
            0
        };
        render(
            &get,
            &[],
            &Scope {
                shared_tier: true,
                comments: &[],
            },
        );
        let read = read.into_inner();
        for (name, _) in crate::stats::snapshot() {
            assert!(
                read.iter().any(|r| r == name) || NOT_EXPORTED.contains(&name),
                "stats counter '{name}' is neither exported nor in NOT_EXPORTED"
            );
        }
    }

    #[test]
    fn every_metric_has_help_and_type_before_its_samples() {
        let text = render_with(&[], &[("email".into(), 1)], true);
        let mut typed: Vec<String> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap_or("").to_string());
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.iter().any(|t| t == f))
                    })
                    .unwrap_or(name);
                assert_eq!(typed.last().map(String::as_str), Some(family), "{line}");
                assert_eq!(helped.last().map(String::as_str), Some(family), "{line}");
            }
        }
        let mut dedup = typed.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), typed.len(), "a metric family declared twice");
    }

    #[test]
    fn counters_carry_their_node_wide_values() {
        let text = render_with(
            &[
                ("requests", 7),
                ("l1_hits", 3),
                ("l2_negative_hits", 2),
                ("auth_calls_denied", 4),
                ("failed_closed", 1),
                ("live_slots", 5),
            ],
            &[],
            true,
        );
        assert_eq!(
            value_of(&text, "auth_router_requests_total").as_deref(),
            Some("7")
        );
        assert_eq!(
            value_of(
                &text,
                r#"auth_router_cache_lookups_total{tier="l1",result="hit"}"#
            )
            .as_deref(),
            Some("3")
        );
        assert_eq!(
            value_of(
                &text,
                r#"auth_router_cache_lookups_total{tier="l2",result="negative"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            value_of(&text, r#"auth_router_auth_calls_total{outcome="denied"}"#).as_deref(),
            Some("4")
        );
        assert_eq!(
            value_of(&text, r#"auth_router_verdicts_total{verdict="failed"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "auth_router_live_slots").as_deref(),
            Some("5")
        );
    }

    #[test]
    fn without_a_shared_dict_there_is_no_l2_tier() {
        let text = render_with(&[], &[], false);
        assert!(!text.contains(r#"tier="l2""#));
        assert!(text.contains(r#"tier="l1""#));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let text = render_with(
            &[
                ("auth_latency_le_0.005", 2),
                ("auth_latency_le_0.05", 3),
                ("auth_latency_le_inf", 1),
                ("auth_latency_us", 1_500_000),
            ],
            &[],
            true,
        );
        let b = |le: &str| {
            value_of(
                &text,
                &format!("auth_router_auth_call_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.005").as_deref(), Some("2"));
        assert_eq!(b("0.025").as_deref(), Some("2"));
        assert_eq!(b("0.05").as_deref(), Some("5"));
        assert_eq!(b("10").as_deref(), Some("5"));
        assert_eq!(b("+Inf").as_deref(), Some("6"));
        assert_eq!(
            value_of(&text, "auth_router_auth_call_duration_seconds_count").as_deref(),
            Some("6")
        );
        assert_eq!(
            value_of(&text, "auth_router_auth_call_duration_seconds_sum").as_deref(),
            Some("1.5")
        );
        // Every bound the native side counts has a bucket line.
        assert_eq!(
            text.matches("auth_router_auth_call_duration_seconds_bucket{")
                .count(),
            LATENCY_BOUNDS_S.len() + 1
        );
    }

    #[test]
    fn route_names_are_escaped_in_labels() {
        let text = render_with(&[], &[("a\"b\\c\nd".into(), 9), ("email".into(), 2)], true);
        assert_eq!(
            value_of(&text, r#"auth_router_routed_total{route="a\"b\\c\nd"}"#).as_deref(),
            Some("9")
        );
        assert_eq!(
            value_of(&text, r#"auth_router_routed_total{route="email"}"#).as_deref(),
            Some("2")
        );
    }

    #[test]
    fn comments_come_first_on_one_line_each() {
        let comments = vec!["this worker only\n(no shared dict)".to_string()];
        let get = |_: &str| 0;
        let text = render(
            &get,
            &[],
            &Scope {
                shared_tier: false,
                comments: &comments,
            },
        );
        assert!(text.starts_with("# this worker only (no shared dict)\n# HELP "));
    }
}
