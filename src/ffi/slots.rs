//! Slots: the per-worker table of live requests' native state, addressed
//! from Lua by a handle (index + generation) instead of a userdata.
//!
//! A handle is a Lua number: `generation * 2^20 + index`, exact in a double.
//! A slot is released in the log phase; its generation is bumped then, so a
//! handle that outlives its request (kept by mistake, or a request whose log
//! phase never ran) is rejected, never dereferenced. The table is bounded:
//! when it is full, slots older than [`RECLAIM_AFTER_S`] are reclaimed
//! (counted), since a request whose log phase did not run (an internal
//! redirect to a location without the log handler) can leave one behind.

use crate::auth::flow::Plugin;
use crate::exchange::Exchange;
use crate::stats;
use std::cell::RefCell;
use std::rc::Rc;

/// Live requests one worker may hold at once.
pub const CAPACITY: usize = 1 << 16;
/// A full table reclaims slots at least this old.
pub const RECLAIM_AFTER_S: f64 = 600.0;

const INDEX_BITS: u32 = 20;
const INDEX_SPAN: f64 = (1u64 << INDEX_BITS) as f64;

/// One live request: the config it runs under and its exchange.
#[derive(Debug)]
pub struct Live {
    /// The compiled config (kept alive as long as the request).
    pub plugin: Rc<Plugin>,
    /// The request's native state.
    pub ex: Exchange,
    /// The pending key in hex, as [`ar_pending_key`](super::shared::ar_pending_key)
    /// hands it out (the slot owns what Lua points to).
    pub key_hex: [u8; 32],
    started: f64,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    live: Option<Live>,
}

/// The table. One per worker thread (see [`with`]).
#[derive(Debug, Default)]
pub struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

/// Why a slot could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// No free slot, none old enough to reclaim.
    Full,
    /// The handle names no live request (released, reclaimed, or invented).
    Stale,
}

fn encode(index: u32, generation: u32) -> f64 {
    f64::from(generation) * INDEX_SPAN + f64::from(index)
}

fn decode(handle: f64) -> Option<(u32, u32)> {
    if !(handle >= 0.0 && handle < f64::from(u32::MAX) * INDEX_SPAN + INDEX_SPAN) {
        return None;
    }
    if handle.fract() != 0.0 {
        return None;
    }
    let h = handle as u64;
    Some((
        (h & ((1 << INDEX_BITS) - 1)) as u32,
        (h >> INDEX_BITS) as u32,
    ))
}

impl Slots {
    /// Stores a new live request; answers its handle.
    pub fn insert(&mut self, plugin: Rc<Plugin>, ex: Exchange, now: f64) -> Result<f64, SlotError> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < CAPACITY => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
            None => self.reclaim(now)?,
        };
        let slot = &mut self.slots[index as usize];
        slot.live = Some(Live {
            plugin,
            ex,
            key_hex: [0; 32],
            started: now,
        });
        self.live += 1;
        stats::LIVE_SLOTS.add(1);
        Ok(encode(index, slot.generation))
    }

    /// Frees every slot older than [`RECLAIM_AFTER_S`]; answers one of them.
    fn reclaim(&mut self, now: f64) -> Result<u32, SlotError> {
        for i in 0..self.slots.len() {
            let old = matches!(&self.slots[i].live, Some(l) if now - l.started >= RECLAIM_AFTER_S);
            if old {
                self.free_index(i);
                stats::SLOTS_RECLAIMED.incr();
            }
        }
        self.free.pop().ok_or(SlotError::Full)
    }

    fn free_index(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.live.take().is_some() {
            slot.generation = slot.generation.wrapping_add(1);
            self.live -= 1;
            stats::LIVE_SLOTS.sub(1);
            self.free.push(index as u32);
        }
    }

    /// The live request a handle names.
    pub fn get(&mut self, handle: f64) -> Result<&mut Live, SlotError> {
        let (index, generation) = decode(handle).ok_or(SlotError::Stale)?;
        match self.slots.get_mut(index as usize) {
            Some(Slot {
                generation: g,
                live: Some(live),
            }) if *g == generation => Ok(live),
            _ => Err(SlotError::Stale),
        }
    }

    /// Ends a live request: `last` sees it, then it is dropped where it
    /// lies (never moved out). A stale handle is an error, never a double
    /// free.
    pub fn release<T>(
        &mut self,
        handle: f64,
        last: impl FnOnce(&mut Live) -> T,
    ) -> Result<T, SlotError> {
        let (index, generation) = decode(handle).ok_or(SlotError::Stale)?;
        let slot = self
            .slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation)
            .ok_or(SlotError::Stale)?;
        let out = last(slot.live.as_mut().ok_or(SlotError::Stale)?);
        slot.live = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.live -= 1;
        stats::LIVE_SLOTS.sub(1);
        self.free.push(index);
        Ok(out)
    }

    /// Live requests in the table.
    pub fn live(&self) -> usize {
        self.live
    }
}

thread_local! {
    static SLOTS: RefCell<Slots> = RefCell::new(Slots::default());
}

/// Runs `f` on this worker's table. Not reentrant: `f` must not call back
/// into Lua (nothing on the request path does).
pub fn with<T>(f: impl FnOnce(&mut Slots) -> T) -> T {
    SLOTS.with(|s| f(&mut s.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;
    use serde_json::json;

    fn plugin() -> Rc<Plugin> {
        let c = compile(json!({"auth": {"url": "http://127.0.0.1:9/auth"}})).expect("valid");
        Rc::new(Plugin::new(c, b"0123456789abcdef"))
    }

    fn ex() -> Exchange {
        Exchange::begin(b"GET", Some(b"/"), 0)
    }

    #[test]
    fn handles_round_trip_and_stale_ones_are_rejected() {
        let mut s = Slots::default();
        let p = plugin();
        let a = s.insert(p.clone(), ex(), 0.0).expect("slot");
        let b = s.insert(p.clone(), ex(), 0.0).expect("slot");
        assert_ne!(a, b);
        assert_eq!(s.live(), 2);
        assert!(s.get(a).is_ok());
        assert!(s.release(a, |_| ()).is_ok());
        assert_eq!(s.get(a).err(), Some(SlotError::Stale));
        assert_eq!(
            s.release(a, |_| ()).err(),
            Some(SlotError::Stale),
            "no double free"
        );
        // the freed index is reused under a new generation: the old handle stays stale
        let c = s.insert(p, ex(), 0.0).expect("slot");
        assert_ne!(a, c);
        assert_eq!(s.get(a).err(), Some(SlotError::Stale));
        assert!(s.get(c).is_ok());
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(s.get(bad).err(), Some(SlotError::Stale), "{bad}");
        }
        assert_eq!(s.live(), 2);
    }

    #[test]
    fn a_full_table_reclaims_only_old_slots() {
        let mut s = Slots::default();
        let p = plugin();
        let first = s.insert(p.clone(), ex(), 0.0).expect("slot");
        for _ in 1..CAPACITY {
            s.insert(p.clone(), ex(), 100.0).expect("slot");
        }
        assert_eq!(s.live(), CAPACITY);
        assert_eq!(
            s.insert(p.clone(), ex(), 200.0).err(),
            Some(SlotError::Full)
        );
        let h = s
            .insert(p, ex(), RECLAIM_AFTER_S)
            .expect("the oldest is reclaimed");
        assert_eq!(s.get(first).err(), Some(SlotError::Stale));
        assert!(s.get(h).is_ok());
        assert_eq!(s.live(), CAPACITY);
    }
}
