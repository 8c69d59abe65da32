//! What a node offers: CPU count and memory read from the machine, GPUs detected through the
//! CUDA driver (with the `cuda` feature and a driver present) or declared on the command line.

use troupe_proto::GpuDevice;

/// Logical CPUs of this machine.
pub fn detect_cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

/// Total memory of this machine in bytes (from /proc/meminfo; 0 if unknown).
pub fn detect_memory_bytes() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// GPUs visible through the CUDA driver; empty without the `cuda` feature or without a driver.
pub fn detect_gpus() -> Vec<GpuDevice> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::devices()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Vec::new()
    }
}

/// Declared GPUs: `count` devices numbered from 0, or the given ids, all of one model.
pub fn declared_gpus(count: Option<u32>, ids: Option<&[u32]>, model: &str) -> Vec<GpuDevice> {
    let indexes: Vec<u32> = match (ids, count) {
        (Some(ids), _) => ids.to_vec(),
        (None, Some(count)) => (0..count).collect(),
        (None, None) => Vec::new(),
    };
    indexes
        .into_iter()
        .map(|index| GpuDevice {
            index,
            model: model.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_has_cpus_and_memory() {
        assert!(detect_cpus() >= 1.0);
        assert!(detect_memory_bytes() > 0);
    }

    #[test]
    fn declared_gpus_by_count_or_ids() {
        let by_count = declared_gpus(Some(2), None, "H100");
        assert_eq!(
            by_count.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let by_ids = declared_gpus(None, Some(&[0, 2]), "A100");
        assert_eq!(
            by_ids.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(by_ids.iter().all(|g| g.model == "A100"));
    }
}
