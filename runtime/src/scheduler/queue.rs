//! The pending queue: requests ordered by priority (highest first), then by age (oldest first).
//! A scheduling pass walks it in that order; backfilling lets smaller requests pass a blocked
//! one, but once the oldest blocked request of a priority has waited longer than the starvation
//! limit, nothing of equal or lower priority may pass it, so equals never starve.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

/// Where an entry sits: priority (highest first), then arrival sequence (oldest first).
pub type QueueKey = (Reverse<i32>, u64);

/// Pending entries of type `T` (an actor id, a group id) with priorities and arrival order.
#[derive(Debug, Clone)]
pub struct PendingQueue<T: Clone + Eq + std::hash::Hash> {
    order: BTreeMap<QueueKey, T>,
    position: HashMap<T, QueueKey>,
    next_seq: u64,
}

impl<T: Clone + Eq + std::hash::Hash> Default for PendingQueue<T> {
    fn default() -> Self {
        Self {
            order: BTreeMap::new(),
            position: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> PendingQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item` behind everything of its priority; returns its arrival sequence. An item
    /// already queued keeps its place.
    pub fn push(&mut self, item: T, priority: i32) -> u64 {
        if let Some(key) = self.position.get(&item) {
            return key.1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(item, priority, seq);
        seq
    }

    /// Queues `item` with an earlier arrival sequence (work that lost its place through no fault
    /// of its own, such as a preempted actor or a group's bundles lost with a node, goes ahead of
    /// newer work of equal priority).
    pub fn push_with_seq(&mut self, item: T, priority: i32, seq: u64) {
        self.remove(&item);
        self.insert(item, priority, seq);
    }

    /// Makes the next arrival sequence at least `next` (after items were queued again with the
    /// sequences they had before a restart).
    pub fn advance_seq(&mut self, next: u64) {
        self.next_seq = self.next_seq.max(next);
    }

    fn insert(&mut self, item: T, priority: i32, seq: u64) {
        let key = (Reverse(priority), seq);
        self.order.insert(key, item.clone());
        self.position.insert(item, key);
    }

    pub fn remove(&mut self, item: &T) -> bool {
        match self.position.remove(item) {
            Some(key) => {
                self.order.remove(&key);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, item: &T) -> bool {
        self.position.contains_key(item)
    }

    /// Arrival sequence of a queued item.
    pub fn seq_of(&self, item: &T) -> Option<u64> {
        self.position.get(item).map(|key| key.1)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Items in scheduling order with their priorities.
    pub fn ordered(&self) -> Vec<(T, i32)> {
        self.order
            .iter()
            .map(|((Reverse(priority), _), item)| (item.clone(), *priority))
            .collect()
    }
}

/// One scheduling pass over the queue: remembers the highest priority that a starved request
/// blocks, so that nothing at or below it is placed ahead of it.
#[derive(Debug, Default)]
pub struct Pass {
    blocked_at: Option<i32>,
}

impl Pass {
    /// Whether an entry of `priority` must wait behind a starved one.
    pub fn held_back(&self, priority: i32) -> bool {
        self.blocked_at.is_some_and(|blocked| priority <= blocked)
    }

    /// Records that an entry of `priority` could not be placed after waiting `waited_s`.
    pub fn failed(&mut self, priority: i32, waited_s: f64, starve_after_s: f64) {
        if waited_s >= starve_after_s {
            self.blocked_at = Some(self.blocked_at.map_or(priority, |b| b.max(priority)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_age_and_requeue_keeps_age() {
        let mut queue = PendingQueue::new();
        let old = queue.push("low-old", 0);
        queue.push("high", 5);
        queue.push("low-new", 0);
        let names: Vec<_> = queue.ordered().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["high", "low-old", "low-new"]);
        queue.remove(&"low-old");
        queue.push("lost", 0);
        queue.push_with_seq("low-old", 0, old);
        let names: Vec<_> = queue.ordered().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["high", "low-old", "low-new", "lost"]);
        assert_eq!(
            queue.push("high", 9),
            1,
            "an item already queued keeps its place"
        );
    }

    #[test]
    fn a_starved_entry_holds_back_equals_and_lower_only() {
        let mut pass = Pass::default();
        pass.failed(3, 0.5, 2.0);
        assert!(!pass.held_back(3), "not starved yet: backfill allowed");
        pass.failed(3, 2.5, 2.0);
        assert!(pass.held_back(3));
        assert!(pass.held_back(1));
        assert!(!pass.held_back(4));
    }
}
