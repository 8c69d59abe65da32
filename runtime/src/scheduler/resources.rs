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
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpu_milli: u64,
    pub custom: BTreeMap<String, f64>,
    pub label_selector: BTreeMap<String, String>,
    /// GPU models the request may run on (empty: any); devices of other models are not used.
    pub gpu_models: Vec<String>,
    /// A node the request must (or, when `soft`, should) go to.
    pub node_affinity: Option<NodeAffinity>,
}

/// Pins a request to one node: strictly, or as a preference that falls back to any node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeAffinity {
    pub node_id: String,
    pub soft: bool,
}

impl Request {
    /// Whether a device of `model` may serve this request.
    pub fn accepts_model(&self, model: &str) -> bool {
        self.gpu_models.is_empty() || self.gpu_models.iter().any(|wanted| wanted == model)
    }

    /// Whole devices wanted (0 for a fraction of one device or none).
    pub fn whole_gpus(&self) -> usize {
        if self.gpu_milli >= 1000 {
            (self.gpu_milli / 1000) as usize
        } else {
            0
        }
    }
}

/// A share of one GPU device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuShare {
    pub index: u32,
    pub milli: u64,
}

/// What was reserved for one actor on one node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    #[error("node affinity: the request is pinned to node {wanted}")]
    Affinity { wanted: String },
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

impl Shortfall {
    /// The resource this shortfall is about, for summaries ("GPU", "CPU", ...).
    pub fn resource(&self) -> String {
        match self {
            Shortfall::Label { key, .. } => format!("label {key}"),
            Shortfall::Affinity { .. } => "node affinity".to_string(),
            Shortfall::Cpu { .. } => "CPU".to_string(),
            Shortfall::Memory { .. } => "memory".to_string(),
            Shortfall::Gpu { .. } => "GPU".to_string(),
            Shortfall::Custom { name, .. } => format!("resource {name}"),
        }
    }
}

/// What is in use on one node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeUsage {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Per device, in the order of `NodeCapacity::gpus`.
    pub gpu_milli: Vec<u64>,
    pub custom: BTreeMap<String, f64>,
}

impl NodeUsage {
    /// Nothing in use on a node of `capacity`.
    pub fn empty(capacity: &NodeCapacity) -> Self {
        Self {
            gpu_milli: vec![0; capacity.gpus.len()],
            ..Self::default()
        }
    }

    /// Adds what `allocation` takes.
    pub(crate) fn add(&mut self, capacity: &NodeCapacity, allocation: &Allocation) {
        self.add_parts(
            capacity,
            allocation.cpu_milli,
            allocation.memory_bytes,
            &allocation.gpus,
            &allocation.custom,
        );
    }

    /// Adds what a request of these amounts takes with the devices in `gpus`.
    pub(crate) fn add_parts(
        &mut self,
        capacity: &NodeCapacity,
        cpu_milli: u64,
        memory_bytes: u64,
        gpus: &[GpuShare],
        custom: &BTreeMap<String, f64>,
    ) {
        self.cpu_milli += cpu_milli;
        self.memory_bytes += memory_bytes;
        for share in gpus {
            if let Some(position) = capacity.gpus.iter().position(|g| g.index == share.index) {
                self.gpu_milli[position] += share.milli;
            }
        }
        for (name, amount) in custom {
            *self.custom.entry(name.clone()).or_insert(0.0) += amount;
        }
    }

    /// Takes back what `allocation` held (never below zero).
    pub(crate) fn remove(&mut self, capacity: &NodeCapacity, allocation: &Allocation) {
        self.cpu_milli = self.cpu_milli.saturating_sub(allocation.cpu_milli);
        self.memory_bytes = self.memory_bytes.saturating_sub(allocation.memory_bytes);
        for share in &allocation.gpus {
            if let Some(position) = capacity.gpus.iter().position(|g| g.index == share.index) {
                self.gpu_milli[position] = self.gpu_milli[position].saturating_sub(share.milli);
            }
        }
        for (name, amount) in &allocation.custom {
            if let Some(used) = self.custom.get_mut(name) {
                *used = (*used - amount).max(0.0);
                if *used < 1e-9 {
                    self.custom.remove(name);
                }
            }
        }
    }

    /// Free milli-GPU summed over the devices.
    pub fn free_gpu_milli(&self) -> u64 {
        self.gpu_milli
            .iter()
            .map(|used| 1000 - used.min(&1000))
            .sum()
    }
}

