//! L1 (per-worker LRU) lookup time at 1k, 100k and 1M entries: a hit should
//! cost about the same however many credentials a worker holds.
//!
//! Run: cargo bench --no-default-features --bench cache
//!
//! Each size fills a `Cache` with that many entries (an account with an id and
//! 5 short fields, 2 upstream + 1 response header: benches/support/l1.rs),
//! then looks up keys in a fixed pseudo-random order over the whole cache,
//! as `Plugin::lookup` does on a hit: `get_fresh` (which also moves the entry
//! to the front of the LRU) and a clone of the verdict's `Arc`. Random order
//! matters: at 1M entries most lookups miss the CPU caches, as they would with
//! that many active credentials; at 1k everything stays cached. Key
//! derivation (BLAKE3 of the credential) is not included: it does not depend
//! on the cache size. Every timed lookup asserts it found an allowed entry.

use auth_router_native::auth::key::CacheKey;
use auth_router_native::auth::verdict::Verdict;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

#[path = "support/l1.rs"]
mod l1;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const ORDER_LEN: usize = 1 << 16;

/// A fixed pseudo-random sequence of ORDER_LEN keys drawn from `keys`.
fn order(keys: &[CacheKey]) -> Vec<CacheKey> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..ORDER_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            keys[usize::try_from(x % keys.len() as u64).unwrap_or(0)]
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let now = 1_000_000.0;
    let mut group = c.benchmark_group("l1_lookup");
    for n in SIZES {
        let (mut cache, keys) = l1::filled(n, now);
        assert_eq!(cache.len(), n);
        let order = order(&keys);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("hit", n), |b| {
            b.iter(|| {
                i = (i + 1) & (ORDER_LEN - 1);
                let verdict = cache
                    .get_fresh(black_box(&order[i]), now)
                    .map(|e| e.verdict.clone());
                assert!(matches!(verdict, Some(Verdict::Allow(_))));
                verdict
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
