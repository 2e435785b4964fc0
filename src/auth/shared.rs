//! Shared: the compact form of an entry in the cross-worker shared dict
//! (L2) and in Redis (L3), written by one worker (or node) and read by the
//! others.
//!
//! Written in a small binary form (format 3, below): reading it is what an
//! `l2` hit costs beyond a `hit`, and a JSON parse was most of that. The
//! JSON form of the previous release (format 2, starts with `{`) is still
//! read, so that during a rolling upgrade the old nodes' Redis entries and
//! the old workers' dict entries stay hits instead of auth calls; an old
//! release reads a format-3 entry as a miss, which is safe.
//!
//! Format 3, numbers little-endian; `str` is a u32 length and the bytes,
//! `opt` a `str` whose length u32::MAX means absent:
//! ```text
//! u8 3 | f64 expires_at | f64 stale_until | u8 kind
//! kind 1 (deny):  u16 status | opt www_authenticate
//! kind 0 (allow): str id | str object (JSON text, empty = null)
//!                 | u32 dropped_headers | opt consumer
//!                 | headers upstream | headers response
//! headers: u16 count, then count x (u16 rule index | str value)
//! ```
//! Hand-written rather than bincode/postcard: the format must stay fixed
//! across releases and nodes, be read without allocation beyond the
//! account's own strings, and reject bytes `interpret` could not have
//! produced; a dozen lines of cursor do that and the fuzz targets
//! (auth_response, ffi_calls) feed it arbitrary bytes.

use crate::auth::cache::Entry;
use crate::auth::verdict::{is_safe_header_value, Account, Denial, HeaderValue, Verdict};
use crate::config::{Config, HeaderRule, HeaderSource};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// The first byte of a format-3 entry.
const FORMAT: u8 = 3;
const ALLOW: u8 = 0;
const DENY: u8 = 1;
const ABSENT: u32 = u32::MAX;

/// Encodes `entry` for the shared dict and Redis (format 3).
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    fn str(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    fn opt(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => str(out, s.as_bytes()),
            None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }
    fn headers(out: &mut Vec<u8>, list: &[HeaderValue]) {
        out.extend_from_slice(&(list.len() as u16).to_le_bytes());
        for (rule, value) in list {
            out.extend_from_slice(&rule.to_le_bytes());
            str(out, value.as_bytes());
        }
    }
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT);
    out.extend_from_slice(&entry.expires_at.to_le_bytes());
    out.extend_from_slice(&entry.stale_until.to_le_bytes());
    match &entry.verdict {
        Verdict::Deny(d) => {
            out.push(DENY);
            out.extend_from_slice(&d.status.to_le_bytes());
            opt(&mut out, d.www_authenticate.as_deref());
        }
        Verdict::Allow(a) => {
            out.push(ALLOW);
            str(&mut out, a.id.as_bytes());
            let object = if a.object.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&a.object).unwrap_or_default()
            };
            str(&mut out, &object);
            out.extend_from_slice(&a.dropped_headers.to_le_bytes());
            opt(&mut out, a.consumer.as_deref());
            headers(&mut out, &a.upstream_headers);
            headers(&mut out, &a.response_headers);
        }
    }
    out
}

/// Decodes a shared-dict or Redis value written by [`encode_entry`] (or by
/// the previous release, in JSON); `None` if it is not one (another
/// version, corruption): the caller treats that as a miss. An entry
/// [`interpret`](crate::auth::verdict::interpret) could not have produced
/// under `config` (an empty account id, a header rule the config does not
/// have or out of order, a constant header missing, a header value or a
/// `WWW-Authenticate` with CR, LF or NUL, a status other than 401/403) is
/// not one either. The cache key covers the header rules and routed
/// pointers (see `flow::scope`), so an entry is only ever read under the
/// config that wrote it.
pub fn decode_entry(value: &[u8], config: &Config) -> Option<Entry> {
    let entry = match value.first() {
        Some(&FORMAT) => decode_binary(value, config)?,
        Some(b'{') => decode_json(value, config)?,
        _ => return None,
    };
    if let Verdict::Allow(a) = &entry.verdict {
        if !renders_constants(a, config) {
            return None;
        }
    }
    Some(entry)
}

/// A cursor over a format-3 entry; every read fails past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(usize::try_from(n).ok()?)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    /// `Some(None)`: absent; `None`: not an entry.
    fn opt(&mut self) -> Option<Option<&'a str>> {
        if self.0.get(..4)? == ABSENT.to_le_bytes() {
            self.take(4)?;
            return Some(None);
        }
        self.str().map(Some)
    }
    fn headers(&mut self, rules: &[HeaderRule]) -> Option<Box<[HeaderValue]>> {
        let n = usize::from(self.u16()?);
        if n > rules.len() {
            return None;
        }
        header_values(n, (0..n).map(|_| Some((self.u16()?, self.str()?))), rules)
    }
}

