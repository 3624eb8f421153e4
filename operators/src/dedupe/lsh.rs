//! Near-duplicate candidates by locality-sensitive hashing of embeddings
//! (random hyperplanes, Charikar's SimHash), so a lookup never scans all ideas.
//!
//! Each of `bands` bands hashes a vector to `bits` sign bits of its projections
//! on random hyperplanes; two vectors at angle θ agree on one bit with
//! probability 1 − θ/π, so they share a band's bucket with probability
//! (1 − θ/π)^bits and are candidates with probability 1 − (1 − (1 − θ/π)^bits)^bands.
//! With the defaults (40 bands × 16 bits): cosine 0.95 → 0.9997, 0.90 → 0.97,
//! 0.85 → 0.84, 0.80 → 0.64, 0.59 → 0.13 (then rejected by the exact cosine
//! check), 0.3 → 0.010, 0.2 → 0.004. So the expected candidates per lookup are
//! ~1% of the live ideas at the similarity of unrelated texts, and the cost of a
//! lookup is the bucket reads plus that many 384-d dot products.
//! Computing the signatures (640 projections) is the heavy part and is done
//! before the idea state, in parallel on every worker.
//! Candidates are always confirmed with the exact cosine, so LSH only decides
//! what is compared, never what is merged.
//!
//! The hyperplanes come from a fixed seed: the same vector gets the same
//! buckets in every process and on every worker.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::embed::dot_lanes;
use crate::EMBEDDING_DIM;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LshParams {
    pub bands: usize,
    pub bits: usize,
    pub seed: u64,
}

impl Default for LshParams {
    fn default() -> Self {
        LshParams {
            bands: 40,
            bits: 16,
            seed: 0x1dea_f10e,
        }
    }
}

/// Buckets of slots keyed by (band, signature).
pub struct LshIndex {
    params: LshParams,
    /// bands·bits hyperplanes, row-major, EMBEDDING_DIM each.
    planes: Vec<f32>,
    buckets: Buckets,
}

/// The most (band, signature) keys a [`Buckets::Direct`] table holds: 2^22,
/// ~100 MB of bucket headers. The defaults (40 bands of 16 bits) have 2.6M.
const DIRECT_KEYS_MAX: usize = 1 << 22;

/// Buckets of ids by (band, signature).
enum Buckets {
    /// A table indexed by `band << bits | signature`, for narrow signatures,
    /// sized at the first insert (an index that only computes signatures
    /// never pays for it): 24 bytes per possible key, used or not (63 MB at
    /// the defaults), but no
    /// hashing, and no rehash holding two tables at once as the index grows
    /// (a hashed map over a million live vectors is ~140 MB, and its last
    /// growth briefly needs ~210 MB).
    Direct {
        bits: usize,
        keys: usize,
        table: Vec<Vec<u32>>,
    },
    /// Keyed by `band << 32 | signature`; a fixed-seed hasher (the map's
    /// order is never observed, but nothing here should vary by process).
    Hashed(HashMap<u64, Vec<u32>, FixedState>),
}

impl Buckets {
    fn new(bands: usize, bits: usize) -> Self {
        match bands.checked_mul(1usize << bits) {
            Some(keys) if bits <= 16 && keys <= DIRECT_KEYS_MAX => Buckets::Direct {
                bits,
                keys,
                table: Vec::new(),
            },
            _ => Buckets::Hashed(HashMap::with_hasher(FixedState::with_seed(0x1dea))),
        }
    }

    fn get(&self, band: usize, sig: u32) -> &[u32] {
        match self {
            Buckets::Direct { bits, table, .. } => table
                .get(direct_index(*bits, band, sig))
                .map_or(&[], Vec::as_slice),
            Buckets::Hashed(map) => map.get(&hashed_key(band, sig)).map_or(&[], Vec::as_slice),
        }
    }

    fn push(&mut self, band: usize, sig: u32, id: u32) {
        match self {
            Buckets::Direct { bits, keys, table } => {
                if table.is_empty() {
                    table.resize_with(*keys, Vec::new);
                }
                if let Some(bucket) = table.get_mut(direct_index(*bits, band, sig)) {
                    bucket.push(id);
                }
            }
            Buckets::Hashed(map) => map.entry(hashed_key(band, sig)).or_default().push(id),
        }
    }

