//! The near-duplicate index: LSH buckets over the vectors of live ideas, a
//! flat arena of each vector's packed signatures, and each vector's owner
//! and embedding.
//!
//! A lookup reads the query's buckets, then rejects most candidates by the
//! Hamming distance of their packed signatures (one cache line each, no
//! pointer chasing) before spending a 384-d dot product on the rest. The
//! arena is what keeps that cheap: with a million live ideas a lookup meets
//! thousands of candidates in dense clusters, and each used to cost several
//! dependent cache misses.
//!
//! The Hamming test reads a vector's first [`TESTED_BITS`] signature bits
//! (all of them when there are fewer): one aligned line of the arena, whose
//! last bit says whether the vector's owner has other vectors. With the
//! defaults' 640 bits, a whole block was two lines, and a lookup waits on
//! those misses more than on anything else. The limit is set for those
//! bits as for all ([`LshIndex::max_hamming_over`]: a pair at the threshold
//! is wrongly rejected with probability ~3e-6 either way); the signatures'
//! later words are kept apart, read only to take a vector out of its
//! buckets. Most owners have one vector: a candidate's owner is read (from
//! its link) only when it passes the test or has siblings to check too.

use std::collections::HashSet;

use foldhash::fast::FixedState;

use crate::dedupe::{LshIndex, LshParams};
use crate::embed::dot_lanes;
use crate::prefetch;
use crate::shared_embedding::SharedEmbedding;

/// A vector's place in the arena.
pub type VectorId = u32;

/// Signature bits the Hamming test reads at most: one cache line but its
/// last bit ([`RING_FLAG`]).
pub const TESTED_BITS: usize = 511;

/// A vector's first packed signature bits (zero beyond the signatures'
/// end) and its [`RING_FLAG`]; aligned, so that reading it is one cache miss.
#[derive(Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
#[repr(C, align(64))]
struct FirstBits([u64; FIRST_WORDS]);

const FIRST_WORDS: usize = 8;
const LAST: usize = FIRST_WORDS - 1;
/// The line's last bit: the vector's owner has other vectors in the index
/// (met through this one, they are all checked).
const RING_FLAG: u64 = 1 << 63;

impl FirstBits {
    /// The first words of packed signatures, flag clear.
    fn of(packed: &[u64]) -> FirstBits {
        let mut line = FirstBits::default();
        let n = packed.len().min(FIRST_WORDS);
        line.0[..n].copy_from_slice(&packed[..n]);
        line.0[LAST] &= !RING_FLAG;
        line
    }

    fn in_ring(&self) -> bool {
        self.0[LAST] & RING_FLAG != 0
    }

    fn set_ring(&mut self, on: bool) {
        if on {
            self.0[LAST] |= RING_FLAG;
        } else {
            self.0[LAST] &= !RING_FLAG;
        }
    }

