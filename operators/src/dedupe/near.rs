//! The near-duplicate index: LSH buckets over the vectors of live ideas, and
//! a flat arena holding each vector's packed signatures, owner and embedding.
//!
//! A lookup reads the query's buckets, then rejects most candidates by the
//! Hamming distance of their packed signatures (one contiguous read each,
//! no pointer chasing) before spending a 384-d dot product on the rest. The
//! arena is what keeps that cheap: with a million live ideas a lookup meets
//! thousands of candidates in dense clusters, and each used to cost several
//! dependent cache misses.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use crate::dedupe::{LshIndex, LshParams};
use crate::embed::dot_lanes;
use crate::shared_embedding::SharedEmbedding;

/// A vector's place in the arena.
pub type VectorId = u32;

pub struct NearIndex {
    lsh: LshIndex,
    /// Words of packed signatures per vector.
    words: usize,
    /// Per vector: `words` words of packed signatures, then one word: its
    /// owner (low half) and the next vector of the same owner (high half).
    arena: Vec<u64>,
    embeddings: Vec<Option<SharedEmbedding>>,
    free: Vec<VectorId>,
    /// The candidate ids of a lookup (kept to reuse its allocation).
    scratch: Vec<VectorId>,
    recent: Recent,
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

fn unpack(packed: &[u64], bands: usize, bits: usize) -> Vec<u32> {
    (0..bands)
        .map(|band| {
            let mut sig = 0u64;
            for b in 0..bits {
                let at = band * bits + b;
                sig |= ((packed[at / 64] >> (at % 64)) & 1) << b;
            }
            sig as u32
        })
        .collect()
}

impl NearIndex {
    pub fn new(params: LshParams) -> Self {
        let lsh = LshIndex::new(params);
        let p = lsh.params();
        NearIndex {
            words: (p.bands * p.bits).div_ceil(64),
            lsh,
            arena: Vec::new(),
            embeddings: Vec::new(),
            free: Vec::new(),
            scratch: Vec::new(),
            recent: Recent::default(),
        }
    }

    pub fn lsh(&self) -> &LshIndex {
        &self.lsh
    }

    fn stride(&self) -> usize {
        self.words + 1
    }

    fn meta(&self, id: VectorId) -> (u32, VectorId) {
        let m = self.arena[id as usize * self.stride() + self.words];
        (m as u32, (m >> 32) as VectorId)
    }

