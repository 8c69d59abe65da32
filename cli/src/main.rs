//! The `troupe` command: `head`, `node`, `up`/`down` (a local multi-process cluster), `status`,
//! `job` and `sim`. This file parses the command line and runs the long-lived services (head,
//! node agent); `connect.rs` finds and reaches a running cluster, `format.rs` prints what the
//! job commands show, and each other command has a file of its own.

mod autoscaler_cmd;
mod connect;
mod format;
mod inspect;
mod job;
mod processes;
mod sim;
mod sim_autoscale;
mod status;
mod up;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use troupe::server::autoscaler::AutoscalerConfig;
use troupe::server::head::{self, HeadConfig};
use troupe::server::node::{self, resources, NodeConfig};
use troupe::server::rpc::{Token, TOKEN_FILE_NAME};
use troupe_proto::NodeResources;

/// Default port of the head's gRPC server.
const DEFAULT_HEAD_PORT: u16 = 7380;

#[derive(Debug, Parser)]
#[command(
    name = "troupe",
    version,
    about = "A Ray-style actor runtime for RL post-training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a head: the control plane of a cluster.
    Head {
        /// gRPC port (0 picks a free one).
        #[arg(long, default_value_t = DEFAULT_HEAD_PORT)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Where the token, uploads, job records and logs are kept (default: $TROUPE_HOME/head,
        /// else /tmp/troupe-up/head, where clients look for the token).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve Prometheus metrics on this port (0 picks a free one).
        #[arg(long)]
        metrics_port: Option<u16>,
        /// Serve the web dashboard on this port, on the same host as the head (0 picks a free
        /// one); log in with the cluster token (docs/dashboard.md).
        #[arg(long)]
        dashboard_port: Option<u16>,
        /// Write the bound addresses here once serving, one a line: the head's, the metrics'
        /// (empty if none) and, with --dashboard-port, the dashboard's.
        #[arg(long)]
        address_file: Option<PathBuf>,
        /// A node silent this long is declared dead.
        #[arg(long, default_value_t = 5000)]
        node_timeout_ms: u64,
        /// Placement policy: fragmentation (default), fgd, best-fit, gpu-packing or random.
        #[arg(long, default_value = "fragmentation")]
        policy: String,
        /// Grow and shrink the cluster with demand: node types, rules and provider in this
        /// TOML file (docs/autoscaling.md).
        #[arg(long)]
        autoscaler: Option<PathBuf>,
        /// Dead actors kept for status and lookups; the oldest beyond this are forgotten.
        #[arg(long, default_value_t = 1000)]
        dead_actor_history: usize,
    },
    /// Run a node agent that starts workers for the head.
    Node {
        /// The head's address (host:port).
        #[arg(long, env = "TROUPE_ADDRESS")]
        head: String,
        /// Address this agent and its workers bind to and advertise.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The agent's gRPC port (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// CPUs offered (default: this machine's).
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory offered in bytes (default: this machine's).
        #[arg(long)]
        memory: Option<u64>,
        /// Declare this many GPUs, numbered from 0.
        #[arg(long, conflicts_with = "gpu_ids")]
        gpus: Option<u32>,
        /// Declare these GPU device ids.
        #[arg(long, value_delimiter = ',')]
        gpu_ids: Option<Vec<u32>>,
        /// Model name of declared GPUs (becomes the `gpu-model` label).
        #[arg(long, default_value = "declared")]
        gpu_model: String,
        /// A custom resource, NAME=QTY (repeatable).
        #[arg(long = "resource", value_parser = parse_quantity)]
        resources: Vec<(String, f64)>,
        /// A node label, K=V (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Worker logs and cached executables (default: a directory under /tmp).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// The cluster token's file (the head's `DATA_DIR/token`); default: $TROUPE_TOKEN.
        #[arg(long, env = "TROUPE_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Start a local cluster: a head and N node agents as separate processes, left running.
    Up {
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// GPUs declared on each node.
        #[arg(long, default_value_t = 0)]
        gpus_per_node: u32,
        /// CPUs declared on each node (default: this machine's).
        #[arg(long)]
        cpus_per_node: Option<f64>,
        /// Head port (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Serve head metrics on this port.
        #[arg(long)]
        metrics_port: Option<u16>,
        /// Serve the head's web dashboard on this port (0 picks a free one).
        #[arg(long)]
        dashboard_port: Option<u16>,
        /// Where the cluster's state and logs go (default: $TROUPE_HOME or /tmp/troupe-up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run the head with this autoscaler config (docs/autoscaling.md); with the `local`
        /// provider, node agents come and go on this machine as work needs them (add
        /// `--nodes 0` to start with none).
        #[arg(long)]
        autoscale: Option<PathBuf>,
    },
    /// Stop the cluster that `troupe up` started.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show nodes and actors.
    Status {
        /// The head's address (default: $TROUPE_ADDRESS, then the cluster `troupe up` started).
        #[arg(long)]
        head: Option<String>,
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Print an actor's output (stdout and stderr, every incarnation) or a job's log.
    Logs(inspect::LogsArgs),
    /// Show what a live actor is doing: calls in flight, its queue, each thread's stack.
    Calls(inspect::CallsArgs),
    /// Write the timeline of actor calls and pipeline stages as Chrome trace JSON (Perfetto).
    Timeline(inspect::TimelineArgs),
    /// Submit and manage jobs.
    Job {
        /// The head's address (default: $TROUPE_ADDRESS, then the cluster `troupe up` started).
        #[arg(long, global = true)]
        address: Option<String>,
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Replay a cluster trace through the scheduler's policies.
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Check an autoscaler config, or print the pod its kubernetes provider would create.
    Autoscaler {
        #[command(subcommand)]
        command: autoscaler_cmd::AutoscalerCommand,
    },
}

fn parse_quantity(text: &str) -> Result<(String, f64), String> {
    let (name, quantity) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=QTY"))?;
    let quantity: f64 = quantity
        .parse()
        .map_err(|_| format!("`{text}`: {quantity} is not a number"))?;
    if name.is_empty() || !quantity.is_finite() || quantity < 0.0 {
        return Err(format!("`{text}`: expected NAME=QTY with QTY >= 0"));
    }
    Ok((name.to_string(), quantity))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}`: the key is empty"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn main() {
    let code = match run_command_line() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    };
    std::process::exit(code)
}

/// Parses the command line and runs the command; returns the process's exit code.
fn run_command_line() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Sim { command } => {
            troupe::init_logging("warn");
            return sim::run(command);
        }
        Command::Autoscaler { command } => {
            troupe::init_logging("warn");
            return autoscaler_cmd::run(command);
        }
        command => Cli { command },
    };
    let quiet = matches!(
        cli.command,
        Command::Job { .. }
            | Command::Status { .. }
            | Command::Logs(_)
            | Command::Calls(_)
            | Command::Timeline(_)
    );
    troupe::init_logging(if quiet { "warn" } else { "info" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Job { address, command } => job::run(address, command).await,
        Command::Logs(args) => inspect::logs(args).await,
        Command::Calls(args) => inspect::calls(args).await,
        Command::Timeline(args) => inspect::timeline(args).await,
        other => run_service(other).await.map(|()| 0),
    }
}

async fn run_service(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Job { .. } | Command::Logs(_) | Command::Calls(_) | Command::Timeline(_) => {
            bail!("job, logs, calls and timeline commands are run by `run`")
        }
        Command::Sim { .. } | Command::Autoscaler { .. } => {
            bail!("sim and autoscaler commands are run by `run_command_line`")
        }
        Command::Head {
            port,
            host,
            data_dir,
            metrics_port,
            dashboard_port,
            address_file,
            node_timeout_ms,
            policy,
            dead_actor_history,
            autoscaler,
        } => {
            let bind: SocketAddr = format!("{host}:{port}")
                .parse()
                .with_context(|| format!("`{host}:{port}` is not an address to bind"))?;
            // By default where `troupe up` keeps its head: clients find the token there.
            let data_dir = data_dir.unwrap_or_else(|| connect::state_dir(None).join("head"));
            let data_dir_shown = data_dir.clone();
            let mut config = HeadConfig::local(data_dir);
            config.bind = bind;
            config.node_timeout = Duration::from_millis(node_timeout_ms.max(500));
            config.policy = policy;
            config.dead_actor_history = dead_actor_history;
            if let Some(path) = autoscaler {
                let autoscaler = AutoscalerConfig::read(&path)?;
                config.provider = autoscaler_cmd::external_provider(&autoscaler)?;
                config.autoscaler = Some(autoscaler);
            }
            config.metrics_bind = match metrics_port {
                Some(port) => Some(format!("{host}:{port}").parse()?),
                None => None,
            };
            config.dashboard_bind = match dashboard_port {
                Some(port) => Some(format!("{host}:{port}").parse()?),
                None => None,
            };
            let mut handle = head::start(config).await?;
            println!("troupe head listening on {}", handle.address);
            println!(
                "cluster token in {}",
                data_dir_shown.join(TOKEN_FILE_NAME).display()
            );
            if let Some(metrics) = handle.metrics_address {
                println!("metrics on http://{metrics}/metrics");
            }
            if let Some(dashboard) = handle.dashboard_address {
                println!("dashboard on http://{dashboard}/ (log in with the cluster token)");
            }
            if let Some(path) = address_file {
                let mut text = handle.address.to_string();
                if handle.metrics_address.is_some() || handle.dashboard_address.is_some() {
                    text.push('\n');
                    if let Some(metrics) = handle.metrics_address {
                        text.push_str(&metrics.to_string());
                    }
                }
                if let Some(dashboard) = handle.dashboard_address {
                    text.push('\n');
                    text.push_str(&dashboard.to_string());
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            processes::until_signal(handle.wait()).await;
            handle.flush().await;
            Ok(())
        }
        Command::Node {
            head,
            host,
            port,
            cpus,
            memory,
            gpus,
            gpu_ids,
            gpu_model,
            resources: custom,
            labels,
            work_dir,
            token_file,
        } => {
            let token = match token_file {
                Some(path) => Token::read_file(&path)?,
                None => Token::from_env()?,
            };
            let detected = resources::detect_gpus();
            let gpu_list = if gpus.is_some() || gpu_ids.is_some() {
                resources::declared_gpus(gpus, gpu_ids.as_deref(), &gpu_model)
            } else {
                detected
            };
            let mut seen = std::collections::HashSet::new();
            if let Some(duplicate) = gpu_list.iter().find(|gpu| !seen.insert(gpu.index)) {
                bail!("--gpu-ids lists device {} twice", duplicate.index);
            }
            let cpus = cpus.unwrap_or_else(resources::detect_cpus);
            if !cpus.is_finite() || cpus < 0.0 {
                bail!("--cpus {cpus} is not a CPU count");
            }
            let resources = NodeResources {
                cpu_milli: (cpus * 1000.0).round() as u64,
                memory_bytes: memory.unwrap_or_else(resources::detect_memory_bytes),
                gpus: gpu_list,
                custom: custom.into_iter().collect(),
                labels: labels.into_iter().collect(),
            };
            let work_dir = work_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("troupe-node-{}", std::process::id()))
            });
            let handle = node::start(NodeConfig {
                head_address: head,
                host,
                port,
                resources,
                work_dir,
                local_executables: HashMap::new(),
                token,
            })
            .await?;
            println!(
                "troupe node {} serving on {}",
                handle.node_id(),
                handle.address
            );
            processes::until_signal(async {
                // The handle kills the workers when dropped.
                std::future::pending::<()>().await
            })
            .await;
            drop(handle);
            Ok(())
        }
        Command::Up {
            nodes,
            gpus_per_node,
            cpus_per_node,
            port,
            metrics_port,
            dashboard_port,
            dir,
            autoscale,
        } => {
            let autoscale = match autoscale {
                Some(path) => {
                    // Refused here, before anything starts, with what is wrong.
                    AutoscalerConfig::read(&path)?;
                    Some(
                        std::fs::canonicalize(&path)
                            .with_context(|| format!("{}", path.display()))?,
                    )
                }
                None => None,
            };
            up::up(up::UpOptions {
                autoscale,
                nodes,
                gpus_per_node,
                cpus_per_node,
                port,
                metrics_port,
                dashboard_port,
                dir: connect::state_dir(dir),
            })
            .await
        }
        Command::Down { dir } => up::down(&connect::state_dir(dir)).await,
        Command::Status { head, json } => status::show(head, json).await,
    }
}
