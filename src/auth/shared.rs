//! Shared: the compact form of an entry in the cross-worker shared dict
//! (L2), written by one worker and read by the others.

use crate::auth::cache::Entry;
use crate::auth::verdict::{is_safe_header_value, Account, Denial, HeaderValue, Verdict};
use crate::config::{Config, HeaderRule};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// Encodes `entry` for the shared dict (compact JSON; versioned).
pub fn encode_entry(entry: &Entry) -> String {
    let headers =
        |list: &[HeaderValue]| -> Vec<Value> { list.iter().map(|(i, v)| json!([i, v])).collect() };
    match &entry.verdict {
        Verdict::Allow(a) => json!({"v": 2, "e": entry.expires_at, "s": entry.stale_until,
                                    "id": a.id, "a": a.object, "u": headers(&a.upstream_headers),
                                    "r": headers(&a.response_headers), "x": a.dropped_headers,
                                    "c": a.consumer}),
        Verdict::Deny(d) => json!({"v": 2, "e": entry.expires_at, "s": entry.stale_until,
                                   "d": d.status, "w": d.www_authenticate}),
    }
    .to_string()
}

/// An L2 entry as read: typed, strings borrowed from the text where they
/// have no escapes. Reading it this way, not as a `serde_json::Value` tree,
/// is what an `l2` hit mostly costs. Unknown fields are ignored; missing
/// ones make it no entry.
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

/// Header values from an L2 entry: each rule index must name one of
/// `rules`, in order, each value must be safe.
fn decode_headers(
    list: Option<Vec<(u16, Cow<'_, str>)>>,
    rules: &[HeaderRule],
) -> Option<Box<[HeaderValue]>> {
    let list = list?;
    let mut out = Vec::with_capacity(list.len());
    let mut next = 0;
    for (i, value) in list {
        if usize::from(i) >= rules.len() || i < next || !is_safe_header_value(&value) {
            return None;
        }
        next = i + 1;
        out.push((i, Box::from(&*value)));
    }
    Some(out.into_boxed_slice())
}

/// Decodes a shared-dict entry written by [`encode_entry`]; `None` if it is
/// not one (another version, corruption): the caller treats that as a miss.
/// An entry [`interpret`](crate::auth::verdict::interpret) could not have produced (an empty account id, a
/// header rule the config does not have, a header value or a
/// `WWW-Authenticate` with CR, LF or NUL) is not one either. The cache key
/// covers the header rules and routed pointers (see `flow::scope`), so
/// an entry is only ever read under the config that wrote it.
pub fn decode_entry(text: &[u8], config: &Config) -> Option<Entry> {
    let e: Shared<'_> = serde_json::from_slice(text).ok()?;
    if e.v != 2 {
        return None;
    }
    let verdict = if let Some(status) = e.d {
        let status = u16::try_from(status).ok()?;
        if status != 401 && status != 403 {
            return None;
        }
        let www_authenticate = match e.w {
            None => None,
            Some(w) if is_safe_header_value(&w) => Some(w.into_owned()),
            Some(_) => return None,
        };
        Verdict::Deny(Arc::new(Denial {
            status,
            www_authenticate,
        }))
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
    use crate::auth::verdict::testing::{allow, config, response};

    #[test]
    fn shared_dict_entries_with_foreign_header_rules_are_misses() {
        let c = config(json!({"upstream_headers": [{"name": "x-account-id", "pointer": "/id"}]}));
        let r = response(200, &[], r#"{"id": "a1"}"#);
        let e = Entry::new(interpret(&c, &r, 0.0).expect("ok").verdict, 0.0, 60.0, 0.0);
        let text = encode_entry(&e);
        let none = config(json!({}));
        assert_eq!(
            decode_entry(text.as_bytes(), &none),
            None,
            "rule 0 does not exist"
        );
        let bad = text.replace("\"a1\"]", "\"a1\\r\\nx: y\"]");
        assert_ne!(bad, text);
        assert_eq!(decode_entry(bad.as_bytes(), &c), None, "unsafe value");
    }

    #[test]
    fn entries_round_trip_through_the_shared_dict_encoding() {
        let c = config(json!({"upstream_headers": [{"name": "x-account-id", "pointer": "/id"}]}));
        let r = response(200, &[], r#"{"id": "a1", "plan": "pro"}"#);
        let a = interpret(&c, &r, 0.0).expect("ok");
        let e = Entry::new(a.verdict, 100.0, 60.0, 30.0);
        assert_eq!(decode_entry(encode_entry(&e).as_bytes(), &c), Some(e));
        let d = Entry::new(
            Verdict::Deny(Arc::new(Denial {
                status: 403,
                www_authenticate: None,
            })),
            1.0,
            2.0,
            3.0,
        );
        assert_eq!(decode_entry(encode_entry(&d).as_bytes(), &c), Some(d));
    }

    #[test]
    fn fractional_times_and_numbers_survive_the_shared_dict_exactly() {
        // Found by fuzzing (auth_response): serde_json's default float parser
        // may miss by one ulp on 17-digit numbers, so an L2 entry written with
        // stale_until 1040.2440000000001 (1000.244 + 10 + 30) read back as
        // 1040.244, and an account field sent as 1040.2440000000001 went
        // upstream as "1040.244".
        let c = config(json!({"upstream_headers": [{"name": "x-score", "pointer": "/score"}]}));
        let r = response(401, &[], "");
        let a = interpret(&c, &r, 1000.244).expect("ok");
        let e = Entry::new(a.verdict, 1000.244, 10.0, 30.0);
        assert_eq!(decode_entry(encode_entry(&e).as_bytes(), &c), Some(e));

        let r = response(200, &[], r#"{"id": "a", "score": 1040.2440000000001}"#);
        let a = interpret(&c, &r, 0.0).expect("ok");
        assert_eq!(
            &allow(&a).upstream_headers[..],
            &[(0, "1040.2440000000001".into())]
        );
        let e = Entry::new(a.verdict, 0.1, 0.2, 0.0);
        assert_eq!(decode_entry(encode_entry(&e).as_bytes(), &c), Some(e));
    }

    #[test]
    fn foreign_or_corrupt_shared_dict_values_are_misses() {
        let c = config(json!({}));
        for bad in [
            "",
            "{",
            r#"{"v": 2}"#,
            r#"{"v":1,"e":1,"s":2,"d":200}"#,
            r#"{"v":1,"e":1,"s":2}"#,
            // Found by the fuzzing oracle (auth_response: a decoded entry
            // holds what interpret guarantees); decoded as allow/deny before.
            r#"{"v":1,"e":1,"s":2,"id":"","a":{"id":""}}"#,
            r#"{"v":1,"e":1,"s":2,"id":"a","a":[1]}"#,
            r#"{"v":1,"e":1,"s":2,"d":401,"w":"Bearer\r\nX-Evil: 1"}"#,
            r#"{"v":1,"e":1,"s":2,"d":401,"w":7}"#,
        ] {
            assert_eq!(decode_entry(bad.as_bytes(), &c), None, "{bad}");
        }
    }
}
