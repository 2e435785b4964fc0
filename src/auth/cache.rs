//! Cache: the per-worker (L1) auth cache, its keys, and the compact form of an
//! entry stored in the cross-worker shared dict (L2).
//!
//! Semantics follow lua-resty-mlcache: a positive TTL, a separate negative TTL
//! for denials, and a stale window in which an expired entry may still be
//! served, but only when the auth service fails. Time is passed in (seconds,
//! fractions allowed, as `ngx.now()`), so the cache reads no clock.

use crate::auth::verdict::{Account, Denial};
use lru::LruCache;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;
use std::sync::Arc;

/// A cache key: a keyed 128-bit digest of everything sent to the auth service.
/// The raw credential is never stored, logged or used as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 16]);

impl CacheKey {
    /// The key as 32 lowercase hex characters (the shared dict key).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl CacheKey {
    /// Parses the 32-hex-digit form written by [`CacheKey::hex`].
    pub fn from_hex(text: &[u8]) -> Option<CacheKey> {
        if text.len() != 32 {
            return None;
        }
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let mut out = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(CacheKey(out))
    }
}

/// Derives cache keys with a per-node secret, so keys cannot be precomputed
/// from guessed credentials and differ between nodes.
#[derive(Clone)]
pub struct KeyDeriver {
    key: [u8; 32],
}

impl std::fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDeriver(..)") // never print the secret
    }
}

impl KeyDeriver {
    /// A deriver keyed by `secret` (any length; hashed into a 256-bit key).
    pub fn new(secret: &[u8]) -> Self {
        KeyDeriver {
            key: blake3::derive_key("auth-router 2026 cache key v1", secret),
        }
    }

    /// A deriver for one config: `scope` (everything but the request's own
    /// values that decides an answer, see `plugin::scope`) is folded into
    /// the key, so that keys differ per config and a request hashes only
    /// its own values.
    pub fn scoped(&self, scope: &[u8]) -> Self {
        KeyDeriver {
            key: *blake3::keyed_hash(&self.key, scope).as_bytes(),
        }
    }

    /// The key for `parts` (the request's header values and their presence).
    /// Each part is length-prefixed so `("ab", "c")` and `("a", "bc")` never
    /// collide.
    ///
    /// SipHash-2-4 with a 128-bit output, keyed by (half of) the config's
    /// key: a PRF made for short keyed inputs, about a fifth of BLAKE3's
    /// cost on a request's few dozen bytes (this runs on every request),
    /// and as good for this use: the key is secret and no digest leaves the
    /// node, so a confusion of two credentials needs a 128-bit collision
    /// found blind. BLAKE3 still derives the keys (once per config).
    pub fn derive<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> CacheKey {
        let mut h = self.hasher();
        for p in parts {
            Hasher::write(&mut h, &(p.len() as u64).to_le_bytes());
            Hasher::write(&mut h, p);
        }
        CacheKey(h.finish128().as_bytes())
    }

    fn hasher(&self) -> SipHasher24 {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.key[..16]);
        SipHasher24::new_with_key(&k)
    }
}

/// What the auth service said about a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Authenticated: the account.
    Allow(Arc<Account>),
    /// Rejected with 401 or 403.
    Deny(Arc<Denial>),
}

/// A cached verdict with its lifetimes (absolute times, seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The verdict.
    pub verdict: Verdict,
    /// Fresh until this time.
    pub expires_at: f64,
    /// Servable as stale (auth service failing) until this time.
    pub stale_until: f64,
}

impl Entry {
    /// An entry created at `now` living `ttl` seconds, then `stale` more.
    pub fn new(verdict: Verdict, now: f64, ttl: f64, stale: f64) -> Self {
        Entry {
            verdict,
            expires_at: now + ttl,
            stale_until: now + ttl + stale,
        }
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: f64) -> bool {
        now < self.expires_at
    }

    /// Whether the entry may be served as stale at `now`.
    pub fn is_stale_servable(&self, now: f64) -> bool {
        now < self.stale_until
    }
}

/// Share of the L1 capacity that denials may take: one in this many slots
/// (at least one). Anyone can mint bad credentials, so a flood of them must
/// not evict the accounts of legitimate clients.
pub const NEGATIVE_SHARE: usize = 10;

/// The L1 cache: bounded, least-recently-used entries evicted first.
/// Denials live in their own LRU, capped at `capacity / NEGATIVE_SHARE`
/// entries (at least one) within the total `capacity`: past that cap a new
/// denial evicts the oldest denial, never an allowed account.
#[derive(Debug)]
pub struct Cache {
    allowed: LruCache<CacheKey, Entry>,
    denied: LruCache<CacheKey, Entry>,
    capacity: usize,
    denied_capacity: usize,
}