    /// Takes `id` out of a bucket; an emptied bucket gives its memory back.
    fn remove(&mut self, band: usize, sig: u32, id: u32) {
        let take = |bucket: &mut Vec<u32>| {
            if let Some(i) = bucket.iter().position(|s| *s == id) {
                bucket.swap_remove(i);
            }
            bucket.is_empty()
        };
        match self {
            Buckets::Direct { bits, table, .. } => {
                if let Some(bucket) = table.get_mut(direct_index(*bits, band, sig)) {
                    if take(bucket) {
                        *bucket = Vec::new();
                    }
                }
            }
            Buckets::Hashed(map) => {
                let key = hashed_key(band, sig);
                if map.get_mut(&key).is_some_and(take) {
                    map.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        match self {
            Buckets::Direct { table, .. } => table.iter().all(|b| b.capacity() == 0),
            Buckets::Hashed(map) => map.is_empty(),
        }
    }
}

fn direct_index(bits: usize, band: usize, sig: u32) -> usize {
    (band << bits) | sig as usize
}

fn hashed_key(band: usize, sig: u32) -> u64 {
    ((band as u64) << 32) | u64::from(sig)
}

impl LshIndex {
    pub fn new(params: LshParams) -> Self {
        let bits = params.bits.clamp(1, 32);
        let bands = params.bands.clamp(1, u16::MAX as usize);
        let params = LshParams {
            bands,
            bits,
            ..params
        };
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        // Normal components (Box–Muller) make the hyperplanes' normals uniform on
        // the sphere, which the angle law above needs.
        let n = bands * bits * EMBEDDING_DIM;
        let mut planes = Vec::with_capacity(n);
        while planes.len() < n {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            planes.push((r * t.cos()) as f32);
            planes.push((r * t.sin()) as f32);
        }
        planes.truncate(n);
        LshIndex {
            params,
            planes,
            buckets: Buckets::new(bands, bits),
        }
    }

    pub fn params(&self) -> LshParams {
        self.params
    }

    /// One signature per band.
    pub fn signatures(&self, v: &[f32]) -> Vec<u32> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { self.signatures_avx2(v) };
            }
        }
        self.signatures_portable(v)
    }

