//! Near-duplicate candidates by locality-sensitive hashing of embeddings
//! (random hyperplanes, Charikar's SimHash), so a lookup never scans all ideas.
//!
//! Each of `bands` bands hashes a vector to `bits` sign bits of its projections
//! on random directions; two vectors at angle θ agree on one bit with
//! probability 1 − θ/π, so they share a band's bucket with probability
//! (1 − θ/π)^bits and are candidates with probability 1 − (1 − (1 − θ/π)^bits)^bands.
//! With the defaults (40 bands × 16 bits): cosine 0.95 → 0.9997, 0.90 → 0.97,
//! 0.85 → 0.84, 0.80 → 0.64, 0.59 → 0.13 (then rejected by the exact cosine
//! check), 0.3 → 0.010, 0.2 → 0.004. So the expected candidates per lookup are
//! ~1% of the live ideas at the similarity of unrelated texts, and the cost of a
//! lookup is the bucket reads plus that many 384-d dot products.
//!
//! The directions are the rows of a structured random rotation of R^512 (the
//! vector padded with zeros): three rounds of random sign flips, each followed
//! by a Walsh–Hadamard transform (`H·D₃·H·D₂·H·D₁`, as in Andoni et al.,
//! "Practical and Optimal LSH for Angular Distance", 2015). Each rotation
//! gives 512 sign bits for ~14,000 additions, where 512 dense hyperplanes
//! cost 196,608 multiply-adds; the defaults' 640 bits take two rotations.
//! Within a rotation the directions are orthogonal, which only lowers the
//! variance of the number of agreeing bits (Ji et al., "Super-Bit LSH",
//! 2012), so the Hamming bounds below stay conservative. The transform is
//! additions and subtractions of f32 in a fixed order, so every CPU and every
//! code path gives the same bits.
//! Candidates are always confirmed with the exact cosine, so LSH only decides
//! what is compared, never what is merged.
//!
//! The sign flips come from a fixed seed: the same vector gets the same
//! buckets in every process and on every worker.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::prefetch;
use crate::EMBEDDING_DIM;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Buckets of slots keyed by (band, signature). Saved as its parameters
/// alone: the rotations follow from the parameters' seed, and the buckets
/// from the signatures their owner keeps (the near-duplicate index refills
/// them at load, [`crate::dedupe::NearIndex`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedLsh")]
pub struct LshIndex {
    params: LshParams,
    /// ⌈bands·bits / 512⌉ rotations; band `b`'s bits are outputs
    /// `b·bits .. (b+1)·bits` of the rotations one after another.
    #[serde(skip)]
    rotations: Vec<Rotation>,
    #[serde(skip)]
    buckets: Buckets,
}

#[derive(serde::Deserialize)]
struct SavedLsh {
    params: LshParams,
}

impl From<SavedLsh> for LshIndex {
    fn from(saved: SavedLsh) -> Self {
        LshIndex::new(saved.params)
    }
}

/// Coordinates a rotation works in: the embedding padded with zeros.
const ROTATED_DIM: usize = 512;
const _: () = assert!(EMBEDDING_DIM <= ROTATED_DIM && ROTATED_DIM.is_power_of_two());

/// One structured random rotation (up to scale): `H·D₃·H·D₂·H·D₁`, with `Dᵢ`
/// random ±1 diagonals and `H` the unnormalized Walsh–Hadamard transform.
struct Rotation {
    /// The three diagonals, as sign-bit masks to XOR into the floats (±1
    /// products without a multiply; exact either way).
    flips: [[u32; ROTATED_DIM]; 3],
}

