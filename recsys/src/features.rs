//! Feature ids and where they live. A feature id is a `u64`: the slot (which kind of feature:
//! user, item, genre...) in the top 8 bits and the value in the low 56, so ids of different
//! slots never collide and a table keeps one row per distinct id (no hashing into buckets).
//! String values are turned into 56-bit values by a fixed hash; integer values are used as they
//! are. Rows are spread over shards by jump consistent hashing (Lamping and Veach, 2014) of the
//! mixed id: the shard of an id depends only on the id and the shard count, and going from N to
//! N+1 shards moves about 1/(N+1) of the rows, all of them to the new shard.

use crate::error::RecsysError;

/// Bits of a feature id that hold the value; the slot takes the rest.
pub const VALUE_BITS: u32 = 56;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;

/// A feature id: a slot and a value within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureId(pub u64);

impl FeatureId {
    /// The id of `value` in `slot`; a value that does not fit in 56 bits is refused.
    pub fn new(slot: u8, value: u64) -> Result<FeatureId, RecsysError> {
        if value > VALUE_MASK {
            return Err(RecsysError::BadFeature {
                id: value,
                why: format!("value {value} of slot {slot} does not fit in {VALUE_BITS} bits"),
            });
        }
        Ok(FeatureId((u64::from(slot) << VALUE_BITS) | value))
    }

    /// The id of a string value in `slot` (FNV-1a, folded to 56 bits).
    pub fn of_str(slot: u8, value: &str) -> FeatureId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in value.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        FeatureId((u64::from(slot) << VALUE_BITS) | ((hash ^ (hash >> VALUE_BITS)) & VALUE_MASK))
    }

    pub fn slot(self) -> u8 {
        (self.0 >> VALUE_BITS) as u8
    }

    pub fn value(self) -> u64 {
        self.0 & VALUE_MASK
    }
}

/// The slots a table accepts: an id whose slot is not declared is malformed and refused by name.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotSet {
    /// `(slot, name)`, for instance `(1, "user")`.
    pub slots: Vec<(u8, String)>,
}

impl SlotSet {
    pub fn name_of(&self, slot: u8) -> Option<&str> {
        self.slots
            .iter()
            .find(|(declared, _)| *declared == slot)
            .map(|(_, name)| name.as_str())
    }

    /// Checks every id's slot; the first id with an undeclared slot is named in the error.
    pub fn check(&self, ids: &[u64]) -> Result<(), RecsysError> {
        for &id in ids {
            let slot = FeatureId(id).slot();
            if self.name_of(slot).is_none() {
                let declared: Vec<String> = self
                    .slots
                    .iter()
                    .map(|(slot, name)| format!("{slot} ({name})"))
                    .collect();
                return Err(RecsysError::BadFeature {
                    id,
                    why: format!(
                        "slot {slot} is not one of the table's slots [{}]",
                        declared.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A 64-bit finalizer (splitmix64's): consecutive ids become unrelated keys.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Jump consistent hash: the bucket in `0..buckets` of `key` (`buckets` at least 1).
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

/// The shard of a feature id among `shards`.
pub fn shard_of(id: u64, shards: u32) -> u32 {
    jump_hash(mix64(id), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_values_round_trip_and_never_collide_across_slots() {
        let a = FeatureId::new(1, 42).unwrap();
        let b = FeatureId::new(2, 42).unwrap();
        assert_ne!(a, b);
        assert_eq!((a.slot(), a.value()), (1, 42));
        assert!(FeatureId::new(1, 1 << 56).is_err());
        assert_eq!(
            FeatureId::of_str(5, "writer"),
            FeatureId::of_str(5, "writer")
        );
        assert_eq!(FeatureId::of_str(5, "writer").slot(), 5);
    }

    #[test]
    fn undeclared_slots_are_refused_by_name() {
        let slots = SlotSet {
            slots: vec![(1, "user".into())],
        };
        assert!(slots.check(&[FeatureId::new(1, 7).unwrap().0]).is_ok());
        let err = slots.check(&[FeatureId::new(9, 7).unwrap().0]).unwrap_err();
        assert!(err.to_string().contains("slot 9"), "{err}");
    }

    #[test]
    fn jump_hash_is_balanced_and_moves_only_to_the_new_shard() {
        let ids: Vec<u64> = (0..100_000u64).collect();
        let mut counts = [0usize; 4];
        for &id in &ids {
            counts[shard_of(id, 4) as usize] += 1;
        }
        for count in counts {
            assert!((23_000..27_000).contains(&count), "unbalanced: {counts:?}");
        }
        let mut moved = 0;
        for &id in &ids {
            let (before, after) = (shard_of(id, 4), shard_of(id, 5));
            if before != after {
                assert_eq!(after, 4, "a row moved between old shards");
                moved += 1;
            }
        }
        assert!((18_000..22_000).contains(&moved), "moved {moved} of 100000");
    }
}