    /// AVX2 intrinsics, four planes per pass: four independent chains of
    /// additions instead of one (a single chain waits on the adder's
    /// latency), and each load of `v` serves four planes; the compiler does
    /// not vectorize the interleaved chains on its own. Multiplies and
    /// adds stay separate (no FMA) and lanes are summed in order, as in
    /// [`dot_lanes`], so the signatures are bit-identical to the portable ones.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn signatures_avx2(&self, v: &[f32]) -> Vec<u32> {
        use std::arch::x86_64::*;
        assert_eq!(v.len(), EMBEDDING_DIM);
        let bits = self.params.bits;
        let lane_sum = |acc: __m256| {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            lanes.iter().sum::<f32>() + 0.0
        };
        let mut out = Vec::with_capacity(self.params.bands);
        for band in self.planes.chunks_exact(bits * EMBEDDING_DIM) {
            let mut sig = 0u32;
            let mut planes = band.chunks_exact(4 * EMBEDDING_DIM);
            let mut b = 0;
            for four in planes.by_ref() {
                let (p, x) = (four.as_ptr(), v.as_ptr());
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in (0..EMBEDDING_DIM).step_by(8) {
                    // SAFETY: c + 8 ≤ EMBEDDING_DIM, and `four` holds four
                    // planes of EMBEDDING_DIM floats each.
                    unsafe {
                        let xv = _mm256_loadu_ps(x.add(c));
                        for (k, a) in acc.iter_mut().enumerate() {
                            let pv = _mm256_loadu_ps(p.add(k * EMBEDDING_DIM + c));
                            *a = _mm256_add_ps(*a, _mm256_mul_ps(xv, pv));
                        }
                    }
                }
                for a in acc {
                    if lane_sum(a) >= 0.0 {
                        sig |= 1 << b;
                    }
                    b += 1;
                }
            }
            for plane in planes.remainder().chunks_exact(EMBEDDING_DIM) {
                if dot_lanes(plane, v) >= 0.0 {
                    sig |= 1 << b;
                }
                b += 1;
            }
            out.push(sig);
        }
        out
    }

    /// One [`dot_lanes`] per plane: the reference the AVX2 path matches bit
    /// for bit, and the path of CPUs without AVX2.
    #[inline(always)]
    fn signatures_portable(&self, v: &[f32]) -> Vec<u32> {
        let bits = self.params.bits;
        let mut out = Vec::with_capacity(self.params.bands);
        for band in self.planes.chunks_exact(bits * EMBEDDING_DIM) {
            let mut sig = 0u32;
            for (b, plane) in band.chunks_exact(EMBEDDING_DIM).enumerate() {
                if dot_lanes(plane, v) >= 0.0 {
                    sig |= 1 << b;
                }
            }
            out.push(sig);
        }
        out
    }

    /// The ids in one band's bucket.
    pub fn bucket(&self, band: usize, sig: u32) -> &[u32] {
        self.buckets.get(band, sig)
    }

    pub fn insert(&mut self, slot: u32, signatures: &[u32]) {
        for (band, sig) in signatures.iter().enumerate() {
            self.buckets.push(band, *sig, slot);
        }
    }

    pub fn remove(&mut self, slot: u32, signatures: &[u32]) {
        for (band, sig) in signatures.iter().enumerate() {
            self.buckets.remove(band, *sig, slot);
        }
    }

    /// Slots sharing at least one band with `signatures`, sorted and distinct.
    pub fn candidates(&self, signatures: &[u32]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for (band, sig) in signatures.iter().enumerate() {
            out.extend_from_slice(self.bucket(band, *sig));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Hamming distance between two vectors' signatures: all bands × bits
    /// sign bits, each differing with probability θ/π.
    pub fn hamming(a: &[u32], b: &[u32]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    /// The largest Hamming distance a pair at cosine `threshold` shows with
    /// overwhelming probability (mean + 4.5 standard deviations): candidates
    /// farther apart are rejected without computing their cosine. At 0.88
    /// with the defaults: 137 of 640 bits (118 of the first 511, which the
    /// near-duplicate index reads), while unrelated texts (cosine ~0.5)
    /// sit near 213 (171); a true pair at 0.88 is wrongly rejected with probability
    /// ~3e-6.
    pub fn max_hamming(&self, threshold: f32) -> u32 {
        self.max_hamming_over(self.params.bands * self.params.bits, threshold)
    }

    /// [`LshIndex::max_hamming`] for a test that reads only `bits` of the
    /// sign bits (each still differing with probability θ/π).
    pub fn max_hamming_over(&self, bits: usize, threshold: f32) -> u32 {
        let total = bits as f64;
        let p = (threshold as f64).clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
        (total * p + 4.5 * (total * p * (1.0 - p)).sqrt()).ceil() as u32
    }

    /// Probability that two vectors at cosine `c` become candidates.
    pub fn candidate_probability(&self, c: f64) -> f64 {
        let agree = 1.0 - c.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
        1.0 - (1.0 - agree.powi(self.params.bits as i32)).powi(self.params.bands as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::{cosine, l2_normalize};

    fn random_unit(rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut v: Vec<f32> = (0..EMBEDDING_DIM)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        l2_normalize(&mut v);
        v
    }

    /// A unit vector at cosine ≈ `c` to `v`.
    fn at_cosine(v: &[f32], c: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut noise = random_unit(rng);
        let d: f32 = noise.iter().zip(v).map(|(a, b)| a * b).sum();
        noise.iter_mut().zip(v).for_each(|(n, x)| *n -= d * x);
        l2_normalize(&mut noise);
        let s = (1.0 - c * c).sqrt();
        v.iter().zip(&noise).map(|(x, n)| c * x + s * n).collect()
    }

    #[test]
    fn close_vectors_collide_and_far_ones_rarely() {
        let lsh = LshIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut hit = |c: f32| {
            let mut n = 0;
            for _ in 0..300 {
                let a = random_unit(&mut rng);
                let b = at_cosine(&a, c, &mut rng);
                assert!((cosine(&a, &b) - c).abs() < 1e-3);
                let (sa, sb) = (lsh.signatures(&a), lsh.signatures(&b));
                if sa.iter().zip(&sb).any(|(x, y)| x == y) {
                    n += 1;
                }
            }
            n as f64 / 300.0
        };
        let near = hit(0.95);
        let far = hit(0.2);
        assert!(near > 0.97, "near {near}");
        assert!(far < 0.05, "far {far}");
        assert!((lsh.candidate_probability(0.95) - near).abs() < 0.05);
    }

    #[test]
    fn simd_and_portable_signatures_agree() {
        let lsh = LshIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let v = random_unit(&mut rng);
            assert_eq!(lsh.signatures(&v), lsh.signatures_portable(&v));
        }
    }

    #[test]
    fn blocked_signatures_equal_one_dot_per_plane() {
        let lsh = LshIndex::new(LshParams {
            bands: 5,
            bits: 7, // not a multiple of four: the remainder path too
            ..LshParams::default()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..50 {
            let v = random_unit(&mut rng);
            let reference: Vec<u32> = lsh
                .planes
                .chunks_exact(7 * EMBEDDING_DIM)
                .map(|band| {
                    band.chunks_exact(EMBEDDING_DIM)
                        .enumerate()
                        .fold(0, |sig, (b, p)| {
                            sig | (u32::from(dot_lanes(p, &v) >= 0.0) << b)
                        })
                })
                .collect();
            assert_eq!(lsh.signatures(&v), reference);
        }
    }

    #[test]
    fn hamming_prefilter_keeps_close_pairs() {
        let lsh = LshIndex::new(LshParams::default());
        let max = lsh.max_hamming(0.88);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..300 {
            let a = random_unit(&mut rng);
            let close = at_cosine(&a, 0.88, &mut rng);
            let far = at_cosine(&a, 0.5, &mut rng);
            let (sa, sc, sf) = (
                lsh.signatures(&a),
                lsh.signatures(&close),
                lsh.signatures(&far),
            );
            assert!(LshIndex::hamming(&sa, &sc) <= max);
            assert!(LshIndex::hamming(&sa, &sf) > max);
        }
    }

    /// The near-duplicate index tests the first 511 bits only, with the
    /// limit set for them: still every close pair in, every far one out.
    #[test]
    fn hamming_prefilter_on_the_first_bits_keeps_close_pairs() {
        let lsh = LshIndex::new(LshParams::default());
        let tested = crate::dedupe::near::TESTED_BITS;
        let max = lsh.max_hamming_over(tested, 0.88);
        assert!(max < lsh.max_hamming(0.88));
        let first = |v: &[f32]| {
            let mut packed = vec![0u64; 10];
            crate::dedupe::near::pack(&lsh.signatures(v), 16, &mut packed);
            packed.truncate(tested.div_ceil(64));
            packed[tested / 64] &= (1u64 << (tested % 64)) - 1;
            packed
        };
        let differing = |a: &[u64], b: &[u64]| -> u32 {
            a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for _ in 0..300 {
            let a = random_unit(&mut rng);
            let (fa, fc, ff) = (
                first(&a),
                first(&at_cosine(&a, 0.88, &mut rng)),
                first(&at_cosine(&a, 0.5, &mut rng)),
            );
            assert!(differing(&fa, &fc) <= max);
            assert!(differing(&fa, &ff) > max);
        }
    }

    #[test]
    fn insert_remove_and_candidates() {
        // The defaults index a table; wide signatures hash.
        for params in [
            LshParams::default(),
            LshParams {
                bands: 8,
                bits: 20,
                ..LshParams::default()
            },
        ] {
            insert_remove_and_candidates_with(params);
        }
    }

    fn insert_remove_and_candidates_with(params: LshParams) {
        let mut lsh = LshIndex::new(params);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = random_unit(&mut rng);
        let sa = lsh.signatures(&a);
        lsh.insert(3, &sa);
        lsh.insert(9, &sa);
        assert_eq!(lsh.candidates(&sa), vec![3, 9]);
        lsh.remove(3, &sa);
        assert_eq!(lsh.candidates(&sa), vec![9]);
        lsh.remove(9, &sa);
        assert!(lsh.candidates(&sa).is_empty());
        assert!(lsh.buckets.is_empty());
    }
}