/// Checks `request` against one node's free resources and returns every distinct way to give it
/// GPU devices (one way when it wants none or whole devices; one per distinct device state for a
/// fraction, since which device a fraction lands on shapes the node's fragmentation).
pub(crate) fn fit_options(
    capacity: &NodeCapacity,
    usage: &NodeUsage,
    request: &Request,
) -> Result<Vec<Vec<GpuShare>>, Shortfall> {
    check_non_gpu(capacity, usage, request)?;
    gpu_options(capacity, &usage.gpu_milli, request)
}

/// Fits `wanted` one after the other on a node of `capacity` with `usage` in use; returns the
/// use afterwards and the devices each request got, or `None` if one does not fit.
pub(crate) fn fit_all(
    capacity: &NodeCapacity,
    usage: &NodeUsage,
    wanted: &[&Request],
) -> Option<(NodeUsage, Vec<Vec<GpuShare>>)> {
    let mut usage = usage.clone();
    let mut devices = Vec::with_capacity(wanted.len());
    for request in wanted {
        let options = fit_options(capacity, &usage, request).ok()?;
        let gpus = options.into_iter().next()?;
        usage.add_parts(
            capacity,
            request.cpu_milli,
            request.memory_bytes,
            &gpus,
            &request.custom,
        );
        devices.push(gpus);
    }
    Some((usage, devices))
}

/// The label, CPU, memory and custom-resource part of the fit test.
fn check_non_gpu(
    capacity: &NodeCapacity,
    usage: &NodeUsage,
    request: &Request,
) -> Result<(), Shortfall> {
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
    let free_cpu = capacity.cpu_milli.saturating_sub(usage.cpu_milli);
    if request.cpu_milli > free_cpu {
        return Err(Shortfall::Cpu {
            wanted: request.cpu_milli,
            free: free_cpu,
            total: capacity.cpu_milli,
        });
    }
    let free_memory = capacity.memory_bytes.saturating_sub(usage.memory_bytes);
    if request.memory_bytes > free_memory {
        return Err(Shortfall::Memory {
            wanted: request.memory_bytes,
            free: free_memory,
            total: capacity.memory_bytes,
        });
    }
    for (name, wanted) in &request.custom {
        let total = capacity.custom.get(name).copied().unwrap_or(0.0);
        let free = total - usage.custom.get(name).copied().unwrap_or(0.0);
        if *wanted > free + 1e-9 {
            return Err(Shortfall::Custom {
                name: name.clone(),
                wanted: *wanted,
                free,
                total,
            });
        }
    }
    Ok(())
}

fn gpu_options(
    capacity: &NodeCapacity,
    used_gpu_milli: &[u64],
    request: &Request,
) -> Result<Vec<Vec<GpuShare>>, Shortfall> {
    let gpu_milli = request.gpu_milli;
    if gpu_milli == 0 {
        return Ok(vec![Vec::new()]);
    }
    let total = capacity.gpus.len();
    let allowed = || {
        capacity
            .gpus
            .iter()
            .zip(used_gpu_milli)
            .filter(|(gpu, _)| request.accepts_model(&gpu.model))
    };
    if gpu_milli < 1000 {
        let mut options: Vec<Vec<GpuShare>> = Vec::new();
        let mut seen: Vec<(u64, &str)> = Vec::new();
        for (gpu, used) in allowed() {
            if 1000 - used >= gpu_milli && !seen.contains(&(*used, gpu.model.as_str())) {
                seen.push((*used, gpu.model.as_str()));
                options.push(vec![GpuShare {
                    index: gpu.index,
                    milli: gpu_milli,
                }]);
            }
        }
        if options.is_empty() {
            return Err(Shortfall::Gpu {
                wanted: format!("{:.3} of one device", gpu_milli as f64 / 1000.0),
                free: format!(
                    "at most {:.3} on any usable device",
                    allowed().map(|(_, used)| 1000 - used).max().unwrap_or(0) as f64 / 1000.0
                ),
                total,
            });
        }
        return Ok(options);
    }
    let whole = request.whole_gpus();
    let free: Vec<GpuShare> = allowed()
        .filter(|(_, used)| **used == 0)
        .take(whole)
        .map(|(gpu, _)| GpuShare {
            index: gpu.index,
            milli: 1000,
        })
        .collect();
    if free.len() < whole {
        return Err(Shortfall::Gpu {
            wanted: format!("{whole} whole devices"),
            free: format!(
                "{} whole",
                allowed().filter(|(_, used)| **used == 0).count()
            ),
            total,
        });
    }
    Ok(vec![free])
}