    fn set_meta(&mut self, id: VectorId, owner: u32, next: VectorId) {
        let at = id as usize * self.stride() + self.words;
        self.arena[at] = u64::from(owner) | (u64::from(next) << 32);
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
        let stride = self.stride();
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.arena.resize(self.arena.len() + stride, 0);
                self.embeddings.push(None);
                (self.embeddings.len() - 1) as VectorId
            }
        };
        let at = id as usize * stride;
        pack(
            signatures,
            self.lsh.params().bits,
            &mut self.arena[at..at + self.words],
        );
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
        if self.recent.open {
            for (band, sig) in signatures.iter().enumerate() {
                self.recent
                    .buckets
                    .entry((band, *sig))
                    .or_default()
                    .push(id);
            }
            self.recent.by_owner.entry(owner).or_default().push(id);
        }
        id
    }

    /// Takes a vector out of the index (and out of its owner's ring).
    pub fn remove(&mut self, id: VectorId) {
        debug_assert!(!self.recent.open, "a removal inside a batch");
        let p = self.lsh.params();
        let at = id as usize * self.stride();
        let signatures = unpack(&self.arena[at..at + self.words], p.bands, p.bits);
        self.lsh.remove(id, &signatures);
        let (owner, next) = self.meta(id);
        let mut before = id;
        while self.meta(before).1 != id {
            before = self.meta(before).1;
        }
        if before != id {
            self.set_meta(before, owner, next);
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
        let probe = self.probe(query, signatures, threshold);
        let mut ids = std::mem::take(&mut self.scratch);
        let owners = self.gather(signatures, &mut ids);
        let mut out = NearMatches {
            candidates: ids.len() as u64,
            ..NearMatches::default()
        };
        self.scratch = ids;
        for o in owners {
            let (owner, first) = ((o >> 32) as u32, o as VectorId);
            let best = self.ring_best(&probe, first);
            if best >= threshold {
                out.hits.push((owner, best));
            }
        }
        out
    }

    /// [`NearIndex::matches`] against the index as it stands, to be
    /// [completed](NearIndex::complete) later with the vectors inserted in
    /// between (a [batch](NearIndex::begin_batch) must be open by then).
    /// Reads the index only, so an epoch's lookups can be made on several
    /// threads before its signals are applied in order.
    pub fn prematch(&self, query: &[f32], signatures: &[u32], threshold: f32) -> Prematch {
        let probe = self.probe(query, signatures, threshold);
        let mut ids = Vec::new();
        let owners = self.gather(signatures, &mut ids);
        let mut pre = Prematch {
            candidates: ids.len() as u64,
            reached: Vec::with_capacity(owners.len()),
            hits: Vec::new(),
        };
        for o in owners {
            let (owner, first) = ((o >> 32) as u32, o as VectorId);
            pre.reached.push(owner);
            let best = self.ring_best(&probe, first);
            if best >= threshold {
                pre.hits.push((owner, best));
            }
        }
        pre
    }

    /// What [`NearIndex::matches`] would find now, from a [`Prematch`] made
    /// before the open batch's insertions: those are the only change since
    /// (a batch allows no removals), so the lookup now meets the prematch's
    /// candidates plus the inserted vectors in its buckets, and an owner's
    /// ring is its old ring plus its inserted vectors.
    pub fn complete(
        &self,
        pre: Prematch,
        query: &[f32],
        signatures: &[u32],
        threshold: f32,
    ) -> NearMatches {
        debug_assert!(self.recent.open, "a prematch completed outside a batch");
        let probe = self.probe(query, signatures, threshold);
        let mut ids: Vec<VectorId> = Vec::new();
        for (band, sig) in signatures.iter().enumerate() {
            if let Some(bucket) = self.recent.buckets.get(&(band, *sig)) {
                ids.extend_from_slice(bucket);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = NearMatches {
            candidates: pre.candidates + ids.len() as u64,
            hits: Vec::with_capacity(pre.hits.len()),
        };
        let inserted_best = |owner: u32| -> f32 {
            self.recent
                .by_owner
                .get(&owner)
                .map_or(f32::NEG_INFINITY, |ids| {
                    ids.iter()
                        .filter_map(|id| self.cosine(&probe, *id))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
        };
        // Owners the prematch reached: their old ring's best (known when it
        // was a hit, below the threshold otherwise) and their inserted vectors.
        let mut hits = pre.hits.iter().peekable();
        for &owner in &pre.reached {
            let old = match hits.peek() {
                Some(&&(o, best)) if o == owner => {
                    hits.next();
                    best
                }
                _ => f32::NEG_INFINITY,
            };
            let best = old.max(inserted_best(owner));
            if best >= threshold {
                out.hits.push((owner, best));
            }
        }
        // Owners reached only through inserted vectors: their whole ring.
        let mut owners: Vec<u64> = ids
            .iter()
            .map(|&id| (u64::from(self.meta(id).0) << 32) | u64::from(id))
            .collect();
        owners.sort_unstable();
        owners.dedup_by_key(|o| *o >> 32);
        for o in owners {
            let (owner, first) = ((o >> 32) as u32, o as VectorId);
            if pre.reached.binary_search(&owner).is_ok() {
                continue;
            }
            let best = self.ring_best(&probe, first);
            if best >= threshold {
                out.hits.push((owner, best));
            }
        }
        out
    }

    /// Starts recording insertions, which [`NearIndex::complete`] adds to
    /// prematches made before them; until [`NearIndex::end_batch`], nothing
    /// may be removed.
    pub fn begin_batch(&mut self) {
        self.recent.buckets.clear();
        self.recent.by_owner.clear();
        self.recent.open = true;
    }

    pub fn end_batch(&mut self) {
        self.begin_batch();
        self.recent.open = false;
    }

    fn probe<'q>(&self, query: &'q [f32], signatures: &[u32], threshold: f32) -> Probe<'q> {
        let mut packed = vec![0u64; self.words];
        pack(signatures, self.lsh.params().bits, &mut packed);
        Probe {
            query,
            packed,
            max_hamming: self.lsh.max_hamming(threshold),
        }
    }

    /// The candidates in the query's buckets into `ids` (sorted, distinct),
    /// and their owners, each as `owner << 32 | one of its candidates`,
    /// sorted by owner.
    fn gather(&self, signatures: &[u32], ids: &mut Vec<VectorId>) -> Vec<u64> {
        // Gather, sort and dedup first (ids, then owners): the arena is then
        // read in about address order, with loads that do not depend on one
        // another, so the CPU overlaps their cache misses (checking bucket
        // by bucket serialized them).
        ids.clear();
        for (band, sig) in signatures.iter().enumerate().take(self.lsh.params().bands) {
            ids.extend_from_slice(self.lsh.bucket(band, *sig));
        }
        ids.sort_unstable();
        ids.dedup();
        let mut owners: Vec<u64> = ids
            .iter()
            .map(|&id| (u64::from(self.meta(id).0) << 32) | u64::from(id))
            .collect();
        owners.sort_unstable();
        owners.dedup_by_key(|o| *o >> 32);
        owners
    }

    /// The best cosine to the query among the vectors of the ring `first`
    /// is on (minus infinity when none is within the Hamming distance).
    fn ring_best(&self, probe: &Probe, first: VectorId) -> f32 {
        let mut best = f32::NEG_INFINITY;
        let mut id = first;
        loop {
            if let Some(c) = self.cosine(probe, id) {
                best = best.max(c);
            }
            id = self.meta(id).1;
            if id == first {
                return best;
            }
        }
    }

    /// The vector's cosine to the query, if its signatures are within the
    /// Hamming distance (most candidates are not, and cost no dot product).
    fn cosine(&self, probe: &Probe, id: VectorId) -> Option<f32> {
        let at = id as usize * self.stride();
        let hamming: u32 = self.arena[at..at + self.words]
            .iter()
            .zip(&probe.packed)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        if hamming > probe.max_hamming {
            return None;
        }
        self.embeddings[id as usize]
            .as_ref()
            .map(|v| dot_lanes(probe.query, v))
    }
}

/// A query's packed signatures and the Hamming distance a candidate's may be
/// within to be compared by cosine.
struct Probe<'q> {
    query: &'q [f32],
    packed: Vec<u64>,
    max_hamming: u32,
}

/// Insertions since [`NearIndex::begin_batch`], bucketed like the index.
#[derive(Default)]
struct Recent {
    open: bool,
    buckets: HashMap<(usize, u32), Vec<VectorId>, FixedState>,
    by_owner: HashMap<u32, Vec<VectorId>, FixedState>,
}

/// A lookup made ahead ([`NearIndex::prematch`]).
#[derive(Debug, Default)]
pub struct Prematch {
    /// Distinct vectors met in the buckets.
    candidates: u64,
    /// Every owner reached, ascending.
    reached: Vec<u32>,
    /// (owner, best cosine) at or above the threshold, ascending by owner.
    hits: Vec<(u32, f32)>,
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

    /// A unit vector near `center`: two of them at `spread` 1 are at cosine ~0.96.
    fn near(rng: &mut ChaCha8Rng, center: &[f32], spread: f32) -> SharedEmbedding {
        let mut v: Vec<f32> = center
            .iter()
            .map(|c| c + spread * 0.035 * (rng.random::<f32>() - 0.5))
            .collect();
        l2_normalize(&mut v);
        v.into()
    }

    #[test]
    fn a_prematch_completed_after_insertions_finds_what_a_lookup_then_would() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let centers: Vec<SharedEmbedding> = (0..4).map(|_| unit(&mut rng)).collect();
        let point = |rng: &mut ChaCha8Rng| {
            let c = &centers[rng.random_range(0..centers.len())];
            let spread = rng.random_range(0.5..3.0);
            near(rng, c, spread)
        };
        let mut index = NearIndex::new(LshParams::default());
        let mut owners: Vec<VectorId> = Vec::new();
        // Lookups whose answer the batch's insertions changed, and hits.
        let (mut changed, mut hits) = (0, 0);
        for round in 0..6 {
            // The index before the batch: owners with rings of 1–3 vectors.
            for _ in 0..60 {
                let v = point(&mut rng);
                let sigs = index.lsh().signatures(&v);
                let owner = rng.random_range(0..80u32);
                let sibling = owners.iter().copied().find(|id| index.meta(*id).0 == owner);
                let id = index.insert(owner, v, &sigs, sibling);
                owners.push(id);
            }
            let queries: Vec<SharedEmbedding> = (0..30).map(|_| point(&mut rng)).collect();
            let pres: Vec<Prematch> = queries
                .iter()
                .map(|q| index.prematch(q, &index.lsh().signatures(q), 0.9))
                .collect();
            // The batch: new vectors of old owners and of new ones.
            index.begin_batch();
            for (i, (q, pre)) in queries.iter().zip(pres).enumerate() {
                let sigs = index.lsh().signatures(q);
                let before = (pre.candidates, pre.hits.clone());
                let done = index.complete(pre, q, &sigs, 0.9);
                changed += usize::from(before != (done.candidates, done.hits.clone()));
                hits += done.hits.len();
                let now = index.matches(q, &sigs, 0.9);
                let sorted = |mut h: Vec<(u32, f32)>| {
                    h.sort_by_key(|x| x.0);
                    h
                };
                assert_eq!(done.candidates, now.candidates, "round {round}, query {i}");
                assert_eq!(
                    sorted(done.hits),
                    sorted(now.hits),
                    "round {round}, query {i}"
                );
                let v = if i % 2 == 0 {
                    q.clone()
                } else {
                    point(&mut rng)
                };
                let owner = rng.random_range(0..100u32);
                let sibling = owners.iter().copied().find(|id| index.meta(*id).0 == owner);
                owners.push(index.insert(owner, v.clone(), &index.lsh().signatures(&v), sibling));
            }
            index.end_batch();
        }
        assert!(changed > 50 && hits > 500, "{changed} changed, {hits} hits");
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
}
