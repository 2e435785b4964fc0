//! Bytes per L1 entry at 1M entries, measured with a counting global
//! allocator: everything the cache allocates (LRU node and hash slot, key,
//! `Entry`, `Arc<Account>`, the account's `serde_json::Value` tree, the id
//! copy and the rendered header pairs) minus the account's field data (the
//! bytes of its member names and string values).
//!
//! Run: cargo bench --no-default-features --bench l1_memory
//! (prints one line `L1_MEMORY entries=... bytes_per_entry=... field_bytes_per_entry=... overhead_per_entry=...`;
//! L1_MEMORY_ENTRIES overrides the count, default 1000000)
//!
//! Counted: the live heap after filling minus before, so freed temporaries
//! (the JSON text, the `json!` builders) do not count, and capacity slack in
//! vectors and hash tables does. Allocator metadata (malloc's own headers,
//! size-class rounding) is not counted: `malloc_usable_size` would add about
//! 8-16 bytes per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/l1.rs"]
mod l1;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: usize = std::env::var("L1_MEMORY_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let fields: usize = (0..n).map(|i| l1::field_bytes(&l1::account(i).1)).sum();
    let (live0, allocs0) = (LIVE.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    let (cache, keys) = l1::filled(n, 1_000_000.0);
    drop(keys); // the bench's own key list is not part of the cache
    let (live1, allocs1) = (LIVE.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    assert_eq!(cache.len(), n);
    let per = |x: usize| x as f64 / n as f64;
    let total = live1 - live0;
    println!(
        "L1_MEMORY entries={n} bytes_per_entry={:.1} field_bytes_per_entry={:.1} \
         overhead_per_entry={:.1} allocations_per_entry={:.2}",
        per(total),
        per(fields),
        per(total) - per(fields),
        per(allocs1 - allocs0),
    );
    drop(cache);
}
