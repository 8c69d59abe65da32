//! Unit tests of placement and bookkeeping.

use super::*;

fn node(cpus: u64, gpus: u32) -> NodeCapacity {
    NodeCapacity {
        cpu_milli: cpus * 1000,
        memory_bytes: 64 << 30,
        gpus: (0..gpus)
            .map(|index| GpuDevice {
                index,
                model: "H100".to_string(),
            })
            .collect(),
        custom: BTreeMap::new(),
        labels: BTreeMap::new(),
    }
}

fn gpus(milli: u64) -> Request {
    Request {
        cpu_milli: 1000,
        gpu_milli: milli,
        ..Request::default()
    }
}

#[test]
fn whole_gpus_get_distinct_devices_and_are_released() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(16, 4));
    let first = scheduler.place(&gpus(2000)).expect("first");
    let second = scheduler.place(&gpus(2000)).expect("second");
    let mut devices: Vec<u32> = first
        .gpus
        .iter()
        .chain(&second.gpus)
        .map(|g| g.index)
        .collect();
    devices.sort();
    assert_eq!(devices, vec![0, 1, 2, 3]);
    assert!(matches!(
        scheduler.place(&gpus(1000)),
        Err(PlacementError::Busy(_))
    ));
    scheduler.release(&first);
    let third = scheduler.place(&gpus(1000)).expect("after release");
    assert!(first.gpus.iter().any(|g| g.index == third.gpus[0].index));
}

#[test]
fn fractions_share_one_device_before_opening_another() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(16, 2));
    let a = scheduler.place(&gpus(500)).expect("a");
    let b = scheduler.place(&gpus(500)).expect("b");
    assert_eq!(a.gpus[0].index, b.gpus[0].index);
    let usage = scheduler.usage("a").expect("usage");
    assert_eq!(usage.gpu_milli.iter().sum::<u64>(), 1000);
    assert!(usage.gpu_milli.contains(&0), "the other device stays whole");
}

#[test]
fn infeasible_names_what_no_node_has() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(8, 8));
    scheduler.add_node("b", node(8, 4));
    let err = scheduler.place(&gpus(16_000)).expect_err("16 GPUs");
    let PlacementError::Infeasible(message) = err else {
        panic!("expected infeasible, got {err:?}");
    };
    assert!(message.contains("16 whole devices"), "{message}");
    let mut labelled = gpus(0);
    labelled.label_selector.insert("zone".into(), "eu".into());
    let err = scheduler.place(&labelled).expect_err("label");
    assert!(err.to_string().contains("zone=eu"), "{err}");
}

#[test]
fn best_fit_prefers_the_fuller_node() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("big", node(16, 8));
    scheduler.add_node("small", node(16, 2));
    let placed = scheduler.place(&gpus(1000)).expect("place");
    assert_eq!(placed.node_id, "small");
}

#[test]
fn custom_resources_are_counted() {
    let mut scheduler = Scheduler::new();
    let mut capacity = node(4, 0);
    capacity.custom.insert("tpu".into(), 2.0);
    scheduler.add_node("a", capacity);
    let mut request = gpus(0);
    request.custom.insert("tpu".into(), 1.5);
    let first = scheduler.place(&request).expect("first");
    assert!(matches!(
        scheduler.place(&request),
        Err(PlacementError::Busy(_))
    ));
    scheduler.release(&first);
    scheduler.place(&request).expect("after release");
}

#[test]
fn no_nodes_is_infeasible() {
    let mut scheduler = Scheduler::new();
    assert!(matches!(
        scheduler.place(&gpus(0)),
        Err(PlacementError::Infeasible(_))
    ));
}