impl Cache {
    /// A cache holding at most `capacity` entries (at least 1), of which at
    /// most `capacity / NEGATIVE_SHARE` (at least 1) are denials. Memory
    /// grows with use: `LruCache::new` would reserve every slot up front,
    /// megabytes per plugin instance at the default size.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Cache {
            allowed: LruCache::unbounded(),
            denied: LruCache::unbounded(),
            capacity,
            denied_capacity: (capacity / NEGATIVE_SHARE).max(1),
        }
    }

    fn lru_for(&mut self, key: &CacheKey) -> Option<&mut LruCache<CacheKey, Entry>> {
        if self.allowed.contains(key) {
            Some(&mut self.allowed)
        } else if self.denied.contains(key) {
            Some(&mut self.denied)
        } else {
            None
        }
    }

    /// The fresh entry for `key` at `now`, if any. Expired entries stay until
    /// their stale window ends, for [`Cache::get_stale`].
    pub fn get_fresh(&mut self, key: &CacheKey, now: f64) -> Option<&Entry> {
        let lru = self.lru_for(key)?;
        let entry = lru.get(key)?;
        if entry.is_fresh(now) {
            return lru.peek(key);
        }
        if !entry.is_stale_servable(now) {
            lru.pop(key);
        }
        None
    }

    /// The entry for `key` if it is fresh or inside its stale window at `now`.
    pub fn get_stale(&mut self, key: &CacheKey, now: f64) -> Option<&Entry> {
        let lru = self.lru_for(key)?;
        let servable = lru.peek(key)?.is_stale_servable(now);
        if servable {
            lru.get(key)
        } else {
            lru.pop(key);
            None
        }
    }

    /// Stores `entry` unless it is already past its stale window.
    pub fn put(&mut self, key: CacheKey, entry: Entry, now: f64) {
        if !entry.is_stale_servable(now) {
            return;
        }
        // A credential may change sides (revoked, or fixed): one entry per key.
        self.remove(&key);
        let deny = matches!(entry.verdict, Verdict::Deny(_));
        // Denials over their share evict the oldest denial; otherwise a full
        // cache evicts the oldest account (a denial if there is none).
        let deny_full = deny && self.denied.len() >= self.denied_capacity;
        let full = self.len() >= self.capacity;
        if deny_full || (full && self.allowed.pop_lru().is_none()) {
            self.denied.pop_lru();
        }
        if deny {
            self.denied.put(key, entry);
        } else {
            self.allowed.put(key, entry);
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &CacheKey) {
        if self.allowed.pop(key).is_none() {
            self.denied.pop(key);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.allowed.clear();
        self.denied.clear();
    }

    /// Number of entries held (fresh or stale).
    pub fn len(&self) -> usize {
        self.allowed.len() + self.denied.len()
    }

    /// Number of denials held (fresh or stale).
    pub fn denied_len(&self) -> usize {
        self.denied.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deny() -> Verdict {
        Verdict::Deny(Arc::new(Denial {
            status: 401,
            www_authenticate: None,
        }))
    }

    fn allow(id: &str) -> Verdict {
        Verdict::Allow(Arc::new(Account {
            id: id.into(),
            object: serde_json::json!({ "id": id }),
            upstream_headers: Box::new([]),
            response_headers: Box::new([]),
            dropped_headers: 0,
            consumer: None,
        }))
    }

    fn key(n: u8) -> CacheKey {
        KeyDeriver::new(b"s").derive([&[n][..]])
    }

    #[test]
    fn keys_depend_on_secret_and_part_boundaries() {
        let a = KeyDeriver::new(b"node-a");
        let b = KeyDeriver::new(b"node-b");
        let parts: [&[u8]; 2] = [b"ab", b"c"];
        assert_ne!(a.derive(parts), b.derive(parts));
        assert_ne!(a.derive(parts), a.derive([&b"a"[..], &b"bc"[..]]));
        assert_eq!(a.derive(parts), a.derive(parts));
        let k = a.derive(parts);
        assert_eq!(k.hex().len(), 32);
        assert_eq!(CacheKey::from_hex(k.hex().as_bytes()), Some(k));
        assert_eq!(CacheKey::from_hex(b"zz"), None);
        // one deriver per config: same values, other scope, other key
        assert_ne!(a.scoped(b"x").derive(parts), a.scoped(b"y").derive(parts));
        assert_ne!(a.scoped(b"x").derive(parts), a.derive(parts));
    }

    #[test]
    fn keys_are_siphash_of_the_framed_parts() {
        // The framing is part of the L2 key format: pinned here.
        let d = KeyDeriver::new(b"node").scoped(b"scope");
        let mut framed = Vec::new();
        for p in [&b"\x01"[..], b"Bearer a"] {
            framed.extend_from_slice(&(p.len() as u64).to_le_bytes());
            framed.extend_from_slice(p);
        }
        let mut h = d.hasher();
        Hasher::write(&mut h, &framed);
        assert_eq!(
            d.derive([&b"\x01"[..], b"Bearer a"]),
            CacheKey(h.finish128().as_bytes())
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(
            format!("{:?}", KeyDeriver::new(b"secret")),
            "KeyDeriver(..)"
        );
    }

    #[test]
    fn entry_is_fresh_then_stale_then_gone() {
        let mut c = Cache::new(10);
        c.put(key(1), Entry::new(deny(), 100.0, 10.0, 5.0), 100.0);
        assert!(c.get_fresh(&key(1), 109.9).is_some());
        assert!(c.get_fresh(&key(1), 110.0).is_none());
        assert!(c.get_stale(&key(1), 114.9).is_some());
        assert!(c.get_stale(&key(1), 115.0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn zero_ttl_entries_are_never_fresh() {
        let mut c = Cache::new(10);
        c.put(key(1), Entry::new(deny(), 100.0, 0.0, 0.0), 100.0);
        assert!(c.get_fresh(&key(1), 100.0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn least_recently_used_entry_is_evicted_first() {
        let mut c = Cache::new(2);
        c.put(key(1), Entry::new(allow("a"), 0.0, 60.0, 0.0), 0.0);
        c.put(key(2), Entry::new(allow("b"), 0.0, 60.0, 0.0), 0.0);
        assert!(c.get_fresh(&key(1), 1.0).is_some()); // 1 is now most recent
        c.put(key(3), Entry::new(allow("c"), 0.0, 60.0, 0.0), 0.0);
        assert!(c.get_fresh(&key(2), 1.0).is_none());
        assert!(c.get_fresh(&key(1), 1.0).is_some());
        assert!(c.get_fresh(&key(3), 1.0).is_some());
    }

    #[test]
    fn a_flood_of_denials_never_evicts_more_than_their_share_of_accounts() {
        let mut c = Cache::new(20); // denials: at most 2
        for i in 0..20 {
            c.put(key(i), Entry::new(allow("a"), 0.0, 60.0, 0.0), 0.0);
        }
        for i in 100..200 {
            c.put(key(i), Entry::new(deny(), 0.0, 60.0, 0.0), 0.0);
        }
        assert_eq!((c.len(), c.denied_len()), (20, 2));
        let kept = (0..20)
            .filter(|&i| c.get_fresh(&key(i), 1.0).is_some())
            .count();
        assert_eq!(kept, 18);
        // The newest denials are the ones kept.
        assert!(c.get_fresh(&key(199), 1.0).is_some());
        assert!(c.get_fresh(&key(100), 1.0).is_none());
    }

    #[test]
    fn a_credential_that_changes_verdict_has_one_entry() {
        let mut c = Cache::new(10);
        c.put(key(1), Entry::new(allow("a"), 0.0, 60.0, 0.0), 0.0);
        c.put(key(1), Entry::new(deny(), 0.0, 60.0, 0.0), 0.0);
        assert_eq!((c.len(), c.denied_len()), (1, 1));
        assert!(matches!(
            c.get_fresh(&key(1), 1.0).map(|e| &e.verdict),
            Some(Verdict::Deny(_))
        ));
        c.put(key(1), Entry::new(allow("a"), 0.0, 60.0, 0.0), 0.0);
        assert_eq!((c.len(), c.denied_len()), (1, 0));
    }

    proptest! {
        // Fresh, stale and gone partition time exactly as the TTLs say, for any
        // TTLs and any lookup time, and the cache never exceeds its capacity.
        #[test]
        fn lookups_follow_ttl_and_stale_windows(
            ttl in 0.0f64..1000.0, stale in 0.0f64..1000.0, dt in 0.0f64..3000.0,
            cap in 1usize..8, n in 0u8..32,
        ) {
            let mut c = Cache::new(cap);
            for i in 0..n {
                let verdict = if i % 3 == 0 { deny() } else { allow("a") };
                c.put(key(i), Entry::new(verdict, 0.0, ttl, stale), 0.0);
                prop_assert!(c.len() <= cap);
                prop_assert!(c.denied_len() <= (cap / NEGATIVE_SHARE).max(1));
            }
            c.put(key(200), Entry::new(deny(), 0.0, ttl, stale), 0.0);
            let fresh = c.get_fresh(&key(200), dt).is_some();
            prop_assert_eq!(fresh, dt < ttl);
            let servable = c.get_stale(&key(200), dt).is_some();
            prop_assert_eq!(servable, dt < ttl + stale);
        }
    }
}
