//! The state file: records survive reopening, removals stick, other formats and damaged files
//! are refused by name, and an older head's job records are moved in.

use super::*;

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("troupe-state-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn change(table: Table, key: &str, value: Option<&[u8]>) -> Change {
    Change {
        table,
        key: key.to_string(),
        value: value.map(|v| v.to_vec()),
    }
}

#[test]
fn records_survive_reopening_and_removals_stick() {
    let dir = temp_dir("reopen");
    {
        let store = StateStore::open(&dir).unwrap();
        store
            .write(&[
                change(Table::Actors, "a", Some(b"one")),
                change(Table::Actors, "b", Some(b"two")),
                change(Table::Kv, "k", Some(b"v")),
            ])
            .unwrap();
        store.write(&[change(Table::Actors, "a", None)]).unwrap();
    }
    let snapshot = StateStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(
        snapshot[&Table::Actors],
        vec![("b".to_string(), b"two".to_vec())]
    );
    assert_eq!(snapshot[&Table::Kv], vec![("k".to_string(), b"v".to_vec())]);
    assert!(snapshot[&Table::Jobs].is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_format_is_refused_with_what_to_do() {
    let dir = temp_dir("format");
    {
        let store = StateStore::open(&dir).unwrap();
        let write = store.db.begin_write().unwrap();
        {
            let mut meta = write.open_table(META).unwrap();
            meta.insert(FORMAT_KEY, b"troupe-head-state/99".as_slice())
                .unwrap();
        }
        write.commit().unwrap();
    }
    let err = StateStore::open(&dir).err().expect("refused").to_string();
    assert!(err.contains("troupe-head-state/99"), "{err}");
    assert!(err.contains("fresh --data-dir"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_file_is_refused_with_what_to_do() {
    let dir = temp_dir("damaged");
    std::fs::write(dir.join(FILE_NAME), vec![0x5a_u8; 64 << 10]).unwrap();
    let err = StateStore::open(&dir).err().expect("refused").to_string();
    assert!(err.contains("state.redb"), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_older_heads_job_records_are_moved_in() {
    let dir = temp_dir("migrate");
    {
        let old = Database::create(dir.join(OLD_JOBS_FILE)).unwrap();
        let write = old.begin_write().unwrap();
        {
            let mut jobs = write.open_table(Table::Jobs.definition()).unwrap();
            jobs.insert("job-1", b"record".as_slice()).unwrap();
        }
        write.commit().unwrap();
    }
    let snapshot = StateStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(
        snapshot[&Table::Jobs],
        vec![("job-1".to_string(), b"record".to_vec())]
    );
    assert!(!dir.join(OLD_JOBS_FILE).exists());
    assert!(dir.join("jobs.redb.migrated").exists());
    // Opening again does not read them twice (or fail on the missing file).
    let again = StateStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(again[&Table::Jobs].len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_writer_commits_in_order_and_durable_waits_for_it() {
    let dir = temp_dir("writer");
    let writer = StateWriter::start(StateStore::open(&dir).unwrap()).unwrap();
    for round in 0..50_u32 {
        writer.send(vec![change(
            Table::Kv,
            "counter",
            Some(round.to_string().as_bytes()),
        )]);
    }
    writer.durable().await.unwrap();
    assert!(writer.failure().is_none());
    drop(writer);
    // The thread lets the file go once the writer is dropped and its queue is empty.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let snapshot = loop {
        match StateStore::open(&dir) {
            Ok(store) => break store.load().unwrap(),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(
        snapshot[&Table::Kv],
        vec![("counter".to_string(), b"49".to_vec())]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_writer_that_failed_says_why_to_every_waiter() {
    let dir = temp_dir("failed");
    let writer = StateWriter::start(StateStore::open(&dir).unwrap()).unwrap();
    writer.send(vec![change(Table::Kv, "k", Some(b"v"))]);
    writer.durable().await.unwrap();
    writer.fail("disk full".to_string());
    writer.send(vec![change(Table::Kv, "k", Some(b"w"))]);
    let err = writer.durable().await.expect_err("not durable");
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(writer.failure().as_deref(), Some("disk full"));
    std::fs::remove_dir_all(&dir).unwrap();
}
