//! Rolling centroids: the mean embedding of the ideas of a key (a category or a
//! community) whose time lies in a sliding event-time window. An idea is added
//! at its time and retracted at time + window.
//!
//! The window's membership ([`CentroidWindow`]) turns those additions and
//! retractions into one [`VectorDelta`] per key and epoch. The sums are a
//! differential-dataflow collection whose difference type is that delta: the
//! pipeline arranges and reduces them into each key's sum and hands the sums
//! back ([`CentroidWindow::settle`]); without a dataflow, [`AccumulatedSums`]
//! does the same accumulation in place.
//!
//! Sums are kept in fixed point (each component × 2^20 as i64), so adding and
//! retracting are exact and commutative: the centroid depends only on the set
//! of ideas in the window, never on the order they arrived in or on how the
//! work was split. Precision: each component of an embedding is rounded to
//! 2^-20 ≈ 9.5e-7 before summing, so a mean's components are within 4.8e-7 of
//! the exact f64 mean; with unit vectors the sum of a component stays below
//! 2^43 for 2^23 ideas per key, far from overflow.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use crate::embed::{dot2_lanes_f64, dot_lanes_f64};
use crate::idea::IdeaId;
use crate::shared_embedding::SharedEmbedding;
use crate::EMBEDDING_DIM;

const SCALE: f64 = (1u64 << 20) as f64;

/// An exact sum of vectors and their count.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VectorSum {
    pub sum: Vec<i64>,
    pub n: i64,
    /// The sum in f64 and its squared norm, computed on first use after a
    /// change: cosines against it cost one 384-d dot product.
    #[serde(skip)]
    mirror: Option<(Vec<f64>, f64)>,
}

impl PartialEq for VectorSum {
    fn eq(&self, other: &Self) -> bool {
        self.sum == other.sum && self.n == other.n
    }
}

impl Eq for VectorSum {}

impl Default for VectorSum {
    fn default() -> Self {
        VectorSum {
            sum: vec![0; EMBEDDING_DIM],
            n: 0,
            mirror: None,
        }
    }
}

/// One component in fixed point.
fn fixed(x: f32) -> i64 {
    (x as f64 * SCALE).round() as i64
}

/// The fixed-point form of an embedding, as added to a [`VectorSum`].
pub fn fixed_point(v: &[f32]) -> Vec<i64> {
    v.iter().map(|x| fixed(*x)).collect()
}

/// A change to a key's sum: the members added minus those retracted, in
/// fixed point, with their count. It is the difference type of the centroid
/// collection: differential adds deltas (exactly, in any order) to get each
/// key's sum at each time. The zero delta holds no vector at all, so an
/// empty accumulator allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VectorDelta {
    sum: Vec<i64>,
    n: i64,
}

impl VectorDelta {
    /// Adds (`sign` 1) or retracts (`sign` -1) one member's embedding.
    pub fn add(&mut self, embedding: &[f32], sign: i64) {
        if self.sum.is_empty() {
            self.sum = vec![0; EMBEDDING_DIM];
        }
        for (s, x) in self.sum.iter_mut().zip(embedding) {
            *s += sign * fixed(*x);
        }
        self.n += sign;
    }

    /// The members this delta adds (negative: retracts).
    pub fn n(&self) -> i64 {
        self.n
    }
}

impl IsZero for VectorDelta {
    fn is_zero(&self) -> bool {
        self.n == 0 && self.sum.iter().all(|s| *s == 0)
    }
}

impl Semigroup for VectorDelta {
    fn plus_equals(&mut self, rhs: &Self) {
        if rhs.sum.is_empty() {
            self.n += rhs.n;
            return;
        }
        if self.sum.is_empty() {
            self.sum = vec![0; rhs.sum.len()];
        }
        for (s, x) in self.sum.iter_mut().zip(&rhs.sum) {
            *s += x;
        }
        self.n += rhs.n;
    }
}

