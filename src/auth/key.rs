//! Key: the cache key of a request (a keyed digest of what is sent to the
//! auth service), shared by L1 and the shared dict (L2).

use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;

/// A cache key: a keyed 128-bit digest of everything sent to the auth service.
/// The raw credential is never stored, logged or used as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 16]);

impl CacheKey {
    /// The key as 32 lowercase hex characters (the shared dict key).
    pub fn hex(&self) -> String {
        self.hex_bytes().iter().map(|&b| char::from(b)).collect()
    }

    /// [`CacheKey::hex`] without allocating.
    pub fn hex_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
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
    /// values that decides an answer, see `flow::scope`) is folded into
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
