//! Cache: the per-worker (L1) auth cache, its keys, and the compact form of an
//! entry stored in the cross-worker shared dict (L2).
//!
//! Semantics follow lua-resty-mlcache: a positive TTL, a separate negative TTL
//! for denials, and a stale window in which an expired entry may still be
//! served, but only when the auth service fails. Time is passed in (seconds,
//! fractions allowed, as `ngx.now()`), so the cache reads no clock.

use crate::auth::{Account, Denial};
use lru::LruCache;
use std::num::NonZeroUsize;
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

    /// The key for `parts` (scope, then header names and values). Each part is
    /// length-prefixed so `("ab", "c")` and `("a", "bc")` never collide.
    pub fn derive<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> CacheKey {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        CacheKey(out)
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

/// The L1 cache: bounded, least-recently-used entries evicted first.
#[derive(Debug)]
pub struct Cache {
    lru: LruCache<CacheKey, Entry>,
    capacity: NonZeroUsize,
}

impl Cache {
    /// A cache holding at most `capacity` entries (at least 1). Memory grows
    /// with use: `LruCache::new` would reserve every slot up front, megabytes
    /// per plugin instance at the default size.
    pub fn new(capacity: usize) -> Self {
        Cache {
            lru: LruCache::unbounded(),
            capacity: NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// The fresh entry for `key` at `now`, if any. Expired entries stay until
    /// their stale window ends, for [`Cache::get_stale`].
    pub fn get_fresh(&mut self, key: &CacheKey, now: f64) -> Option<&Entry> {
        let entry = self.lru.get(key)?;
        if entry.is_fresh(now) {
            return self.lru.peek(key);
        }
        if !entry.is_stale_servable(now) {
            self.lru.pop(key);
        }
        None
    }

    /// The entry for `key` if it is fresh or inside its stale window at `now`.
    pub fn get_stale(&mut self, key: &CacheKey, now: f64) -> Option<&Entry> {
        let servable = self.lru.peek(key)?.is_stale_servable(now);
        if servable {
            self.lru.get(key)
        } else {
            self.lru.pop(key);
            None
        }
    }

    /// Stores `entry` unless it is already past its stale window.
    pub fn put(&mut self, key: CacheKey, entry: Entry, now: f64) {
        if !entry.is_stale_servable(now) {
            return;
        }
        if self.lru.len() >= self.capacity.get() && !self.lru.contains(&key) {
            self.lru.pop_lru();
        }
        self.lru.put(key, entry);
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &CacheKey) {
        self.lru.pop(key);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.lru.clear();
    }

    /// Number of entries held (fresh or stale).
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
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
        c.put(key(1), Entry::new(deny(), 0.0, 60.0, 0.0), 0.0);
        c.put(key(2), Entry::new(deny(), 0.0, 60.0, 0.0), 0.0);
        assert!(c.get_fresh(&key(1), 1.0).is_some()); // 1 is now most recent
        c.put(key(3), Entry::new(deny(), 0.0, 60.0, 0.0), 0.0);
        assert!(c.get_fresh(&key(2), 1.0).is_none());
        assert!(c.get_fresh(&key(1), 1.0).is_some());
        assert!(c.get_fresh(&key(3), 1.0).is_some());
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
                c.put(key(i), Entry::new(deny(), 0.0, ttl, stale), 0.0);
                prop_assert!(c.len() <= cap);
            }
            c.put(key(200), Entry::new(deny(), 0.0, ttl, stale), 0.0);
            let fresh = c.get_fresh(&key(200), dt).is_some();
            prop_assert_eq!(fresh, dt < ttl);
            let servable = c.get_stale(&key(200), dt).is_some();
            prop_assert_eq!(servable, dt < ttl + stale);
        }
    }
}
