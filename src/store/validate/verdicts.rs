//! Which payloads passed the artifact check, by SHA-256: a long-running server reads the same
//! objects again and again, and the check (one more inflate of every artifact) need not run twice
//! over bytes it already passed.
//!
//! Only a digest that describes exactly the bytes checked is remembered, and only a pass (a
//! refused object is removed or refused again at its next read): for bytes in memory, the digest
//! the store computed over them ([`crate::store::Artifact`]'s `digest`); for a file, which other
//! writers of the store may change after the store's hashing pass, the digest of the bytes the
//! check itself read, when it equals the store's.
//! Bounded: two generations of at most [`GENERATION`] digests each; when the current one is full
//! it becomes the previous one and the oldest is forgotten, so a digest read at least once per
//! generation stays. About 2 MiB at the most.
//!
//! One memory per set of limits for the whole process ([`for_limits`]): the cache host builds a
//! new store for every run, and back-to-back runs read the same objects.

use crate::archive::ValidationLimits;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Distinct sets of limits that get a process-wide memory; beyond them, a store gets its own.
const SHARED_LIMIT_SETS: usize = 8;

static SHARED: Mutex<Vec<(ValidationLimits, Arc<Verdicts>)>> = Mutex::new(Vec::new());

/// The process-wide memory of passes under `limits`.
pub fn for_limits(limits: &ValidationLimits) -> Arc<Verdicts> {
    let Ok(mut shared) = SHARED.lock() else {
        return Arc::default();
    };
    if let Some((_, v)) = shared.iter().find(|(l, _)| l == limits) {
        return v.clone();
    }
    let v = Arc::new(Verdicts::default());
    if shared.len() < SHARED_LIMIT_SETS {
        shared.push((limits.clone(), v.clone()));
    }
    v
}

/// Digests per generation.
pub const GENERATION: usize = 16_384;

#[derive(Default)]
pub struct Verdicts {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

impl Generations {
    fn insert(&mut self, digest: [u8; 32]) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(digest);
    }
}

impl Verdicts {
    /// Whether bytes with this digest passed before (and keeps it among the recent ones).
    pub fn passed(&self, digest: &[u8; 32]) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        if g.current.contains(digest) {
            return true;
        }
        if g.previous.remove(digest) {
            g.insert(*digest);
            return true;
        }
        false
    }

    /// Records that bytes with this digest passed.
    pub fn remember(&self, digest: [u8; 32]) {
        if let Ok(mut g) = self.inner.lock() {
            g.insert(digest);
        }
    }

    /// How many digests are remembered (both generations).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|g| g.current.len() + g.previous.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: usize) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&(n as u64).to_le_bytes());
        out
    }

    #[test]
    fn one_memory_per_set_of_limits() {
        let a = ValidationLimits::default();
        let b = ValidationLimits {
            max_entries: 7,
            ..ValidationLimits::default()
        };
        assert!(Arc::ptr_eq(&for_limits(&a), &for_limits(&a)));
        assert!(!Arc::ptr_eq(&for_limits(&a), &for_limits(&b)));
    }

    #[test]
    fn remembers_passes_within_two_generations() {
        let v = Verdicts::default();
        assert!(!v.passed(&d(1)));
        v.remember(d(1));
        assert!(v.passed(&d(1)));
        for n in 2..=GENERATION {
            v.remember(d(n));
        }
        // d(1) is in the full current generation; one more makes it the previous one.
        v.remember(d(GENERATION + 1));
        assert!(v.passed(&d(2)), "the previous generation still answers");
        // d(2) moved into the current one; the rest of the previous generation goes at the next turn.
        for n in GENERATION + 2..=2 * GENERATION {
            v.remember(d(n));
        }
        assert!(v.passed(&d(2)), "a digest read in this generation stays");
        assert!(
            !v.passed(&d(3)),
            "a digest not read for two generations is forgotten"
        );
        assert!(v.len() <= 2 * GENERATION);
    }
}