impl Rotation {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let mut flips = [[0u32; ROTATED_DIM]; 3];
        for round in &mut flips {
            for flip in round.iter_mut() {
                *flip = if rng.random::<bool>() { 1 << 31 } else { 0 };
            }
        }
        Rotation { flips }
    }

    /// The rotated vector (scaled by 512^1.5).
    fn apply(&self, v: &[f32]) -> [f32; ROTATED_DIM] {
        let mut x = [0f32; ROTATED_DIM];
        x[..v.len()].copy_from_slice(v);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { self.rotate_avx2(&mut x) };
                return x;
            }
        }
        self.rotate_portable(&mut x);
        x
    }

    /// The reference: flips, then butterflies of distance 1, 2, 4, … 256.
    fn rotate_portable(&self, x: &mut [f32; ROTATED_DIM]) {
        for flips in &self.flips {
            for (xi, f) in x.iter_mut().zip(flips) {
                *xi = f32::from_bits(xi.to_bits() ^ f);
            }
            butterflies_from(1, x);
        }
    }

    /// The same additions and subtractions, eight lanes at a time: the
    /// butterflies of distance 1, 2 and 4 inside a register (with the flips,
    /// in one pass), the wider ones between registers. Each lane's sum or
    /// difference is of the same two floats as in the reference (a sum's
    /// operands may be swapped, which IEEE addition does not notice), so the
    /// result is bit-identical.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rotate_avx2(&self, x: &mut [f32; ROTATED_DIM]) {
        use std::arch::x86_64::*;
        // Lanes that take the difference `partner − self` at each distance.
        const DISTANCE_1: i32 = 0b1010_1010;
        const DISTANCE_2: i32 = 0b1100_1100;
        const DISTANCE_4: i32 = 0b1111_0000;
        for flips in &self.flips {
            for (chunk, f) in x.chunks_exact_mut(8).zip(flips.chunks_exact(8)) {
                // SAFETY: both chunks hold exactly eight 32-bit values.
                unsafe {
                    let mask = _mm256_castsi256_ps(_mm256_loadu_si256(f.as_ptr().cast()));
                    let a = _mm256_xor_ps(_mm256_loadu_ps(chunk.as_ptr()), mask);
                    let b = _mm256_permute_ps::<0b1011_0001>(a);
                    let a = _mm256_blend_ps::<DISTANCE_1>(_mm256_add_ps(a, b), _mm256_sub_ps(b, a));
                    let b = _mm256_permute_ps::<0b0100_1110>(a);
                    let a = _mm256_blend_ps::<DISTANCE_2>(_mm256_add_ps(a, b), _mm256_sub_ps(b, a));
                    let b = _mm256_permute2f128_ps::<0x01>(a, a);
                    let a = _mm256_blend_ps::<DISTANCE_4>(_mm256_add_ps(a, b), _mm256_sub_ps(b, a));
                    _mm256_storeu_ps(chunk.as_mut_ptr(), a);
                }
            }
            butterflies_from(8, x);
        }
    }
}