fn decode_binary(value: &[u8], config: &Config) -> Option<Entry> {
    let mut r = Reader(value);
    if r.u8()? != FORMAT {
        return None;
    }
    let expires_at = r.f64()?;
    let stale_until = r.f64()?;
    let verdict = match r.u8()? {
        DENY => {
            let status = r.u16()?;
            let www = r.opt()?;
            denial(status, www.map(Cow::Borrowed))?
        }
        ALLOW => {
            let id = r.str().filter(|id| !id.is_empty())?;
            let object = match r.bytes()? {
                [] => Value::Null,
                text => serde_json::from_slice(text).ok()?,
            };
            let dropped_headers = r.u32()?;
            let consumer = r.opt()?;
            Verdict::Allow(Arc::new(Account {
                id: Box::from(id),
                object,
                dropped_headers,
                consumer: consumer.map(Box::from),
                upstream_headers: r.headers(&config.upstream_headers)?,
                response_headers: r.headers(&config.response_headers)?,
            }))
        }
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(Entry {
        verdict,
        expires_at,
        stale_until,
    })
}

/// A deny verdict as an entry may hold it: 401 or 403, a safe
/// `WWW-Authenticate`.
fn denial(status: u16, www_authenticate: Option<Cow<'_, str>>) -> Option<Verdict> {
    if status != 401 && status != 403 {
        return None;
    }
    let www_authenticate = match www_authenticate {
        None => None,
        Some(w) if is_safe_header_value(&w) => Some(w.into_owned()),
        Some(_) => return None,
    };
    Some(Verdict::Deny(Arc::new(Denial {
        status,
        www_authenticate,
    })))
}

/// What `interpret` guarantees of an account's header lists under `config`:
/// every constant header rendered with its value, and no more values plus
/// dropped ones than rules.
fn renders_constants(a: &Account, config: &Config) -> bool {
    let all = |list: &[HeaderValue], rules: &[HeaderRule]| {
        rules
            .iter()
            .enumerate()
            .all(|(i, rule)| match &rule.source {
                HeaderSource::Value(v) => {
                    list.iter().any(|(n, x)| usize::from(*n) == i && **x == **v)
                }
                HeaderSource::Pointer(_) => true,
            })
    };
    let rendered = a.upstream_headers.len() + a.response_headers.len();
    let configured = config.upstream_headers.len() + config.response_headers.len();
    all(&a.upstream_headers, &config.upstream_headers)
        && all(&a.response_headers, &config.response_headers)
        && rendered + a.dropped_headers as usize <= configured
}

/// A format-2 (JSON) entry as read: typed, strings borrowed from the text
/// where they have no escapes. Unknown fields are ignored; missing ones
/// make it no entry.
#[derive(Deserialize)]
struct Shared<'a> {
    v: u64,
    e: f64,
    s: f64,
    // deny
    d: Option<u64>,
    #[serde(borrow)]
    w: Option<Cow<'a, str>>,
    // allow
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    a: Option<Value>,
    #[serde(borrow)]
    u: Option<Vec<(u16, Cow<'a, str>)>>,
    #[serde(borrow)]
    r: Option<Vec<(u16, Cow<'a, str>)>>,
    x: Option<u32>,
    #[serde(borrow)]
    c: Option<Cow<'a, str>>,
}

/// A field that is present, `null` included (`Option` alone reads `null`
/// as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Header values from a format-2 entry (see [`header_values`]).
fn decode_headers(
    list: Option<Vec<(u16, Cow<'_, str>)>>,
    rules: &[HeaderRule],
) -> Option<Box<[HeaderValue]>> {
    let list = list?;
    header_values(
        list.len(),
        list.iter().map(|(i, v)| Some((*i, &**v))),
        rules,
    )
}

/// An entry's header values, in either format: `n` (rule index, value)
/// items, `None` where one could not be read. Each index must name one of
/// `rules`, in increasing order, and each value must be safe.
fn header_values<'v>(
    n: usize,
    items: impl Iterator<Item = Option<(u16, &'v str)>>,
    rules: &[HeaderRule],
) -> Option<Box<[HeaderValue]>> {
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    for item in items {
        let (rule, value) = item?;
        if usize::from(rule) >= rules.len() || rule < next || !is_safe_header_value(value) {
            return None;
        }
        next = rule + 1;
        out.push((rule, Box::from(value)));
    }
    Some(out.into_boxed_slice())
}

/// A format-2 (JSON) entry of the previous release.
fn decode_json(text: &[u8], config: &Config) -> Option<Entry> {
    let e: Shared<'_> = serde_json::from_slice(text).ok()?;
    if e.v != 2 {
        return None;
    }
    let verdict = if let Some(status) = e.d {
        denial(u16::try_from(status).ok()?, e.w)?
    } else {
        let id = e.id.filter(|id| !id.is_empty())?;
        Verdict::Allow(Arc::new(Account {
            id: Box::from(&*id),
            object: e.a?,
            upstream_headers: decode_headers(e.u, &config.upstream_headers)?,
            response_headers: decode_headers(e.r, &config.response_headers)?,
            dropped_headers: e.x?,
            consumer: e.c.map(|c| Box::from(&*c)),
        }))
    };
    Some(Entry {
        verdict,
        expires_at: e.e,
        stale_until: e.s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verdict::interpret;
    use crate::auth::verdict::testing::{config, response};
    use serde_json::json;

    fn account(v: &Verdict) -> &Account {
        match v {
            Verdict::Allow(a) => a,
            Verdict::Deny(_) => panic!("not allowed"),
        }
    }

    fn allowed(c: &Config, body: &str, now: f64, ttl: f64, stale: f64) -> Entry {
        let a = interpret(c, &response(200, &[], body), 0.0).expect("ok");
        Entry::new(a.verdict, now, ttl, stale)
    }

    #[test]
    fn shared_dict_entries_with_foreign_header_rules_are_misses() {
        let c = config(json!({"upstream_headers": [{"name": "x-account-id", "pointer": "/id"}]}));
        let e = allowed(&c, r#"{"id": "a1"}"#, 0.0, 60.0, 0.0);
        let bytes = encode_entry(&e);
        let none = config(json!({}));
        assert_eq!(decode_entry(&bytes, &none), None, "rule 0 does not exist");
        // the header value "a1" (the id's copy comes first): make it "a\n"
        let mut bad = bytes.clone();
        let at = bad.windows(2).rposition(|w| w == b"a1").expect("the value") + 1;
        bad[at] = b'\n';
        assert_eq!(decode_entry(&bad, &c), None, "unsafe value");
    }

    #[test]
    fn entries_round_trip_through_the_shared_dict_encoding() {
        let c = config(json!({
            "upstream_headers": [{"name": "x-account-id", "pointer": "/id"},
                                 {"name": "x-tier", "value": "gold"}],
            "response_headers": [{"name": "x-plan", "pointer": "/plan"}],
            "routes": [{"name": "pro", "account_match": {"/plan": ["pro"]}, "target": "127.0.0.1:9"}],
        }));
        let e = allowed(&c, r#"{"id": "a1", "plan": "pro"}"#, 100.0, 60.0, 30.0);
        assert!(
            !account(&e.verdict).object.is_null(),
            "routes read the plan"
        );
        assert_eq!(decode_entry(&encode_entry(&e), &c), Some(e));
        let d = Entry::new(
            Verdict::Deny(Arc::new(Denial {
                status: 403,
                www_authenticate: Some("Bearer realm=\"x\"".into()),
            })),
            1.0,
            2.0,
            3.0,
        );
        assert_eq!(decode_entry(&encode_entry(&d), &c), Some(d));
    }

    #[test]
    fn the_previous_releases_json_entries_are_still_read() {
        // what the previous release wrote (format 2), byte for byte
        let c = config(json!({"upstream_headers": [{"name": "x-account-id", "pointer": "/id"}]}));
        let v2 = r#"{"v":2,"e":160.0,"s":190.0,"id":"a1","a":null,"u":[[0,"a1"]],"r":[],"x":0,"c":null}"#;
        let e = allowed(&c, r#"{"id": "a1"}"#, 100.0, 60.0, 30.0);
        assert_eq!(decode_entry(v2.as_bytes(), &c), Some(e));
        let deny = r#"{"v":2,"e":1.0,"s":2.0,"d":401,"w":"Bearer"}"#;
        assert!(matches!(
            decode_entry(deny.as_bytes(), &c).map(|e| e.verdict),
            Some(Verdict::Deny(d)) if d.status == 401
        ));
    }

    #[test]
    fn fractional_times_and_numbers_survive_the_shared_dict_exactly() {
        // Found by fuzzing (auth_response) in the JSON form: serde_json's
        // default float parser may miss by one ulp on 17-digit numbers. The
        // binary form stores the bits; an account field of 17 digits is a
        // header value string either way.
        let c = config(json!({"upstream_headers": [{"name": "x-score", "pointer": "/score"}]}));
        let r = response(401, &[], "");
        let a = interpret(&c, &r, 1000.244).expect("ok");
        let e = Entry::new(a.verdict, 1000.244, 10.0, 30.0);
        assert_eq!(decode_entry(&encode_entry(&e), &c), Some(e));

        let e = allowed(
            &c,
            r#"{"id": "a", "score": 1040.2440000000001}"#,
            0.1,
            0.2,
            0.0,
        );
        assert_eq!(
            &account(&e.verdict).upstream_headers[..],
            &[(0, "1040.2440000000001".into())]
        );
        assert_eq!(decode_entry(&encode_entry(&e), &c), Some(e));
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_a_miss() {
        let c = config(json!({
            "upstream_headers": [{"name": "x-account-id", "pointer": "/id"}],
            "consumer": {"by": "username", "pointer": "/id"},
        }));
        let e = allowed(&c, r#"{"id": "a1"}"#, 100.0, 60.0, 30.0);
        let bytes = encode_entry(&e);
        for n in 0..bytes.len() {
            assert_eq!(decode_entry(&bytes[..n], &c), None, "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_entry(&longer, &c), None, "a byte more");
        assert_eq!(decode_entry(&bytes, &c), Some(e));
    }

    #[test]
    fn entries_interpret_could_not_produce_are_misses() {
        let c = config(json!({
            "upstream_headers": [{"name": "x-account-id", "pointer": "/id"},
                                 {"name": "x-tier", "value": "gold"}],
        }));
        let e = allowed(&c, r#"{"id": "a1"}"#, 100.0, 60.0, 30.0);
        let good = encode_entry(&e);
        assert_eq!(decode_entry(&good, &c), Some(e.clone()));
        let Verdict::Allow(a) = &e.verdict else {
            unreachable!()
        };
        let with = |f: &dyn Fn(&mut Account)| {
            let mut a = (**a).clone();
            f(&mut a);
            encode_entry(&Entry {
                verdict: Verdict::Allow(Arc::new(a)),
                ..e.clone()
            })
        };
        for (why, bytes) in [
            ("empty id", with(&|a| a.id = "".into())),
            (
                "constant header missing",
                with(&|a| a.upstream_headers = Box::new([(0, "a1".into())])),
            ),
            (
                "constant header changed",
                with(&|a| a.upstream_headers[1].1 = "lead".into()),
            ),
            (
                "rules out of order",
                with(&|a| a.upstream_headers.reverse()),
            ),
            ("more values than rules", with(&|a| a.dropped_headers = 1)),
        ] {
            assert_eq!(decode_entry(&bytes, &c), None, "{why}");
        }
        let deny = |status: u16, www: Option<&str>| {
            encode_entry(&Entry {
                verdict: Verdict::Deny(Arc::new(Denial {
                    status,
                    www_authenticate: www.map(str::to_owned),
                })),
                ..e.clone()
            })
        };
        assert!(decode_entry(&deny(401, Some("Basic")), &c).is_some());
        assert_eq!(decode_entry(&deny(200, None), &c), None, "deny 200");
        assert_eq!(
            decode_entry(&deny(401, Some("a\r\nb: c")), &c),
            None,
            "CRLF"
        );
        let mut kind = good.clone();
        kind[17] = 7;
        assert_eq!(decode_entry(&kind, &c), None, "unknown kind");
    }

    #[test]
    fn foreign_or_corrupt_shared_dict_values_are_misses() {
        let c = config(json!({}));
        for bad in [
            "",
            "{",
            "\u{2}",
            r#"{"v": 2}"#,
            r#"{"v":1,"e":1,"s":2,"d":200}"#,
            r#"{"v":1,"e":1,"s":2}"#,
            // Found by the fuzzing oracle (auth_response: a decoded entry
            // holds what interpret guarantees); decoded as allow/deny before.
            r#"{"v":1,"e":1,"s":2,"id":"","a":{"id":""}}"#,
            r#"{"v":1,"e":1,"s":2,"id":"a","a":[1]}"#,
            r#"{"v":1,"e":1,"s":2,"d":401,"w":"Bearer\r\nX-Evil: 1"}"#,
            r#"{"v":1,"e":1,"s":2,"d":401,"w":7}"#,
            r#"{"v":2,"e":1,"s":2,"d":200}"#,
            r#"{"v":2,"e":1,"s":2,"id":"","a":null,"u":[],"r":[],"x":0}"#,
        ] {
            assert_eq!(decode_entry(bad.as_bytes(), &c), None, "{bad}");
        }
    }
}
