//! A bounded cache from text to embedding, keyed by a 128-bit hash of the exact text.
//! Eviction is first-in first-out: deterministic and O(1), which matters more
//! here than LRU's slightly better hit rate on trend streams.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

pub struct EmbeddingCache {
    capacity: usize,
    map: HashMap<u128, Vec<f32>>,
    order: VecDeque<u128>,
    hits: u64,
    misses: u64,
}

impl EmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        EmbeddingCache {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn key(text: &str) -> u128 {
        let digest = Sha256::digest(text.as_bytes());
        u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
    }

    pub fn get(&mut self, key: u128) -> Option<&Vec<f32>> {
        let found = self.map.get(&key);
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    pub fn insert(&mut self, key: u128, embedding: Vec<f32>) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key);
        self.map.insert(key, embedding);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first() {
        let mut c = EmbeddingCache::new(2);
        c.insert(1, vec![1.0]);
        c.insert(2, vec![2.0]);
        c.insert(3, vec![3.0]);
        assert!(c.get(1).is_none());
        assert_eq!(c.get(3), Some(&vec![3.0]));
        assert_eq!(c.len(), 2);
    }
}
