//! Cache: the per-worker (L1) auth cache of verdicts, by [`CacheKey`].
//!
//! Semantics follow lua-resty-mlcache: a positive TTL, a separate negative TTL
//! for denials, and a stale window in which an expired entry may still be
//! served, but only when the auth service fails. Time is passed in (seconds,
//! fractions allowed, as `ngx.now()`), so the cache reads no clock.

use crate::auth::key::CacheKey;
use crate::auth::verdict::Verdict;
use lru::LruCache;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Hashes a [`CacheKey`] for the L1 tables by taking 8 of its bytes: keys
/// are already outputs of a keyed PRF (no one can pick them to collide
/// without the node's secret), so hashing them again with the default
/// SipHash only costs time on every lookup.
#[derive(Debug, Default)]
pub struct KeyBytesHasher(u64);

impl Hasher for KeyBytesHasher {
    fn write(&mut self, bytes: &[u8]) {
        // CacheKey's derived Hash writes its 16 bytes in one call.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Lru = LruCache<CacheKey, Entry, BuildHasherDefault<KeyBytesHasher>>;

/// The L1 cache: bounded, least-recently-used entries evicted first.
/// Denials live in their own LRU, capped at `capacity / NEGATIVE_SHARE`
/// entries (at least one) within the total `capacity`: past that cap a new
/// denial evicts the oldest denial, never an allowed account.
#[derive(Debug)]
pub struct Cache {
    allowed: Lru,
    denied: Lru,
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
            allowed: LruCache::unbounded_with_hasher(BuildHasherDefault::default()),
            denied: LruCache::unbounded_with_hasher(BuildHasherDefault::default()),
            capacity,
            denied_capacity: (capacity / NEGATIVE_SHARE).max(1),
        }
    }

    fn lru_for(&mut self, key: &CacheKey) -> Option<&mut Lru> {
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
    use crate::auth::key::KeyDeriver;
    use crate::auth::verdict::{Account, Denial};
    use proptest::prelude::*;
    use std::sync::Arc;

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
