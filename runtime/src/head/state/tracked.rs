//! A map that remembers which keys were written since it was last asked, so the head can keep
//! its records on disk without rewriting everything after each change. Reads go through `Deref`;
//! every way to change an entry goes through a method that marks its key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;

/// The map operations `Tracked` needs from its inner map.
pub(crate) trait KeyedMap: Default {
    type Value;
    fn entry_mut(&mut self, key: &str) -> Option<&mut Self::Value>;
    fn put(&mut self, key: String, value: Self::Value) -> Option<Self::Value>;
    fn take(&mut self, key: &str) -> Option<Self::Value>;
}

impl<V> KeyedMap for HashMap<String, V> {
    type Value = V;
    fn entry_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_mut(key)
    }
    fn put(&mut self, key: String, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn take(&mut self, key: &str) -> Option<V> {
        self.remove(key)
    }
}

impl<V> KeyedMap for BTreeMap<String, V> {
    type Value = V;
    fn entry_mut(&mut self, key: &str) -> Option<&mut V> {
        self.get_mut(key)
    }
    fn put(&mut self, key: String, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn take(&mut self, key: &str) -> Option<V> {
        self.remove(key)
    }
}

/// A string-keyed map whose writes are remembered until `take_changed`.
pub(crate) struct Tracked<M> {
    map: M,
    changed: BTreeSet<String>,
}

impl<M: Default> Default for Tracked<M> {
    fn default() -> Self {
        Tracked {
            map: M::default(),
            changed: BTreeSet::new(),
        }
    }
}

impl<M> Deref for Tracked<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.map
    }
}

impl<M: KeyedMap> Tracked<M> {
    /// The keys written (inserted, changed or removed) since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// Mutable access to one entry; the key counts as changed.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut M::Value> {
        let entry = self.map.entry_mut(key)?;
        self.changed.insert(key.to_string());
        Some(entry)
    }

    /// Mutable access to one entry for fields that are not part of its record on disk (a
    /// heartbeat's time): the key does not count as changed.
    pub fn get_mut_untracked(&mut self, key: &str) -> Option<&mut M::Value> {
        self.map.entry_mut(key)
    }

    pub fn insert(&mut self, key: String, value: M::Value) -> Option<M::Value> {
        self.changed.insert(key.clone());
        self.map.put(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<M::Value> {
        let removed = self.map.take(key)?;
        self.changed.insert(key.to_string());
        Some(removed)
    }

    /// Puts back entries read from disk without counting them as changed.
    pub fn restore(&mut self, key: String, value: M::Value) {
        self.map.put(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_remembered_once_and_reads_are_not() {
        let mut map: Tracked<HashMap<String, u32>> = Tracked::default();
        map.restore("old".to_string(), 1);
        assert!(map.take_changed().is_empty());
        map.insert("a".to_string(), 1);
        assert_eq!(map.get("old"), Some(&1));
        if let Some(value) = map.get_mut("old") {
            *value = 2;
        }
        assert!(map.get_mut("missing").is_none());
        assert_eq!(map.remove("a"), Some(1));
        assert_eq!(map.remove("never"), None);
        let changed: Vec<String> = map.take_changed().into_iter().collect();
        assert_eq!(changed, ["a", "old"]);
        assert!(map.take_changed().is_empty());
    }
}