    /// Signature bits that differ from `tested` (whose flag is clear).
    fn differing(&self, tested: &FirstBits) -> u32 {
        let mut n: u32 = self.0[..LAST]
            .iter()
            .zip(&tested.0[..LAST])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        n += ((self.0[LAST] ^ tested.0[LAST]) & !RING_FLAG).count_ones();
        n
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(from = "SavedNear")]
pub struct NearIndex {
    /// Its buckets are not saved: they follow from the signatures below and
    /// are refilled at load ([`NearIndex::refill_buckets`]).
    lsh: LshIndex,
    /// Words of packed signatures per vector.
    words: usize,
    /// Per vector: its first signature bits and ring flag.
    arena: Vec<FirstBits>,
    /// Per vector, for signatures wider than [`TESTED_BITS`]: the packed
    /// words from the line's last on (`rest_words` each; the line's last
    /// word lost its top bit to the flag).
    rest: Vec<u64>,
    rest_words: usize,
    /// The Hamming test's bits: the signatures' width, at most [`TESTED_BITS`].
    tested_bits: usize,
    /// Per vector: its owner (low half) and the next vector of the same
    /// owner (high half). Apart from the signatures so that mapping a
    /// lookup's candidates to owners reads 8 bytes each, not a signature
    /// block's cache lines.
    links: Vec<u64>,
    embeddings: Vec<Option<SharedEmbedding>>,
    free: Vec<VectorId>,
    /// The candidate ids of a lookup, and the owners with rings it met
    /// (kept to reuse their allocations).
    #[serde(skip)]
    scratch: Vec<VectorId>,
    #[serde(skip)]
    rings_met: HashSet<u32, FixedState>,
}

/// What a saved [`NearIndex`] holds: all but the LSH's buckets and scratch.
#[derive(serde::Deserialize)]
struct SavedNear {
    lsh: LshIndex,
    words: usize,
    arena: Vec<FirstBits>,
    rest: Vec<u64>,
    rest_words: usize,
    tested_bits: usize,
    links: Vec<u64>,
    embeddings: Vec<Option<SharedEmbedding>>,
    free: Vec<VectorId>,
}

impl From<SavedNear> for NearIndex {
    fn from(saved: SavedNear) -> Self {
        let mut near = NearIndex {
            lsh: saved.lsh,
            words: saved.words,
            arena: saved.arena,
            rest: saved.rest,
            rest_words: saved.rest_words,
            tested_bits: saved.tested_bits,
            links: saved.links,
            embeddings: saved.embeddings,
            free: saved.free,
            scratch: Vec::new(),
            rings_met: HashSet::with_hasher(FixedState::with_seed(0x1dea)),
        };
        near.refill_buckets();
        near
    }
}

/// The packed form of per-band signatures: `bits` (≤ 32) bits each, back to back.
pub fn pack(signatures: &[u32], bits: usize, out: &mut [u64]) {
    out.iter_mut().for_each(|w| *w = 0);
    let mask = (1u64 << bits) - 1;
    for (band, sig) in signatures.iter().enumerate() {
        let at = band * bits;
        let (word, shift) = (at / 64, at % 64);
        let value = u64::from(*sig) & mask;
        out[word] |= value << shift;
        // A signature straddling two words: its high bits go to the next.
        if shift + bits > 64 {
            out[word + 1] |= value >> (64 - shift);
        }
    }
}

/// [`pack`] undone.
fn unpack(packed: &[u64], bands: usize, bits: usize) -> Vec<u32> {
    let mask = (1u64 << bits) - 1;
    (0..bands)
        .map(|band| {
            let at = band * bits;
            let (word, shift) = (at / 64, at % 64);
            let mut value = packed[word] >> shift;
            // A signature straddling two words: its high bits in the next.
            if shift + bits > 64 {
                value |= packed[word + 1] << (64 - shift);
            }
            (value & mask) as u32
        })
        .collect()
}

impl NearIndex {
    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.embeddings.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn new(params: LshParams) -> Self {
        let lsh = LshIndex::new(params);
        let p = lsh.params();
        let total = p.bands * p.bits;
        let words = total.div_ceil(64);
        NearIndex {
            words,
            tested_bits: total.min(TESTED_BITS),
            rest_words: if total > TESTED_BITS { words - LAST } else { 0 },
            lsh,
            arena: Vec::new(),
            rest: Vec::new(),
            links: Vec::new(),
            embeddings: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
            rings_met: HashSet::with_hasher(FixedState::with_seed(0x1dea)),
        }
    }

    pub fn lsh(&self) -> &LshIndex {
        &self.lsh
    }

    fn meta(&self, id: VectorId) -> (u32, VectorId) {
        let m = self.links[id as usize];
        (m as u32, (m >> 32) as VectorId)
    }

    fn set_meta(&mut self, id: VectorId, owner: u32, next: VectorId) {
        self.links[id as usize] = u64::from(owner) | (u64::from(next) << 32);
    }

