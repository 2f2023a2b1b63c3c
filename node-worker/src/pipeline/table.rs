//! The connection table: each flow boxed, with its key inside the box. A hash table allocates a
//! bucket for every slot, used or not (up to twice the flows, and old and new tables together while it
//! grows): a bucket here is one pointer (8 bytes), where a map from key to boxed flow needs the key
//! too (80 bytes), and a map to the flow itself the whole flow (~600 bytes). With the default
//! `maxFlows` (65 536: 131 072 buckets) that is 1 MiB instead of 10 or 80.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::flow::Flow;
use crate::tcp::FlowKey;

pub(super) struct FlowTable<S> {
    table: HashTable<Box<Flow>>,
    hasher: S,
}

impl<S: BuildHasher + Default> Default for FlowTable<S> {
    fn default() -> Self {
        FlowTable {
            table: HashTable::new(),
            hasher: S::default(),
        }
    }
}

impl<S: BuildHasher> FlowTable<S> {
    fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn contains_key(&self, key: &FlowKey) -> bool {
        self.get(key).is_some()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.table
            .find(self.hash(key), |f| f.key == *key)
            .map(|f| &**f)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let hash = self.hash(key);
        self.table
            .find_mut(hash, |f| f.key == *key)
            .map(|f| &mut **f)
    }

    /// Tracks `flow` under its key, replacing a flow tracked under the same key.
    pub fn insert(&mut self, flow: Box<Flow>) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(flow.key);
        match self.table.find_entry(hash, |f| f.key == flow.key) {
            Ok(mut tracked) => *tracked.get_mut() = flow,
            Err(_) => {
                self.table
                    .insert_unique(hash, flow, |f| hasher.hash_one(f.key));
            }
        }
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Box<Flow>> {
        let hash = self.hash(key);
        let entry = self.table.find_entry(hash, |f| f.key == *key).ok()?;
        Some(entry.remove().0)
    }

    /// Gives memory back after a flood: a table holding under a quarter of what it has room for
    /// shrinks to twice its flows (a table never shrinks by itself; the halving margin keeps a
    /// table that hovers around a size from growing and shrinking again and again).
    pub fn shrink_when_sparse(&mut self) {
        if self.table.len() < self.table.capacity() / 4 {
            let hasher = &self.hasher;
            self.table
                .shrink_to(self.table.len() * 2, |f| hasher.hash_one(f.key));
        }
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.table.iter().map(|f| &**f)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Flow> {
        self.table.iter_mut().map(|f| &mut **f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Connection;
    use crate::memory::FlowBudget;
    use crate::tcp::reassembly::Reassembler;

    fn flow(key: FlowKey, interface: u32) -> Box<Flow> {
        Box::new(Flow {
            key,
            conn: Connection::new(None, [false; 2], 1024),
            reassembly: [Reassembler::default(), Reassembler::default()],
            budget: FlowBudget::default(),
            last_seen_us: 0,
            interface,
            syn_seq: None,
            mirror: false,
            payload_seen: false,
            copy_checked: false,
        })
    }

    fn key(port: u16) -> FlowKey {
        FlowKey::of(
            "10.0.0.1:80".parse().unwrap(),
            std::net::SocketAddr::from(([10, 0, 0, 2], port)),
        )
        .0
    }

    #[test]
    fn flows_are_found_replaced_and_removed_by_key() {
        eprintln!("Flow: {} bytes", std::mem::size_of::<Flow>());
        // 328: an allocation of 336 bytes with malloc's header (it was 352 at 336).
        assert!(std::mem::size_of::<Flow>() <= 328);
        let mut t = FlowTable::<std::hash::RandomState>::default();
        for port in 0..1000 {
            t.insert(flow(key(port), 0));
        }
        assert_eq!(t.len(), 1000);
        t.insert(flow(key(7), 9));
        assert_eq!(t.len(), 1000, "same key: replaced");
        assert_eq!(t.get(&key(7)).map(|f| f.interface), Some(9));
        assert!(t.contains_key(&key(999)) && !t.contains_key(&key(1000)));
        if let Some(f) = t.get_mut(&key(8)) {
            f.last_seen_us = 5;
        }
        assert_eq!(t.iter().filter(|f| f.last_seen_us == 5).count(), 1);
        assert_eq!(t.remove(&key(8)).map(|f| f.key), Some(key(8)));
        assert!(t.remove(&key(8)).is_none());
        assert_eq!(t.iter_mut().count(), 999);
        t.shrink_when_sparse();
        let full = t.capacity();
        assert!(full >= 999, "not sparse: kept");
        for port in 10..1000 {
            t.remove(&key(port));
        }
        t.shrink_when_sparse();
        assert!(t.capacity() < full / 8, "{} of {full}", t.capacity());
        assert!(t.contains_key(&key(7)) && t.contains_key(&key(9)));
    }
}
