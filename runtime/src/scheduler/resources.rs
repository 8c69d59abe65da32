//! The resource model: what a node offers, what a request asks for, what an allocation holds,
//! and the fit test between them (including which GPU devices a request gets).

use std::collections::BTreeMap;

/// One GPU device of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDevice {
    pub index: u32,
    pub model: String,
}

/// What a node offers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeCapacity {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: Vec<GpuDevice>,
    pub custom: BTreeMap<String, f64>,
    pub labels: BTreeMap<String, String>,
}

/// What an actor asks for. `gpu_milli` below 1000 is a share of one device; 1000 or more must be
/// a whole number of devices.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpu_milli: u64,
    pub custom: BTreeMap<String, f64>,
    pub label_selector: BTreeMap<String, String>,
}

/// A share of one GPU device.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuShare {
    pub index: u32,
    pub milli: u64,
}

/// What was reserved for one actor on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub node_id: String,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: Vec<GpuShare>,
    pub custom: BTreeMap<String, f64>,
}

/// The first thing a node lacks for a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Shortfall {
    #[error("label {key}={wanted} wanted, node has {found}")]
    Label {
        key: String,
        wanted: String,
        found: String,
    },
    #[error("CPU: {wanted} milli-cores wanted, {free} free of {total}")]
    Cpu { wanted: u64, free: u64, total: u64 },
    #[error("memory: {wanted} bytes wanted, {free} free of {total}")]
    Memory { wanted: u64, free: u64, total: u64 },
    #[error("GPU: {wanted} wanted, {free} free of {total} devices")]
    Gpu {
        wanted: String,
        free: String,
        total: usize,
    },
    #[error("resource {name}: {wanted} wanted, {free} free of {total}")]
    Custom {
        name: String,
        wanted: f64,
        free: f64,
        total: f64,
    },
}

/// Checks `request` against one node's free resources and returns the GPU shares it would get.
pub(crate) fn fit(
    capacity: &NodeCapacity,
    used_cpu_milli: u64,
    used_memory_bytes: u64,
    used_gpu_milli: &[u64],
    used_custom: &BTreeMap<String, f64>,
    request: &Request,
) -> Result<Vec<GpuShare>, Shortfall> {
    for (key, wanted) in &request.label_selector {
        let found = capacity.labels.get(key);
        if found != Some(wanted) {
            return Err(Shortfall::Label {
                key: key.clone(),
                wanted: wanted.clone(),
                found: found
                    .cloned()
                    .unwrap_or_else(|| "no such label".to_string()),
            });
        }
    }
    let free_cpu = capacity.cpu_milli.saturating_sub(used_cpu_milli);
    if request.cpu_milli > free_cpu {
        return Err(Shortfall::Cpu {
            wanted: request.cpu_milli,
            free: free_cpu,
            total: capacity.cpu_milli,
        });
    }
    let free_memory = capacity.memory_bytes.saturating_sub(used_memory_bytes);
    if request.memory_bytes > free_memory {
        return Err(Shortfall::Memory {
            wanted: request.memory_bytes,
            free: free_memory,
            total: capacity.memory_bytes,
        });
    }
    for (name, wanted) in &request.custom {
        let total = capacity.custom.get(name).copied().unwrap_or(0.0);
        let free = total - used_custom.get(name).copied().unwrap_or(0.0);
        if *wanted > free + 1e-9 {
            return Err(Shortfall::Custom {
                name: name.clone(),
                wanted: *wanted,
                free,
                total,
            });
        }
    }
    let gpus = pick_gpus(capacity, used_gpu_milli, request.gpu_milli)?;
    Ok(gpus)
}

fn pick_gpus(
    capacity: &NodeCapacity,
    used_gpu_milli: &[u64],
    gpu_milli: u64,
) -> Result<Vec<GpuShare>, Shortfall> {
    if gpu_milli == 0 {
        return Ok(Vec::new());
    }
    let total = capacity.gpus.len();
    if gpu_milli < 1000 {
        // A fraction lands on one device: the one it fills best, so whole devices stay whole.
        let best = capacity
            .gpus
            .iter()
            .zip(used_gpu_milli)
            .filter(|(_, used)| 1000 - **used >= gpu_milli)
            .min_by_key(|(gpu, used)| (1000 - **used - gpu_milli, gpu.index));
        return match best {
            Some((gpu, _)) => Ok(vec![GpuShare {
                index: gpu.index,
                milli: gpu_milli,
            }]),
            None => Err(Shortfall::Gpu {
                wanted: format!("{:.3} of one device", gpu_milli as f64 / 1000.0),
                free: format!(
                    "at most {:.3} on any device",
                    used_gpu_milli
                        .iter()
                        .map(|used| 1000 - used)
                        .max()
                        .unwrap_or(0) as f64
                        / 1000.0
                ),
                total,
            }),
        };
    }
    let whole = (gpu_milli / 1000) as usize;
    let free: Vec<&GpuDevice> = capacity
        .gpus
        .iter()
        .zip(used_gpu_milli)
        .filter(|(_, used)| **used == 0)
        .map(|(gpu, _)| gpu)
        .collect();
    if free.len() < whole {
        return Err(Shortfall::Gpu {
            wanted: format!("{whole} whole devices"),
            free: format!("{} whole", free.len()),
            total,
        });
    }
    Ok(free
        .into_iter()
        .take(whole)
        .map(|gpu| GpuShare {
            index: gpu.index,
            milli: 1000,
        })
        .collect())
}
