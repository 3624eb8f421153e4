//! A Bloom filter that forgets: entries live in generations, one per
//! `retention / (generations − 1)` of event time; when a new generation starts
//! the oldest is dropped. Memory stays bounded on an unbounded stream, and an
//! entry is remembered for at least the retention window.
//!
//! Sizing, per generation, for n expected entries and false-positive rate p:
//! m = −n·ln p / (ln 2)² bits and k = (m / n)·ln 2 hash functions. A lookup
//! checks every live generation, so the filter's false-positive rate is about
//! g·p for g generations. Example: 1M signals/day, 7-day retention, 8
//! generations, p = 0.001 → n ≈ 1M per generation, 1.8 MB each, 14.4 MB in all.

/// Bits and hash count for n entries at false-positive rate p.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BloomSizing {
    pub bits: usize,
    pub hashes: u32,
}

impl BloomSizing {
    pub fn for_capacity(n: usize, p: f64) -> Self {
        let n = n.max(1) as f64;
        let p = p.clamp(1e-12, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = (-n * p.ln() / (ln2 * ln2)).ceil().max(64.0) as usize;
        let hashes = ((bits as f64 / n) * ln2).round().clamp(1.0, 30.0) as u32;
        BloomSizing { bits, hashes }
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Generation {
    start: i64,
    bits: Vec<u64>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct RotatingBloom {
    sizing: BloomSizing,
    generations: Vec<Generation>,
    max_generations: usize,
    span_secs: i64,
}

impl RotatingBloom {
    /// `retention_secs`: how long an entry must be remembered; `generations` ≥ 2.
    pub fn new(
        capacity_per_generation: usize,
        fp_rate: f64,
        retention_secs: i64,
        generations: usize,
    ) -> Self {
        let g = generations.max(2);
        RotatingBloom {
            sizing: BloomSizing::for_capacity(capacity_per_generation, fp_rate),
            generations: Vec::new(),
            max_generations: g,
            span_secs: (retention_secs.max(1) as f64 / (g - 1) as f64).ceil() as i64,
        }
    }

    pub fn sizing(&self) -> BloomSizing {
        self.sizing
    }

    /// Bytes held now.
    pub fn memory_bytes(&self) -> usize {
        self.generations.len() * self.sizing.bits.div_ceil(64) * 8
    }

    fn positions(&self, key: &[u8; 16]) -> impl Iterator<Item = usize> + '_ {
        // Kirsch–Mitzenmacher double hashing from the (already uniform) content hash.
        let h1 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let h2 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes")) | 1;
        let m = self.sizing.bits as u64;
        (0..self.sizing.hashes as u64)
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    fn advance(&mut self, now_secs: i64) {
        let start = now_secs.div_euclid(self.span_secs) * self.span_secs;
        if self.generations.last().is_none_or(|g| g.start < start) {
            self.generations.push(Generation {
                start,
                bits: vec![0; self.sizing.bits.div_ceil(64)],
            });
            if self.generations.len() > self.max_generations {
                self.generations.remove(0);
            }
        }
    }

    /// Whether `key` may be in any live generation (no insert, no rotation).
    pub fn contains(&self, key: &[u8; 16]) -> bool {
        let positions: Vec<usize> = self.positions(key).collect();
        self.generations.iter().any(|g| {
            positions
                .iter()
                .all(|&p| g.bits[p / 64] & (1 << (p % 64)) != 0)
        })
    }

    /// Whether `key` may have been seen (false positives possible, false negatives
    /// never within the retention), then records it at event time `now_secs`.
    pub fn check_and_insert(&mut self, key: &[u8; 16], now_secs: i64) -> bool {
        self.advance(now_secs);
        let seen = self.contains(key);
        let positions: Vec<usize> = self.positions(key).collect();
        let current = self.generations.last_mut().expect("advance made one");
        for p in positions {
            current.bits[p / 64] |= 1 << (p % 64);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content_hash::content_hash_bytes;

    #[test]
    fn sizing_follows_the_formula() {
        let s = BloomSizing::for_capacity(1_000_000, 0.001);
        assert!((14_377_000..14_378_000).contains(&s.bits), "{s:?}");
        assert_eq!(s.hashes, 10);
    }

    #[test]
    fn remembers_within_retention_and_forgets_after() {
        let day = 86_400;
        let mut b = RotatingBloom::new(10_000, 0.001, 7 * day, 8);
        let k = content_hash_bytes("cats in hats");
        assert!(!b.check_and_insert(&k, 0));
        assert!(b.check_and_insert(&k, 6 * day));
        // Not touched again for well over the retention: forgotten.
        let other = content_hash_bytes("dogs in hats");
        for d in 7..20 {
            b.check_and_insert(&other, d * day);
        }
        assert!(!b.check_and_insert(&k, 20 * day));
        assert!(b.memory_bytes() <= 8 * b.sizing().bits.div_ceil(64) * 8);
    }

    #[test]
    fn false_positive_rate_is_near_target() {
        let mut b = RotatingBloom::new(20_000, 0.01, 1_000, 2);
        for i in 0..20_000 {
            b.check_and_insert(&content_hash_bytes(&format!("in {i}")), 0);
        }
        let fp = (0..20_000)
            .filter(|i| b.contains(&content_hash_bytes(&format!("out {i}"))))
            .count();
        assert!((fp as f64 / 20_000.0) < 0.015, "false positives {fp}");
    }
}