impl Monoid for VectorDelta {
    fn zero() -> Self {
        VectorDelta::default()
    }
}

impl Abelian for VectorDelta {
    fn negate(&mut self) {
        self.sum.iter_mut().for_each(|s| *s = -*s);
        self.n = -self.n;
    }
}

impl From<VectorDelta> for VectorSum {
    /// A key's accumulated deltas: its sum.
    fn from(delta: VectorDelta) -> Self {
        let mut sum = delta.sum;
        sum.resize(EMBEDDING_DIM, 0);
        VectorSum {
            sum,
            n: delta.n,
            mirror: None,
        }
    }
}

/// Each key's deltas accumulated in place into its sum: what the pipeline's
/// differential reduce computes, for a [`CentroidWindow`] (or an idea state)
/// run without a dataflow, as in unit tests.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AccumulatedSums<K: Ord>(BTreeMap<K, VectorDelta>);

impl<K: Ord> Default for AccumulatedSums<K> {
    fn default() -> Self {
        AccumulatedSums(BTreeMap::new())
    }
}

impl<K: Ord + Clone> AccumulatedSums<K> {
    /// Adds one epoch's deltas; returns each touched key's new sum (`None`:
    /// nothing left), as the collection's changes would say.
    pub fn accumulate(&mut self, deltas: Vec<(K, VectorDelta)>) -> Vec<(K, Option<VectorDelta>)> {
        let mut touched = Vec::with_capacity(deltas.len());
        for (key, delta) in deltas {
            let sum = self.0.entry(key.clone()).or_default();
            sum.plus_equals(&delta);
            touched.push(key);
        }
        touched.sort();
        touched.dedup();
        touched
            .into_iter()
            .map(|key| match self.0.get(&key) {
                Some(sum) if !sum.is_zero() => {
                    let sum = sum.clone();
                    (key, Some(sum))
                }
                _ => {
                    self.0.remove(&key);
                    (key, None)
                }
            })
            .collect()
    }
}

impl VectorSum {
    pub fn add(&mut self, fixed: &[i64], sign: i64) {
        for (s, x) in self.sum.iter_mut().zip(fixed) {
            *s += sign * x;
        }
        self.n += sign;
        self.mirror = None;
    }

    /// The mean, or `None` when empty.
    pub fn mean(&self) -> Option<Vec<f32>> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            self.sum
                .iter()
                .map(|s| (*s as f64 / SCALE / n) as f32)
                .collect()
        })
    }

    /// Cosine between `v` and the mean, with `v` itself taken out of the sum
    /// when `exclude_self` (the centroid "without itself"). `None` if nothing
    /// is left. The mean's direction is the sum's, so no division by n.
    pub fn cosine(&self, v: &[f32], exclude_self: bool) -> Option<f64> {
        self.cosine_with_norm(v, norm2(v), exclude_self)
    }

    /// [`VectorSum::cosine`] with `v`'s squared norm ([`norm2`]) given: the
    /// idea state computes it once per idea, not on every tick.
    pub fn cosine_with_norm(&self, v: &[f32], vv: f64, exclude_self: bool) -> Option<f64> {
        if !self.has_rest(exclude_self) {
            return None;
        }
        Some(self.with_mirror(|sum, norm2| {
            cosine_from_dot(dot_lanes_f64(v, sum), vv, norm2, exclude_self)
        }))
    }

    /// Whether anything is left in the sum once `v` is taken out (when
    /// `exclude_self`): without it there is no centroid to compare with.
    fn has_rest(&self, exclude_self: bool) -> bool {
        self.n - i64::from(exclude_self) > 0
    }

    /// Computes the sum's f64 mirror now if the sum changed since the last
    /// time: scoring then reads it through shared references, from several
    /// threads, without computing it once per idea.
    pub fn refresh_mirror(&mut self) {
        if self.mirror.is_none() {
            self.mirror = Some(self.compute_mirror());
        }
    }

    fn compute_mirror(&self) -> (Vec<f64>, f64) {
        let sum: Vec<f64> = self.sum.iter().map(|s| *s as f64 / SCALE).collect();
        let norm2 = sum.iter().map(|x| x * x).sum();
        (sum, norm2)
    }

    /// `f` of the sum in f64 and its squared norm: the cached mirror, or
    /// (not refreshed since a change) one computed for this call, which is
    /// the same value.
    fn with_mirror<R>(&self, f: impl FnOnce(&[f64], f64) -> R) -> R {
        match &self.mirror {
            Some((sum, norm2)) => f(sum, *norm2),
            None => {
                let (sum, norm2) = self.compute_mirror();
                f(&sum, norm2)
            }
        }
    }
}