    /// Adds `embedding` (with its LSH signatures) as a vector of `owner`;
    /// `sibling` is one of the owner's vectors already in the index, if any
    /// (an owner's vectors form a ring, so a lookup that meets one of them
    /// checks them all).
    pub fn insert(
        &mut self,
        owner: u32,
        embedding: SharedEmbedding,
        signatures: &[u32],
        sibling: Option<VectorId>,
    ) -> VectorId {
        let rest = self.rest_words;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.arena.push(FirstBits::default());
                self.rest.resize(self.rest.len() + rest, 0);
                self.links.push(0);
                self.embeddings.push(None);
                (self.embeddings.len() - 1) as VectorId
            }
        };
        let packed = self.packed(signatures);
        let mut line = FirstBits::of(&packed);
        line.set_ring(sibling.is_some());
        self.arena[id as usize] = line;
        if rest > 0 {
            let at = id as usize * rest;
            self.rest[at..at + rest].copy_from_slice(&packed[LAST..]);
        }
        if let Some(s) = sibling {
            self.arena[s as usize].set_ring(true);
        }
        match sibling {
            Some(s) => {
                let (_, after) = self.meta(s);
                self.set_meta(s, owner, id);
                self.set_meta(id, owner, after);
            }
            None => self.set_meta(id, owner, id),
        }
        self.embeddings[id as usize] = Some(embedding);
        self.lsh.insert(id, signatures);
        id
    }

    /// `signatures` packed: `words` words.
    fn packed(&self, signatures: &[u32]) -> Vec<u64> {
        let mut packed = vec![0u64; self.words];
        pack(signatures, self.lsh.params().bits, &mut packed);
        packed
    }

    /// The band signatures of vector `id`, from its packed lines.
    fn signatures_of(&self, id: VectorId) -> Vec<u32> {
        let p = self.lsh.params();
        let rest = self.rest_words;
        // (Below TESTED_BITS the flag is past the signatures' end: unpack
        // never reads it.)
        let mut packed = self.arena[id as usize].0[..self.words.min(FIRST_WORDS)].to_vec();
        if rest > 0 {
            packed.truncate(LAST);
            packed.extend_from_slice(&self.rest[id as usize * rest..(id as usize + 1) * rest]);
        }
        unpack(&packed, p.bands, p.bits)
    }

    /// Puts every vector into the LSH's buckets (which must be empty), in
    /// id order: a read-back index's, whose buckets are not saved.
    fn refill_buckets(&mut self) {
        let ids: Vec<VectorId> = (0..self.embeddings.len() as VectorId)
            .filter(|id| self.embeddings[*id as usize].is_some())
            .collect();
        let mut signatures = Vec::with_capacity(ids.len() * self.lsh.params().bands);
        for id in &ids {
            signatures.extend(self.signatures_of(*id));
        }
        self.lsh.refill(&ids, &signatures);
    }

    /// A copy of what a save writes, for a checkpoint to encode on a thread
    /// of its own: the buckets are left out (they are not saved) and the
    /// embeddings shared, not copied.
    pub fn snapshot(&self) -> NearIndex {
        NearIndex {
            lsh: self.lsh.emptied(),
            words: self.words,
            arena: self.arena.clone(),
            rest: self.rest.clone(),
            rest_words: self.rest_words,
            tested_bits: self.tested_bits,
            links: self.links.clone(),
            embeddings: self.embeddings.clone(),
            free: self.free.clone(),
            scratch: Vec::new(),
            rings_met: HashSet::with_hasher(FixedState::with_seed(0x1dea)),
        }
    }

    /// Takes a vector out of the index (and out of its owner's ring).
    pub fn remove(&mut self, id: VectorId) {
        let signatures = self.signatures_of(id);
        self.lsh.remove(id, &signatures);
        let (owner, next) = self.meta(id);
        let mut before = id;
        while self.meta(before).1 != id {
            before = self.meta(before).1;
        }
        if before != id {
            self.set_meta(before, owner, next);
            if next == before {
                // One vector left: no ring to walk any more.
                self.arena[before as usize].set_ring(false);
            }
        }
        self.embeddings[id as usize] = None;
        self.free.push(id);
    }

    /// Every owner with a vector at cosine ≥ `threshold` to `query`, among
    /// the owners of the LSH candidates (all of an owner's vectors are
    /// checked once any of them is a candidate), with its best cosine, in no
    /// particular order (the caller breaks ties). Embeddings are unit
    /// vectors: dot = cosine.
    pub fn matches(&mut self, query: &[f32], signatures: &[u32], threshold: f32) -> NearMatches {
        let tested = FirstBits::of(&self.packed(signatures));
        let max_hamming = self.lsh.max_hamming_over(self.tested_bits, threshold);
        // Gather, sort and dedup first, so that each vector is checked once
        // and the lines are read in address order.
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        self.lsh.gather(signatures, &mut ids);
        // A radix sort: thousands of candidates in dense clusters, whose
        // comparison sort was a large part of worker 0's time at 1M signals.
        radsort::sort(&mut ids);
        ids.dedup();
        let mut out = NearMatches {
            candidates: ids.len() as u64,
            ..NearMatches::default()
        };
        let mut rings_met = std::mem::take(&mut self.rings_met);
        rings_met.clear();
        // Ask for the lines a few candidates ahead so that their cache
        // misses overlap (with a million live vectors most are in neither
        // cache).
        const AHEAD: usize = 12;
        let line = |id: u32| &self.arena[id as usize] as *const FirstBits;
        for id in ids.iter().take(AHEAD) {
            prefetch::line(line(*id));
        }
        let cosine = |id: VectorId| {
            self.embeddings[id as usize]
                .as_ref()
                .map_or(f32::NEG_INFINITY, |v| dot_lanes(query, v))
        };
        for (i, &id) in ids.iter().enumerate() {
            if let Some(ahead) = ids.get(i + AHEAD) {
                prefetch::line(line(*ahead));
            }
            let candidate = &self.arena[id as usize];
            if !candidate.in_ring() {
                if candidate.differing(&tested) <= max_hamming {
                    let c = cosine(id);
                    if c >= threshold {
                        out.hits.push((self.meta(id).0, c));
                    }
                }
                continue;
            }
            // Every vector of its owner, once per lookup.
            let owner = self.meta(id).0;
            if !rings_met.insert(owner) {
                continue;
            }
            let mut best = f32::NEG_INFINITY;
            let mut v = id;
            loop {
                if self.arena[v as usize].differing(&tested) <= max_hamming {
                    best = best.max(cosine(v));
                }
                v = self.meta(v).1;
                if v == id {
                    break;
                }
            }
            if best >= threshold {
                out.hits.push((owner, best));
            }
        }
        self.rings_met = rings_met;
        self.scratch = ids;
        out
    }
}