/// The unnormalized Walsh–Hadamard transform's butterflies of distance
/// `from`, 2·`from`, … 256, in place. Only additions and subtractions, each
/// rounded once, so the result does not depend on the vector width the
/// compiler picks for them.
#[inline(always)]
fn butterflies_from(from: usize, x: &mut [f32; ROTATED_DIM]) {
    let mut h = from;
    while h < ROTATED_DIM {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}

/// The most (band, signature) keys a [`Buckets::Direct`] table holds: 2^22,
/// ~100 MB of bucket headers. The defaults (40 bands of 16 bits) have 2.6M.
const DIRECT_KEYS_MAX: usize = 1 << 22;

/// Buckets of ids by (band, signature). Their order within a bucket is
/// never observed: lookups sort and dedup what they gather.
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
        let rotations = (0..(bands * bits).div_ceil(ROTATED_DIM))
            .map(|_| Rotation::random(&mut rng))
            .collect();
        LshIndex {
            params,
            rotations,
            buckets: Buckets::new(bands, bits),
        }
    }

    pub fn params(&self) -> LshParams {
        self.params
    }

    /// The same index with no slot in it (what a snapshot of its owner
    /// holds: the buckets are refilled when the snapshot is read back).
    pub fn emptied(&self) -> LshIndex {
        LshIndex::new(self.params)
    }

    /// One signature per band.
    pub fn signatures(&self, v: &[f32]) -> Vec<u32> {
        assert_eq!(v.len(), EMBEDDING_DIM);
        // Every rotation's sign bits, back to back.
        let mut signs = vec![0u64; self.rotations.len() * ROTATED_DIM / 64];
        for (rotation, words) in self
            .rotations
            .iter()
            .zip(signs.chunks_exact_mut(ROTATED_DIM / 64))
        {
            for (word, ys) in words.iter_mut().zip(rotation.apply(v).chunks_exact(64)) {
                *word = ys
                    .iter()
                    .enumerate()
                    .fold(0, |w, (j, &y)| w | (u64::from(y >= 0.0) << j));
            }
        }
        let bits = self.params.bits;
        (0..self.params.bands)
            .map(|band| {
                let at = band * bits;
                // The (at most 33) bits from `at` on, across a word boundary if need be.
                let low = signs[at / 64] >> (at % 64);
                let high = match signs.get(at / 64 + 1) {
                    Some(&next) if !at.is_multiple_of(64) => next << (64 - at % 64),
                    _ => 0,
                };
                ((low | high) & ((1u64 << bits) - 1)) as u32
            })
            .collect()
    }

    /// The ids in one band's bucket.
    pub fn bucket(&self, band: usize, sig: u32) -> &[u32] {
        self.buckets.get(band, sig)
    }

    /// Appends the ids of the buckets of `signatures` to `out`, in band
    /// order. With a million live vectors each band's bucket is two cache
    /// misses (its header in the table, then its ids); the headers are asked
    /// for all at once, then the ids, so that the misses overlap instead of
    /// following one another.
    pub fn gather(&self, signatures: &[u32], out: &mut Vec<u32>) {
        let bands = signatures.iter().enumerate().take(self.params.bands);
        if let Buckets::Direct { bits, table, .. } = &self.buckets {
            for (band, sig) in bands.clone() {
                if let Some(header) = table.get(direct_index(*bits, band, *sig)) {
                    prefetch::line(header);
                }
            }
        }
        for (band, sig) in bands.clone() {
            prefetch::line(self.bucket(band, *sig).as_ptr());
        }
        for (band, sig) in bands {
            out.extend_from_slice(self.bucket(band, *sig));
        }
    }

    pub fn insert(&mut self, slot: u32, signatures: &[u32]) {
        for (band, sig) in signatures.iter().enumerate() {
            self.buckets.push(band, *sig, slot);
        }
    }

    /// Fills the (empty) buckets with `slots`, whose signatures are
    /// `signatures` (one per band each, slot after slot): a read-back
    /// index's. The same buckets as inserting them in order, built band by
    /// band, so that a band's bucket headers stay in cache (a random one of
    /// 2.6 million at the defaults is a cache miss), and with the bands
    /// shared out over the cores (each band's buckets are its own).
    pub fn refill(&mut self, slots: &[u32], signatures: &[u32]) {
        let bands = self.params.bands;
        debug_assert_eq!(slots.len() * bands, signatures.len());
        let Buckets::Direct { bits, keys, table } = &mut self.buckets else {
            for (slot, sigs) in slots.iter().zip(signatures.chunks_exact(bands)) {
                self.insert(*slot, sigs);
            }
            return;
        };
        if table.is_empty() {
            table.resize_with(*keys, Vec::new);
        }
        let bits = *bits;
        let fill = |band: usize, buckets: &mut [Vec<u32>]| {
            for (slot, sigs) in slots.iter().zip(signatures.chunks_exact(bands)) {
                if let Some(bucket) = buckets.get_mut(sigs[band] as usize) {
                    bucket.push(*slot);
                }
            }
        };
        // Each band is a part; threads take parts until none is left (a
        // thread the OS refuses to start leaves its share to the others).
        let parts =
            std::sync::Mutex::new(table.chunks_mut(1 << bits).enumerate().collect::<Vec<_>>());
        let work = || {
            while let Some((band, buckets)) = parts.lock().ok().and_then(|mut p| p.pop()) {
                fill(band, buckets);
            }
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for _ in 1..threads.min(bands) {
                let _ = std::thread::Builder::new()
                    .name("ideaflow-lsh-refill".into())
                    .spawn_scoped(scope, work);
            }
            work();
        });
    }

    pub fn remove(&mut self, slot: u32, signatures: &[u32]) {
        for (band, sig) in signatures.iter().enumerate() {
            self.buckets.remove(band, *sig, slot);
        }
    }

    /// Slots sharing at least one band with `signatures`, sorted and distinct.
    pub fn candidates(&self, signatures: &[u32]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        self.gather(signatures, &mut out);
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
    fn simd_and_portable_rotations_agree() {
        let lsh = LshIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let v = random_unit(&mut rng);
            for r in &lsh.rotations {
                let fast = r.apply(&v);
                let mut reference = [0f32; ROTATED_DIM];
                reference[..EMBEDDING_DIM].copy_from_slice(&v);
                r.rotate_portable(&mut reference);
                assert!(fast
                    .iter()
                    .zip(&reference)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    /// A rotation keeps lengths and angles (up to its scale, 512^1.5).
    #[test]
    fn rotations_are_orthogonal_up_to_scale() {
        let lsh = LshIndex::new(LshParams::default());
        assert_eq!(lsh.rotations.len(), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let scale = (ROTATED_DIM as f64).powi(3);
        for _ in 0..20 {
            let a = random_unit(&mut rng);
            let b = at_cosine(&a, 0.7, &mut rng);
            for r in &lsh.rotations {
                let (ra, rb) = (r.apply(&a), r.apply(&b));
                let dot = |x: &[f32], y: &[f32]| -> f64 {
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| f64::from(*p) * f64::from(*q))
                        .sum()
                };
                assert!((dot(&ra, &ra) / scale - 1.0).abs() < 1e-4);
                assert!((dot(&ra, &rb) / scale - dot(&a, &b)).abs() < 1e-4);
            }
        }
    }

    /// Each bit agrees with probability 1 − θ/π, as for Gaussian hyperplanes.
    #[test]
    fn bits_agree_by_the_angle_law() {
        let lsh = LshIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for c in [0.95f32, 0.88, 0.5, 0.2] {
            let mut differing = 0u64;
            let pairs = 300;
            for _ in 0..pairs {
                let a = random_unit(&mut rng);
                let b = at_cosine(&a, c, &mut rng);
                differing += u64::from(LshIndex::hamming(&lsh.signatures(&a), &lsh.signatures(&b)));
            }
            let measured = differing as f64 / (pairs * 640) as f64;
            let expected = f64::from(c).acos() / std::f64::consts::PI;
            assert!(
                (measured - expected).abs() < 0.01,
                "{c}: {measured} vs {expected}"
            );
        }
    }

    #[test]
    fn signatures_fill_every_band_with_its_bits() {
        let lsh = LshIndex::new(LshParams {
            bands: 5,
            bits: 7, // 35 bits: part of one rotation
            ..LshParams::default()
        });
        let wide = LshIndex::new(LshParams {
            bands: 40,
            bits: 32, // 1,280 bits: three rotations
            ..LshParams::default()
        });
        assert_eq!(wide.rotations.len(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (mut any_high, mut last_band_set) = (false, false);
        for _ in 0..50 {
            let v = random_unit(&mut rng);
            let sigs = lsh.signatures(&v);
            assert_eq!(sigs.len(), 5);
            assert!(sigs.iter().all(|s| *s < 1 << 7));
            any_high |= sigs.iter().any(|s| *s >= 1 << 6);
            let w = wide.signatures(&v);
            assert_eq!(w.len(), 40);
            last_band_set |= w[39] != 0;
            assert_eq!(lsh.signatures(&v), sigs, "deterministic");
        }
        assert!(any_high && last_band_set);
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

    /// Both kinds of buckets: the defaults index a table; wide signatures
    /// hash.
    fn both_bucket_kinds() -> [LshParams; 2] {
        [
            LshParams::default(),
            LshParams {
                bands: 8,
                bits: 20,
                ..LshParams::default()
            },
        ]
    }

    #[test]
    fn insert_remove_and_candidates() {
        for params in both_bucket_kinds() {
            insert_remove_and_candidates_with(params);
        }
    }

    #[test]
    fn a_refill_gives_the_buckets_inserting_in_order_gives() {
        for params in both_bucket_kinds() {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let (mut inserted, mut refilled) = (LshIndex::new(params), LshIndex::new(params));
            let mut all = Vec::new();
            // Clusters, so that buckets hold several slots.
            let centers: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut rng)).collect();
            let slots: Vec<u32> = (0..600).map(|i| i * 3 + 1).collect();
            for (i, slot) in slots.iter().enumerate() {
                let v = at_cosine(&centers[i % centers.len()], 0.95, &mut rng);
                let sigs = inserted.signatures(&v);
                inserted.insert(*slot, &sigs);
                all.extend(sigs);
            }
            refilled.refill(&slots, &all);
            let mut compared = 0;
            for sigs in all.chunks_exact(params.bands) {
                for (band, sig) in sigs.iter().enumerate() {
                    assert_eq!(inserted.bucket(band, *sig), refilled.bucket(band, *sig));
                    compared += inserted.bucket(band, *sig).len();
                }
            }
            assert!(compared > 600 * params.bands, "buckets shared: {compared}");
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
