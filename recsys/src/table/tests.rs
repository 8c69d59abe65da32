use super::*;
use crate::features::{shard_of, FeatureId};

fn config(min_count: u32, ttl_s: u64) -> TableConfig {
    TableConfig {
        dim: 2,
        slots: SlotSet {
            slots: vec![(1, "user".into()), (2, "item".into())],
        },
        min_count,
        ttl_s,
        learning_rate: 0.5,
        initial_accumulator: 0.25,
        init_scale: 0.1,
        seed: 7,
        retained_seals: 3,
    }
}

fn id(value: u64) -> u64 {
    FeatureId::new(1, value).unwrap().0
}

fn batch(step: u64, time: u64, ids: &[u64], grad: f32) -> UpdateBatch {
    UpdateBatch {
        step,
        event_time: time,
        ids: ids.to_vec(),
        counts: vec![1; ids.len()],
        grads: vec![grad; ids.len() * 3],
    }
}

#[test]
fn adagrad_moves_each_value_by_rate_times_grad_over_root_of_squares() {
    let mut table = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    let before = table.initial_row(id(1));
    assert!(table.apply(&batch(1, 10, &[id(1)], 2.0)).unwrap());
    let after = table.lookup(&[id(1)]).unwrap();
    // accum = 0.25 + 4, step = 0.5 * 2 / sqrt(4.25)
    let first = 0.5 * 2.0 / 4.25f32.sqrt();
    for (b, a) in before.iter().zip(&after) {
        assert!((b - first - a).abs() < 1e-6, "{b} -> {a}");
    }
    table.apply(&batch(2, 11, &[id(1)], 1.0)).unwrap();
    let again = table.lookup(&[id(1)]).unwrap();
    // accum = 5.25, step = 0.5 / sqrt(5.25)
    assert!((after[0] - 0.5 / 5.25f32.sqrt() - again[0]).abs() < 1e-6);
    let mut zero = config(1, 0);
    zero.initial_accumulator = 0.0;
    assert!(EmbeddingTable::new(zero, 0, 1)
        .err()
        .unwrap()
        .to_string()
        .contains("initial accumulator"));
}

#[test]
fn ids_below_the_admission_count_read_zeros_and_get_a_row_on_reaching_it() {
    let mut table = EmbeddingTable::new(config(3, 0), 0, 1).unwrap();
    table.apply(&batch(1, 1, &[id(5)], 1.0)).unwrap();
    table.apply(&batch(2, 2, &[id(5)], 1.0)).unwrap();
    assert_eq!(table.lookup(&[id(5)]).unwrap(), vec![0.0; 3]);
    assert_eq!(table.stats().not_admitted_updates, 2);
    table.apply(&batch(3, 3, &[id(5)], 1.0)).unwrap();
    assert_eq!(table.rows(), 1);
    assert_ne!(table.lookup(&[id(5)]).unwrap(), vec![0.0; 3]);
}

#[test]
fn a_step_applied_twice_changes_nothing() {
    let mut table = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    table.apply(&batch(1, 1, &[id(1)], 1.0)).unwrap();
    let once = table.lookup(&[id(1)]).unwrap();
    assert!(!table.apply(&batch(1, 1, &[id(1)], 1.0)).unwrap());
    assert_eq!(table.lookup(&[id(1)]).unwrap(), once);
    // Sealed at step 2 without step 2's update: a late update of step 2 is stale.
    table.seal(2).unwrap();
    assert!(!table.apply(&batch(2, 2, &[id(1)], 1.0)).unwrap());
    assert_eq!(table.lookup(&[id(1)]).unwrap(), once);
    assert!(table.apply(&batch(3, 3, &[id(1)], 1.0)).unwrap());
}

#[test]
fn rows_unseen_for_the_ttl_are_evicted_and_reported_removed() {
    let mut table = EmbeddingTable::new(config(1, 100), 0, 1).unwrap();
    table.apply(&batch(1, 0, &[id(1), id(2)], 1.0)).unwrap();
    table.apply(&batch(2, 90, &[id(2)], 1.0)).unwrap();
    table.apply(&batch(3, 150, &[id(2)], 1.0)).unwrap();
    assert_eq!(
        table.rows(),
        1,
        "id 1 was last seen at 0, the horizon is 50"
    );
    assert_eq!(table.stats().evicted, 1);
    let delta = table.seal(3).unwrap();
    assert_eq!(delta.removed, vec![id(1)]);
    assert_eq!(delta.ids, vec![id(2)]);
}

#[test]
fn malformed_input_is_refused_by_name() {
    let mut table = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    let bad_slot = FeatureId::new(9, 1).unwrap().0;
    assert!(table
        .lookup(&[bad_slot])
        .unwrap_err()
        .to_string()
        .contains("slot 9"));
    let mut short = batch(1, 0, &[id(1)], 1.0);
    short.grads.pop();
    assert!(table
        .apply(&short)
        .unwrap_err()
        .to_string()
        .contains("gradient values"));
    let mut nan = batch(1, 0, &[id(1)], 1.0);
    nan.grads[1] = f32::NAN;
    assert!(table
        .apply(&nan)
        .unwrap_err()
        .to_string()
        .contains("not finite"));
    let mut two = EmbeddingTable::new(config(1, 0), 0, 2).unwrap();
    let foreign = (0..100).map(id).find(|i| shard_of(*i, 2) == 1).unwrap();
    assert!(two
        .lookup(&[foreign])
        .unwrap_err()
        .to_string()
        .contains("belongs to shard 1"));
}

