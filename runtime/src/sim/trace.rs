//! Reading the openb trace's CSV files (nodes and pods) into scheduler types, with errors that
//! name the file, line and column that is wrong.

use crate::scheduler::{GpuDevice, NodeCapacity, Request};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A trace file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the header lacks column `{column}`")]
    MissingColumn { path: PathBuf, column: String },
    #[error("{path}:{line}: {message}")]
    Bad {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
}

/// One pod of a pod list.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub request: Request,
}

impl Pod {
    /// Milli-GPU this pod asks for.
    pub fn gpu_milli(&self) -> u64 {
        self.request.gpu_milli
    }
}

/// Rows of a CSV file with a header, as maps from column name to value.
struct Table {
    path: PathBuf,
    columns: HashMap<String, usize>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path, required: &[&str]) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(TraceError::Empty {
                path: path.to_path_buf(),
            });
        };
        let columns: HashMap<String, usize> = header
            .split(',')
            .enumerate()
            .map(|(i, name)| (name.trim().to_string(), i))
            .collect();
        for column in required {
            if !columns.contains_key(*column) {
                return Err(TraceError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                });
            }
        }
        let rows: Vec<(usize, Vec<String>)> = lines
            .map(|(i, line)| {
                (
                    i + 1,
                    line.split(',').map(|f| f.trim().to_string()).collect(),
                )
            })
            .collect();
        if rows.is_empty() {
            return Err(TraceError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    fn field<'a>(
        &self,
        row: &'a (usize, Vec<String>),
        column: &str,
    ) -> Result<&'a str, TraceError> {
        let index = self.columns[column];
        row.1
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| TraceError::Bad {
                path: self.path.clone(),
                line: row.0,
                message: format!("missing field `{column}`"),
            })
    }

    fn number(&self, row: &(usize, Vec<String>), column: &str) -> Result<u64, TraceError> {
        let text = self.field(row, column)?;
        text.parse::<u64>().map_err(|_| TraceError::Bad {
            path: self.path.clone(),
            line: row.0,
            message: format!("`{column}` is `{text}`, not a non-negative integer"),
        })
    }
}

/// Nodes from a node list (`sn,cpu_milli,memory_mib,gpu,model`).
pub fn read_nodes(path: &Path) -> Result<Vec<(String, NodeCapacity)>, TraceError> {
    let table = Table::read(path, &["sn", "cpu_milli", "memory_mib", "gpu", "model"])?;
    let mut nodes = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let gpus = table.number(row, "gpu")?;
        if gpus > 1024 {
            return Err(TraceError::Bad {
                path: table.path.clone(),
                line: row.0,
                message: format!("{gpus} GPUs on one node is not plausible"),
            });
        }
        let model = table.field(row, "model")?.to_string();
        nodes.push((
            table.field(row, "sn")?.to_string(),
            NodeCapacity {
                cpu_milli: table.number(row, "cpu_milli")?,
                memory_bytes: table.number(row, "memory_mib")?.saturating_mul(1 << 20),
                gpus: (0..gpus as u32)
                    .map(|index| GpuDevice {
                        index,
                        model: model.clone(),
                    })
                    .collect(),
                ..NodeCapacity::default()
            },
        ));
    }
    Ok(nodes)
}

/// Pods from a pod list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...`).
pub fn read_pods(path: &Path) -> Result<Vec<Pod>, TraceError> {
    let table = Table::read(
        path,
        &[
            "name",
            "cpu_milli",
            "memory_mib",
            "num_gpu",
            "gpu_milli",
            "gpu_spec",
        ],
    )?;
    let mut pods = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let num_gpu = table.number(row, "num_gpu")?;
        let gpu_milli = table.number(row, "gpu_milli")?;
        let bad = |message: String| TraceError::Bad {
            path: table.path.clone(),
            line: row.0,
            message,
        };
        let wanted = match (num_gpu, gpu_milli) {
            (0, _) => 0,
            (1, milli) if (1..1000).contains(&milli) => milli,
            (n, 1000) | (n, 0) if n <= 1024 => n * 1000,
            (n, milli) => {
                return Err(bad(format!(
                    "num_gpu {n} with gpu_milli {milli}: a share of a GPU needs num_gpu 1 and gpu_milli below 1000"
                )))
            }
        };
        let spec = table.field(row, "gpu_spec")?;
        pods.push(Pod {
            name: table.field(row, "name")?.to_string(),
            request: Request {
                cpu_milli: table.number(row, "cpu_milli")?,
                memory_bytes: table.number(row, "memory_mib")?.saturating_mul(1 << 20),
                gpu_milli: wanted,
                gpu_models: spec
                    .split('|')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
                ..Request::default()
            },
        });
    }
    Ok(pods)
}

/// How much a pod matters in a time replay: the trace's `qos` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    /// Best effort (`BE`, and Kubernetes' `Burstable`): lower priority, preemptible.
    BestEffort,
    /// Latency sensitive (`LS`, and Kubernetes' `Guaranteed`): higher priority, never preempted.
    LatencySensitive,
}