/// What a lookup found.
#[derive(Debug, Default)]
pub struct NearMatches {
    /// (owner, best cosine) at or above the threshold.
    pub hits: Vec<(u32, f32)>,
    /// Distinct vectors met in the buckets.
    pub candidates: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::l2_normalize;
    use crate::EMBEDDING_DIM;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn packing_round_trips() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (bands, bits) in [(40usize, 16usize), (7, 13), (3, 32), (5, 1)] {
            let sigs: Vec<u32> = (0..bands)
                .map(|_| rng.random::<u32>() & (((1u64 << bits) - 1) as u32))
                .collect();
            let mut packed = vec![0u64; (bands * bits).div_ceil(64)];
            pack(&sigs, bits, &mut packed);
            assert_eq!(unpack(&packed, bands, bits), sigs);
            let ones: u32 = packed.iter().map(|w| w.count_ones()).sum();
            assert_eq!(ones, sigs.iter().map(|s| s.count_ones()).sum::<u32>());
        }
    }

    fn unit(rng: &mut ChaCha8Rng) -> SharedEmbedding {
        let mut v: Vec<f32> = (0..EMBEDDING_DIM)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        l2_normalize(&mut v);
        v.into()
    }

    #[test]
    fn finds_the_same_vector_and_forgets_removed_ones() {
        let mut index = NearIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let vectors: Vec<SharedEmbedding> = (0..200).map(|_| unit(&mut rng)).collect();
        let ids: Vec<VectorId> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let sigs = index.lsh().signatures(v);
                index.insert(i as u32 * 10, v.clone(), &sigs, None)
            })
            .collect();
        for (i, v) in vectors.iter().enumerate() {
            let sigs = index.lsh().signatures(v);
            let m = index.matches(v, &sigs, 0.9);
            assert_eq!(m.hits.len(), 1, "vector {i}");
            assert_eq!(m.hits[0].0, i as u32 * 10);
        }
        index.remove(ids[3]);
        let sigs = index.lsh().signatures(&vectors[3]);
        assert!(index.matches(&vectors[3], &sigs, 0.9).hits.is_empty());
        // The freed place is reused by the next vector.
        let again = index.insert(77, vectors[3].clone(), &sigs, None);
        assert_eq!(again, ids[3]);
        let hits = index.matches(&vectors[3], &sigs, 0.9).hits;
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, 77);
    }

    #[test]
    fn a_candidate_brings_every_vector_of_its_owner() {
        let mut index = NearIndex::new(LshParams::default());
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (a, b, c) = (unit(&mut rng), unit(&mut rng), unit(&mut rng));
        let sigs = |v: &[f32]| index.lsh().signatures(v);
        let (sa, sb, sc) = (sigs(&a), sigs(&b), sigs(&c));
        let first = index.insert(5, a.clone(), &sa, None);
        let second = index.insert(5, b.clone(), &sb, Some(first));
        let third = index.insert(5, c.clone(), &sc, Some(second));
        // A query close to `b` whose only bucket in common is one of a's.
        index.lsh.remove(second, &sb);
        let mut query = sb.clone();
        query[0] = sa[0];
        let m = index.matches(&b, &query, 0.99);
        assert_eq!(m.hits.len(), 1, "b reached through a's bucket");
        assert_eq!(m.hits[0].0, 5);
        // Removing from the middle of the ring keeps the rest reachable.
        index.remove(second);
        assert!(index.matches(&b, &query, 0.99).hits.is_empty());
        let mut query = sc.clone();
        query[0] = sa[0];
        index.lsh.remove(third, &sc);
        assert_eq!(index.matches(&c, &query, 0.99).hits.len(), 1);
        index.remove(first);
        index.remove(third);
        assert!(index.matches(&c, &sc, 0.5).hits.is_empty());
    }

    /// Lookups against a plain reference: owners whose vectors share a bucket
    /// with the query, every vector of theirs within the Hamming limit
    /// compared by dot product. Signatures of one word and of several, with
    /// bands straddling words; owners with rings; removals.
    #[test]
    fn lookups_match_a_plain_reference() {
        for (bands, bits) in [(40usize, 16usize), (6, 8), (7, 32), (30, 20)] {
            let params = LshParams {
                bands,
                bits,
                seed: 3,
            };
            let mut index = NearIndex::new(params);
            let mut rng = ChaCha8Rng::seed_from_u64(bands as u64 * 100 + bits as u64);
            // (id, owner, vector, signatures) of what is in the index.
            let mut live: Vec<(VectorId, u32, SharedEmbedding, Vec<u32>)> = Vec::new();
            for n in 0..300u32 {
                // Some vectors close to an earlier one, so that buckets
                // fill, at cosines from ~0.99 to ~0.83 (around the
                // threshold, where the Hamming limit decides).
                let v = match live.get(rng.random_range(0..live.len().max(1))) {
                    Some((_, _, near, _)) if n % 3 == 0 => {
                        let noise = [0.02f32, 0.06, 0.09, 0.12][(n as usize / 3) % 4];
                        let mut v: Vec<f32> = near
                            .iter()
                            .map(|x| x + noise * (rng.random::<f32>() - 0.5))
                            .collect();
                        l2_normalize(&mut v);
                        SharedEmbedding::from(v)
                    }
                    _ => unit(&mut rng),
                };
                let sigs = index.lsh().signatures(&v);
                let owner = rng.random_range(0..120u32);
                let sibling = live.iter().find(|l| l.1 == owner).map(|l| l.0);
                let id = index.insert(owner, v.clone(), &sigs, sibling);
                live.push((id, owner, v, sigs));
                if n % 7 == 6 {
                    let gone = live.remove(rng.random_range(0..live.len()));
                    index.remove(gone.0);
                }
            }
            // The Hamming test reads the first TESTED_BITS bits at most.
            let total = bands * bits;
            let tested = total.min(TESTED_BITS);
            let max_hamming = index.lsh().max_hamming_over(tested, 0.9);
            let first_bits = |sigs: &[u32]| {
                let mut packed = vec![0u64; total.div_ceil(64)];
                pack(sigs, bits, &mut packed);
                packed.truncate(tested.div_ceil(64));
                if tested % 64 != 0 {
                    *packed.last_mut().unwrap() &= (1u64 << (tested % 64)) - 1;
                }
                packed
            };
            for (_, _, query, qsigs) in live.iter().step_by(5) {
                let mut expected: Vec<(u32, f32)> = Vec::new();
                let owners: std::collections::BTreeSet<u32> = live
                    .iter()
                    .filter(|l| l.3.iter().zip(qsigs).any(|(a, b)| a == b))
                    .map(|l| l.1)
                    .collect();
                for owner in owners {
                    let best = live
                        .iter()
                        .filter(|l| l.1 == owner)
                        .filter(|l| {
                            let differing: u32 = first_bits(&l.3)
                                .iter()
                                .zip(&first_bits(qsigs))
                                .map(|(a, b)| (a ^ b).count_ones())
                                .sum();
                            differing <= max_hamming
                        })
                        .map(|l| dot_lanes(query, &l.2))
                        .fold(f32::NEG_INFINITY, f32::max);
                    if best >= 0.9 {
                        expected.push((owner, best));
                    }
                }
                let mut got = index.matches(query, qsigs, 0.9).hits;
                got.sort_by_key(|h| h.0);
                assert_eq!(got, expected, "bands {bands}, bits {bits}");
            }
        }
    }
}