/// Cosine of `v` with a sum, from their dot product `vs`, `v`'s squared norm
/// `vv` and the sum's `norm2`, with `v` taken out of the sum when `exclude_self`.
fn cosine_from_dot(vs: f64, vv: f64, norm2: f64, exclude_self: bool) -> f64 {
    // |S − v|² = |S|² − 2 v·S + |v|², v·(S − v) = v·S − |v|².
    let (dot, rest2) = if exclude_self {
        (vs - vv, (norm2 - 2.0 * vs + vv).max(0.0))
    } else {
        (vs, norm2)
    };
    if vv == 0.0 || rest2 <= 1e-18 {
        return 0.0;
    }
    (dot / (vv.sqrt() * rest2.sqrt())).clamp(-1.0, 1.0)
}

/// [`VectorSum::cosine_with_norm`] of one vector with two sums (an idea's
/// category and community centroids, on every tick), in one pass over `v`:
/// the two dot products are independent chains, so each waits less on the
/// adder, and `v` is read once. Each is bit-identical to its own call.
pub fn cosines_with_norm(
    v: &[f32],
    vv: f64,
    a: Option<(&VectorSum, bool)>,
    b: Option<(&VectorSum, bool)>,
) -> (Option<f64>, Option<f64>) {
    fn live(s: Option<(&VectorSum, bool)>) -> Option<(&VectorSum, bool)> {
        s.filter(|(s, ex)| s.has_rest(*ex))
    }
    match (live(a), live(b)) {
        (Some((a, ea)), Some((b, eb))) => a.with_mirror(|sa, na| {
            b.with_mirror(|sb, nb| {
                let (da, db) = dot2_lanes_f64(v, sa, sb);
                (
                    Some(cosine_from_dot(da, vv, na, ea)),
                    Some(cosine_from_dot(db, vv, nb, eb)),
                )
            })
        }),
        (a, b) => (
            a.and_then(|(s, ex)| s.cosine_with_norm(v, vv, ex)),
            b.and_then(|(s, ex)| s.cosine_with_norm(v, vv, ex)),
        ),
    }
}

/// `v`'s squared norm, in f64, as the centroid cosines use it.
pub fn norm2(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64) * (*x as f64)).sum()
}

/// A key's place in a [`CentroidWindow`], held by each live idea of the key
/// so that scoring reaches the sum by index, not by hashing the key's text
/// (twice per live idea on every tick). Held as index + 1, so that an
/// `Option<CentroidSlot>` (two per live idea) is four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CentroidSlot(std::num::NonZeroU32);

impl CentroidSlot {
    fn new(index: u32) -> Self {
        CentroidSlot(std::num::NonZeroU32::MIN.saturating_add(index))
    }

    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// Adds (`sign` 1) or retracts (-1) `embedding` in `key`'s pending delta.
fn record(pending: &mut BTreeMap<String, VectorDelta>, key: &str, embedding: &[f32], sign: i64) {
    match pending.get_mut(key) {
        Some(delta) => delta.add(embedding, sign),
        None => {
            let mut delta = VectorDelta::default();
            delta.add(embedding, sign);
            pending.insert(key.to_owned(), delta);
        }
    }
}

/// A key's sum (as last settled), its members in the window, and how many
/// holders ([`CentroidWindow::acquire`]) keep its slot: a slot is reused only
/// once nobody holds it, its window is empty and its sum settled.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Keyed {
    key: String,
    sum: VectorSum,
    holders: u32,
    members: u32,
}