impl Qos {
    pub fn name(self) -> &'static str {
        match self {
            Qos::LatencySensitive => "LS",
            Qos::BestEffort => "BE",
        }
    }
}

/// A pod with its place in time: it arrives at `arrival_s` and, once placed, runs `duration_s`.
#[derive(Debug, Clone)]
pub struct TimedPod {
    pub pod: Pod,
    pub qos: Qos,
    pub arrival_s: f64,
    pub duration_s: f64,
}

/// Pods of a pod list with `qos`, `creation_time` and `deletion_time` (seconds), for replay in
/// time. A `qos` other than LS, BE, Guaranteed or Burstable is refused by line.
pub fn read_timed_pods(path: &Path) -> Result<Vec<TimedPod>, TraceError> {
    let pods = read_pods(path)?;
    let table = Table::read(path, &["qos", "creation_time", "deletion_time"])?;
    let mut timed = Vec::with_capacity(pods.len());
    for (pod, row) in pods.into_iter().zip(&table.rows) {
        let bad = |message: String| TraceError::Bad {
            path: table.path.clone(),
            line: row.0,
            message,
        };
        let qos = match table.field(row, "qos")? {
            "LS" | "Guaranteed" => Qos::LatencySensitive,
            "BE" | "Burstable" => Qos::BestEffort,
            other => {
                return Err(bad(format!(
                    "qos `{other}`: expected LS, BE, Guaranteed or Burstable"
                )))
            }
        };
        let created = table.number(row, "creation_time")?;
        let deleted = table.number(row, "deletion_time")?;
        if deleted < created {
            return Err(bad(format!(
                "deletion_time {deleted} is before creation_time {created}"
            )));
        }
        timed.push(TimedPod {
            pod,
            qos,
            arrival_s: created as f64,
            duration_s: (deleted - created) as f64,
        });
    }
    Ok(timed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn node_and_pod_lists_parse_and_bad_rows_are_named() {
        let dir = std::env::temp_dir().join(format!("troupe-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let nodes = write(
            &dir,
            "nodes.csv",
            "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,1024,2,T4\n",
        );
        let nodes = read_nodes(&nodes).expect("nodes");
        assert_eq!(nodes[0].1.gpus.len(), 2);
        assert_eq!(nodes[0].1.memory_bytes, 1 << 30);
        let pods = write(
            &dir,
            "pods.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np0,1000,0,1,500,V100M16|V100M32\np1,1000,0,2,1000,\np2,500,0,0,0,\n",
        );
        let pods = read_pods(&pods).expect("pods");
        assert_eq!(pods[0].request.gpu_milli, 500);
        assert_eq!(pods[0].request.gpu_models, vec!["V100M16", "V100M32"]);
        assert_eq!(pods[1].request.gpu_milli, 2000);
        assert_eq!(pods[2].request.gpu_milli, 0);
        let bad = write(
            &dir,
            "bad.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np0,lots,0,1,500,\n",
        );
        let err = read_pods(&bad).expect_err("bad cpu").to_string();
        assert!(
            err.contains("bad.csv:2") && err.contains("cpu_milli"),
            "{err}"
        );
        let shared = write(
            &dir,
            "shared.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np0,1,0,2,500,\n",
        );
        let err = read_pods(&shared).expect_err("2 GPUs at 0.5").to_string();
        assert!(err.contains("num_gpu 2 with gpu_milli 500"), "{err}");
        let timed = write(
            &dir,
            "timed.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,creation_time,deletion_time\np0,1,0,1,500,,LS,10,70\np1,1,0,0,0,,Burstable,20,20\n",
        );
        let timed = read_timed_pods(&timed).expect("timed");
        assert_eq!(timed[0].qos, Qos::LatencySensitive);
        assert_eq!((timed[0].arrival_s, timed[0].duration_s), (10.0, 60.0));
        assert_eq!(timed[1].qos, Qos::BestEffort);
        let odd = write(
            &dir,
            "odd.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,creation_time,deletion_time\np0,1,0,1,500,,Gold,10,70\n",
        );
        let err = read_timed_pods(&odd).expect_err("odd qos").to_string();
        assert!(
            err.contains("odd.csv:2") && err.contains("qos `Gold`"),
            "{err}"
        );
        let backwards = write(
            &dir,
            "back.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,creation_time,deletion_time\np0,1,0,1,500,,LS,70,10\n",
        );
        let err = read_timed_pods(&backwards)
            .expect_err("backwards")
            .to_string();
        assert!(
            err.contains("deletion_time 10 is before creation_time 70"),
            "{err}"
        );
        let headerless = write(&dir, "nohead.csv", "a,b\n1,2\n");
        let err = read_nodes(&headerless).expect_err("columns").to_string();
        assert!(err.contains("lacks column `sn`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