#[test]
fn seals_chain_and_a_replica_too_far_behind_gets_a_full_copy_next() {
    let mut table = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    for step in 1..=5u64 {
        table.apply(&batch(step, step, &[id(step)], 1.0)).unwrap();
        table.seal(step).unwrap();
    }
    // A seal asked again answers the same delta.
    assert_eq!(table.seal(5).unwrap().ids, vec![id(5)]);
    // Seals 3, 4, 5 are kept (retained_seals = 3).
    let chain = table.changes(2, 5).unwrap();
    assert_eq!(
        chain.iter().map(|d| d.version).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(chain[0].ids, vec![id(3)]);
    assert!(table.changes(4, 4).unwrap().is_empty());
    assert!(matches!(
        table.changes(5, 6),
        Err(RecsysError::NotSealed { .. })
    ));
    assert!(matches!(
        table.changes(0, 5),
        Err(RecsysError::TooFarBehind { .. })
    ));
    table.apply(&batch(6, 6, &[id(1)], 1.0)).unwrap();
    let full = table.seal(6).unwrap();
    assert!(full.full);
    assert_eq!(full.ids.len(), 5);
    let chain = table.changes(0, 6).unwrap();
    assert_eq!(chain.len(), 1);
    assert!(chain[0].full);
}

#[test]
fn checkpoint_and_log_rebuild_the_same_table_and_a_torn_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    // A TTL of 8 s, swept every 2 s of event time: replay must sweep exactly as the run did.
    let fresh = || EmbeddingTable::new(config(1, 8), 0, 1);
    let (mut files, mut table, _) = ShardFiles::open(dir.path(), fresh).unwrap();
    for step in 1..=6u64 {
        let update = batch(
            step,
            step * 3,
            &[id(step % 3), id(10 + step)],
            0.25 * step as f32,
        );
        files.log(&update).unwrap();
        table.apply(&update).unwrap();
        if step == 3 {
            files.checkpoint(&table).unwrap();
        }
    }
    let ids: Vec<u64> = (0..20).map(id).collect();
    let expected = table.lookup(&ids).unwrap();
    drop(files);
    // A record torn by a crash: a header with no body.
    let log_path = dir.path().join("updates.log");
    let mut bytes = std::fs::read(&log_path).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(&log_path, &bytes).unwrap();
    let (_files, mut rebuilt, replayed) = ShardFiles::open(dir.path(), fresh).unwrap();
    assert_eq!(replayed, 3);
    assert_eq!(rebuilt.version(), 6);
    assert_eq!(rebuilt.lookup(&ids).unwrap(), expected);
    let (before, after) = (table.stats(), rebuilt.stats());
    assert_eq!(
        (after.rows, after.pending_ids, after.admitted, after.evicted),
        (
            before.rows,
            before.pending_ids,
            before.admitted,
            before.evicted
        )
    );
    assert!(before.evicted > 0, "the TTL evicted nothing: {before:?}");
    // Same accumulators: the same next step moves both alike.
    let next = batch(7, 21, &ids, 0.5);
    table.apply(&next).unwrap();
    rebuilt.apply(&next).unwrap();
    assert_eq!(rebuilt.lookup(&ids).unwrap(), table.lookup(&ids).unwrap());
    assert_eq!(std::fs::read(&log_path).unwrap().len(), bytes.len() - 6);
    // Zeros after the last record (a power loss) are a torn tail too.
    let mut zeros = std::fs::read(&log_path).unwrap();
    let whole = zeros.len();
    zeros.extend_from_slice(&[0; 24]);
    std::fs::write(&log_path, &zeros).unwrap();
    let (_files, reopened, _) = ShardFiles::open(dir.path(), fresh).unwrap();
    assert_eq!(reopened.version(), 6);
    assert_eq!(std::fs::read(&log_path).unwrap().len(), whole);
    // A whole record with a wrong checksum is refused, not cut.
    let mut bad = std::fs::read(&log_path).unwrap();
    bad[9] ^= 0xff;
    std::fs::write(&log_path, &bad).unwrap();
    let err = ShardFiles::open(dir.path(), fresh)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn moving_to_more_shards_keeps_every_row_and_its_optimizer_state() {
    let mut old = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    let ids: Vec<u64> = (0..300).map(id).collect();
    old.apply(&batch(1, 1, &ids, 0.5)).unwrap();
    let before = old.lookup(&ids).unwrap();
    let export = old.export_moving(0, 3).unwrap();
    let mut others: Vec<EmbeddingTable> = (1..3)
        .map(|shard| EmbeddingTable::new(config(1, 0), shard, 3).unwrap())
        .collect();
    for table in &mut others {
        table
            .import(&export.for_shard(table.shard, 3, 3), 1)
            .unwrap();
    }
    assert_eq!(
        old.rows() + others.iter().map(|t| t.rows()).sum::<usize>(),
        300
    );
    for (row, &feature) in ids.iter().enumerate() {
        let owner = shard_of(feature, 3);
        let table = if owner == 0 {
            &mut old
        } else {
            &mut others[owner as usize - 1]
        };
        assert_eq!(
            table.lookup(&[feature]).unwrap(),
            before[row * 3..row * 3 + 3]
        );
    }
    // The same gradient moves a moved row as it would have moved the original.
    let moved = *export.ids.first().unwrap();
    let owner = shard_of(moved, 3) as usize - 1;
    let mut reference = EmbeddingTable::new(config(1, 0), 0, 1).unwrap();
    reference.apply(&batch(1, 1, &ids, 0.5)).unwrap();
    reference.apply(&batch(2, 2, &[moved], 0.5)).unwrap();
    others[owner].apply(&batch(2, 2, &[moved], 0.5)).unwrap();
    assert_eq!(
        others[owner].lookup(&[moved]).unwrap(),
        reference.lookup(&[moved]).unwrap()
    );
}