/// Centroids per key over a sliding window. Members are added with their
/// time; [`CentroidWindow::expire`] retracts those that left the window.
/// Both only record the change ([`CentroidWindow::take_deltas`]); the sums
/// read by [`CentroidWindow::sum`] and [`CentroidWindow::get`] are those
/// the accumulated deltas give back ([`CentroidWindow::settle`]).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct CentroidWindow {
    window_secs: i64,
    /// Key → slot in `slots`. Never iterated, so hashed, not ordered.
    ids: HashMap<String, u32, FixedState>,
    slots: Vec<Keyed>,
    free: Vec<u32>,
    /// (time, key's slot, member id) → the member's embedding (shared with
    /// the idea state, not copied), for retraction. A member keeps its key's
    /// sum non-empty, so the slot cannot be freed or reused while it is here;
    /// and the key is a slot, the member an id, so an entry allocates
    /// nothing of its own (there is one per idea in the window, per window).
    members: BTreeMap<(i64, u32, IdeaId), SharedEmbedding>,
    /// This epoch's change per key, not yet taken.
    pending: BTreeMap<String, VectorDelta>,
    /// The keys of the deltas last taken, sorted: their sums change at the
    /// next settle, and their views are re-emitted.
    changed: Vec<String>,
}

impl CentroidWindow {
    pub fn new(window_secs: i64) -> Self {
        CentroidWindow {
            window_secs: window_secs.max(1),
            ids: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            slots: Vec::new(),
            free: Vec::new(),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            changed: Vec::new(),
        }
    }

    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }

    /// `key`'s slot, created empty if it has none.
    fn slot_of(&mut self, key: &str) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let keyed = Keyed {
            key: key.to_owned(),
            sum: VectorSum::default(),
            holders: 0,
            members: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = keyed;
                id
            }
            None => {
                self.slots.push(keyed);
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(key.to_owned(), id);
        id
    }

    /// Frees slot `id` once nobody holds it, nothing of its key is in the
    /// window and no change of it waits to settle, so that keys seen once do
    /// not accumulate on an endless stream.
    fn free_if_unused(&mut self, id: u32) {
        let keyed = &mut self.slots[id as usize];
        let settling = || {
            self.pending.contains_key(&keyed.key) || self.changed.binary_search(&keyed.key).is_ok()
        };
        if keyed.holders == 0 && keyed.members == 0 && !settling() {
            self.ids.remove(&keyed.key);
            keyed.sum = VectorSum::default();
            keyed.key = String::new();
            self.free.push(id);
        }
    }

    /// Holds `key`'s slot until [`CentroidWindow::release`]: the holder then
    /// reads the key's centroid with [`CentroidWindow::sum`].
    pub fn acquire(&mut self, key: &str) -> CentroidSlot {
        let id = self.slot_of(key);
        self.slots[id as usize].holders += 1;
        CentroidSlot::new(id)
    }

    pub fn release(&mut self, slot: CentroidSlot) {
        let keyed = &mut self.slots[slot.index()];
        debug_assert!(
            keyed.holders > 0,
            "a centroid slot released more often than held"
        );
        keyed.holders = keyed.holders.saturating_sub(1);
        self.free_if_unused(slot.index() as u32);
    }

    /// The centroid of a held slot's key: `None` while its window is empty.
    /// Every non-empty key's settled sum as one delta, by key: what a
    /// resumed state gives the collection of sums that starts empty.
    pub fn settled_sums(&self) -> Vec<(String, VectorDelta)> {
        let mut sums: Vec<(String, VectorDelta)> = self
            .ids
            .iter()
            .map(|(key, id)| (key, &self.slots[*id as usize].sum))
            .filter(|(_, s)| s.n != 0 || s.sum.iter().any(|c| *c != 0))
            .map(|(key, s)| {
                (
                    key.clone(),
                    VectorDelta {
                        sum: s.sum.clone(),
                        n: s.n,
                    },
                )
            })
            .collect();
        sums.sort_by(|a, b| a.0.cmp(&b.0));
        sums
    }

    /// A copy that answers [`CentroidWindow::sum`] as this one does now
    /// (the sums with their f64 mirrors), without the members (scores
    /// evaluated later against today's centroids).
    pub fn sums_only(&self) -> Self {
        CentroidWindow {
            window_secs: self.window_secs,
            ids: HashMap::with_hasher(FixedState::default()),
            slots: self.slots.clone(),
            free: Vec::new(),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            changed: Vec::new(),
        }
    }

    pub fn sum(&self, slot: CentroidSlot) -> Option<&VectorSum> {
        let sum = &self.slots[slot.index()].sum;
        (sum.n > 0).then_some(sum)
    }

    /// Adds `member` of `key` at `time`; returns false if it was already in.
    pub fn insert(
        &mut self,
        key: &str,
        member: IdeaId,
        time: i64,
        embedding: SharedEmbedding,
    ) -> bool {
        let id = self.slot_of(key);
        let k = (time, id, member);
        if self.members.contains_key(&k) {
            // Nothing was added: a new slot is given back.
            self.free_if_unused(id);
            return false;
        }
        self.slots[id as usize].members += 1;
        record(&mut self.pending, key, &embedding, 1);
        self.members.insert(k, embedding);
        true
    }

    /// Retracts members whose time + window ≤ `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        let cutoff = watermark - self.window_secs;
        while let Some(entry) = self.members.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let ((_, id, _), embedding) = entry.remove_entry();
            let keyed = &mut self.slots[id as usize];
            keyed.members -= 1;
            record(&mut self.pending, &keyed.key, &embedding, -1);
        }
    }

    /// This epoch's change of each key's sum, in key order (zero changes
    /// left out: the sum stays). The keys are re-emitted
    /// ([`CentroidWindow::take_changed`]) once their sums [settle](CentroidWindow::settle).
    pub fn take_deltas(&mut self) -> Vec<(String, VectorDelta)> {
        let pending = std::mem::take(&mut self.pending);
        self.changed = pending.keys().cloned().collect();
        pending.into_iter().filter(|(_, d)| !d.is_zero()).collect()
    }

    /// Sets the sums of keys whose accumulated deltas changed (`None`: the
    /// key's window is empty). A key with no slot is held by no idea and has
    /// no members, so only its view row (from [`CentroidWindow::get`]) reads it.
    pub fn settle(&mut self, sums: impl IntoIterator<Item = (String, Option<VectorSum>)>) {
        for (key, sum) in sums {
            if let Some(id) = self.ids.get(&key) {
                self.slots[*id as usize].sum = sum.unwrap_or_default();
            }
        }
        if cfg!(debug_assertions) {
            for key in &self.changed {
                if let Some(id) = self.ids.get(key) {
                    let keyed = &self.slots[*id as usize];
                    assert_eq!(
                        keyed.sum.n,
                        i64::from(keyed.members),
                        "the settled sum of {key} counts its members"
                    );
                }
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&VectorSum> {
        let sum = &self.slots[*self.ids.get(key)? as usize].sum;
        (sum.n > 0).then_some(sum)
    }

    /// Computes every changed sum's f64 mirror (see [`VectorSum::refresh_mirror`]).
    pub fn refresh_mirrors(&mut self) {
        self.slots
            .iter_mut()
            .filter(|k| k.sum.n > 0)
            .for_each(|k| k.sum.refresh_mirror());
    }

    /// Keys whose centroid changed at the last settle, sorted; their slots
    /// may be freed from now on.
    pub fn take_changed(&mut self) -> Vec<String> {
        let changed = std::mem::take(&mut self.changed);
        for key in &changed {
            if let Some(id) = self.ids.get(key).copied() {
                self.free_if_unused(id);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_cosines_are_bit_identical_to_single_ones() {
        // Deterministic pseudo-random vectors (no rng needed for the point).
        let vector = |seed: u64| -> Vec<f32> {
            (0..EMBEDDING_DIM as u64)
                .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
                .collect()
        };
        let mut a = VectorSum::default();
        let mut b = VectorSum::default();
        for seed in 1..4 {
            a.add(&fixed_point(&vector(seed)), 1);
            b.add(&fixed_point(&vector(seed + 10)), 1);
        }
        let v = vector(2);
        let vv = norm2(&v);
        for (ea, eb) in [(false, false), (true, false), (false, true), (true, true)] {
            let single = (
                a.cosine_with_norm(&v, vv, ea),
                b.cosine_with_norm(&v, vv, eb),
            );
            let paired = cosines_with_norm(&v, vv, Some((&mut a, ea)), Some((&mut b, eb)));
            assert_eq!(
                (single.0.map(f64::to_bits), single.1.map(f64::to_bits)),
                (paired.0.map(f64::to_bits), paired.1.map(f64::to_bits))
            );
        }
        // One side missing or empty.
        let mut empty = VectorSum::default();
        assert_eq!(
            cosines_with_norm(&v, vv, Some((&mut a, false)), None),
            (a.cosine_with_norm(&v, vv, false), None)
        );
        assert_eq!(
            cosines_with_norm(&v, vv, Some((&mut empty, false)), Some((&mut b, false))),
            (None, b.cosine_with_norm(&v, vv, false))
        );
        // A remainder after the lane chunks.
        let (x, y, z) = (&v[..23], &[0.5f64; 23][..], &[-0.25f64; 23][..]);
        let (dy, dz) = crate::embed::dot2_lanes_f64(x, y, z);
        assert_eq!(dy.to_bits(), dot_lanes_f64(x, y).to_bits());
        assert_eq!(dz.to_bits(), dot_lanes_f64(x, z).to_bits());
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = 1.0;
        v
    }

    /// Takes the window's deltas and settles it with their accumulation, as
    /// the pipeline's differential reduce would.
    fn settle(w: &mut CentroidWindow, sums: &mut AccumulatedSums<String>) {
        let deltas = w.take_deltas();
        let settled = sums.accumulate(deltas);
        w.settle(
            settled
                .into_iter()
                .map(|(k, d)| (k, d.map(VectorSum::from))),
        );
    }

    #[test]
    fn mean_slides_with_the_window() {
        let mut w = CentroidWindow::new(100);
        let mut sums = AccumulatedSums::default();
        w.insert("cats", "a".into(), 0, unit(0).into());
        w.insert("cats", "b".into(), 50, unit(1).into());
        assert!(w.get("cats").is_none(), "not settled yet");
        settle(&mut w, &mut sums);
        let m = w.get("cats").unwrap().mean().unwrap();
        assert_eq!((m[0], m[1]), (0.5, 0.5));
        assert_eq!(w.take_changed(), vec!["cats".to_owned()]);
        w.expire(100); // a leaves at 0 + 100
        settle(&mut w, &mut sums);
        let m = w.get("cats").unwrap().mean().unwrap();
        assert_eq!((m[0], m[1]), (0.0, 1.0));
        assert_eq!(w.take_changed(), vec!["cats".to_owned()]);
        w.expire(150);
        settle(&mut w, &mut sums);
        assert!(w.get("cats").is_none());
    }

    #[test]
    fn held_slots_follow_their_key_and_free_when_unused() {
        let mut w = CentroidWindow::new(100);
        let mut sums = AccumulatedSums::default();
        let cats = w.acquire("cats");
        assert!(w.sum(cats).is_none(), "held but empty");
        w.insert("cats", "a".into(), 0, unit(0).into());
        w.insert("dogs", "b".into(), 0, unit(1).into());
        settle(&mut w, &mut sums);
        assert_eq!(w.sum(cats).unwrap(), w.get("cats").unwrap());
        w.take_changed();
        w.expire(100);
        settle(&mut w, &mut sums);
        assert!(w.sum(cats).is_none() && w.get("dogs").is_none());
        w.take_changed();
        // "dogs" had no holder: its slot is reused, never "cats"'s.
        w.insert("birds", "c".into(), 150, unit(2).into());
        settle(&mut w, &mut sums);
        assert!(w.sum(cats).is_none());
        assert_eq!(w.get("birds").unwrap().n, 1);
        w.insert("cats", "d".into(), 150, unit(3).into());
        settle(&mut w, &mut sums);
        assert_eq!(w.sum(cats).unwrap().sum[3], 1 << 20);
        w.release(cats);
        w.expire(250);
        settle(&mut w, &mut sums);
        w.take_changed();
        assert_eq!(w.slots.len(), 2);
        assert_eq!(
            w.free.len(),
            2,
            "cats and birds freed once unheld, empty and settled"
        );
        let fish = w.acquire("fish");
        assert!(w.sum(fish).is_none());
    }

    #[test]
    fn a_key_emptied_and_refilled_in_one_epoch_keeps_its_sum() {
        // The same vector leaves and comes back (as another member): the
        // epoch's delta is zero, so no new sum arrives, and the key's slot
        // must not have been freed and reset meanwhile.
        let mut w = CentroidWindow::new(100);
        let mut sums = AccumulatedSums::default();
        w.insert("cats", "a".into(), 0, unit(0).into());
        settle(&mut w, &mut sums);
        w.take_changed();
        w.expire(100);
        w.insert("cats", "b".into(), 100, unit(0).into());
        assert!(w.take_deltas().is_empty(), "a zero change is not sent");
        w.settle(Vec::new());
        assert_eq!(w.take_changed(), vec!["cats".to_owned()]);
        assert_eq!(w.get("cats").unwrap().n, 1);
    }

    #[test]
    fn deltas_form_an_abelian_group() {
        let mut a = VectorDelta::default();
        a.add(&unit(0), 1);
        a.add(&unit(1), 1);
        let mut b = VectorDelta::default();
        b.add(&unit(1), -1);
        // Commutative, with the empty delta as zero.
        let mut ab = a.clone();
        ab.plus_equals(&b);
        let mut ba = b.clone();
        ba.plus_equals(&a);
        assert_eq!(ab, ba);
        let mut z = VectorDelta::zero();
        z.plus_equals(&ab);
        assert_eq!(z, ab);
        assert!(VectorDelta::zero().is_zero());
        // x + (−x) = 0, whatever its representation.
        let mut neg = ab.clone();
        neg.negate();
        neg.plus_equals(&ab);
        assert!(neg.is_zero());
        assert_eq!(VectorSum::from(ab).sum[0], 1 << 20);
    }

    #[test]
    fn order_does_not_matter() {
        let vs: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                (0..EMBEDDING_DIM)
                    .map(|j| ((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.4)
                    .collect()
            })
            .collect();
        let mut a = VectorSum::default();
        let mut b = VectorSum::default();
        for v in &vs {
            a.add(&fixed_point(v), 1);
        }
        for v in vs.iter().rev() {
            b.add(&fixed_point(v), 1);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn cosine_without_itself() {
        let mut s = VectorSum::default();
        let (x, y) = (unit(0), unit(1));
        s.add(&fixed_point(&x), 1);
        assert_eq!(s.cosine(&x, true), None);
        s.add(&fixed_point(&y), 1);
        let c = s.cosine(&x, true).unwrap();
        assert!(c.abs() < 1e-12);
        let c = s.cosine(&x, false).unwrap();
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9);
    }
}
