//! Test support for multi-process tests: a cluster of real `troupe head` and `troupe node`
//! processes on loopback (killed when the fixture drops, and by the kernel if this process
//! dies), and a tiny harness that runs named scenarios and prints `N passed, N failed`.

#![allow(dead_code)]

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An actor that says which process it runs in: for tests that need only a worker to exist
/// (each test binary is its own workers' executable, so it is defined here, once).
pub struct Probe;

#[troupe::actor]
impl Probe {
    pub fn new() -> Self {
        Probe
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// Starts a cluster with one node agent per entry of `$node_args`, connects this test as the
/// driver, builds `$world { fixture, cluster }`, runs `$scenarios()` (60 s each) and shuts the
/// driver down; evaluates to whether every scenario passed. Use inside a tokio runtime's
/// `block_on`.
#[allow(unused_macros)]
macro_rules! run_cluster_scenarios {
    ($node_args:expr, $world:ident, $scenarios:ident) => {{
        let fixture = match support::Fixture::start($node_args) {
            Ok(fixture) => fixture,
            Err(err) => {
                println!("could not start the cluster: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let cluster = match troupe::Cluster::connect(&fixture.head_address).await {
            Ok(cluster) => cluster,
            Err(err) => {
                println!("could not connect: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let world = $world { fixture, cluster };
        let passed =
            support::run_scenarios(&world, $scenarios(), std::time::Duration::from_secs(60)).await;
        world.cluster.clone().shutdown().await;
        passed
    }};
}

/// Polls the head until the actor is in state `want`; fails naming its state (and why it
/// waits) after `within`.
pub async fn wait_for_state(
    cluster: &troupe::Cluster,
    handle: &impl troupe::ActorHandle,
    want: troupe::proto::ActorState,
    within: Duration,
) -> anyhow::Result<troupe::proto::ActorInfo> {
    let deadline = Instant::now() + within;
    loop {
        let info = cluster.actor_info(handle).await?;
        if info.state() == want {
            return Ok(info);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "actor {} is {:?}, not {want:?}, after {within:?} ({})",
            info.id,
            info.state(),
            info.pending_reason
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until process `pid` is gone; fails with `what` after `within`.
pub async fn wait_gone(pid: u32, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while pid_alive(pid) {
        anyhow::ensure!(Instant::now() < deadline, "{what} (pid {pid})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A named scenario for `run_scenarios`: `scenario!(some_async_fn)` in a `scenarios()` list.
#[allow(unused_macros)]
macro_rules! scenario {
    ($name:ident) => {
        (stringify!($name), Box::new(|world| Box::pin($name(world))))
    };
}

/// The tokio runtime a test binary runs on, or the exit code to leave with (the reason printed).
pub fn tokio_runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("cannot start tokio: {err}");
        std::process::ExitCode::FAILURE
    })
}

/// The process exit code for a run of scenarios.
pub fn exit_code(passed: bool) -> std::process::ExitCode {
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Starts `program args...` with its output in `log`, killed if this process dies.
pub fn spawn_process(program: &str, args: &[String], log: &PathBuf) -> std::io::Result<Child> {
    let file = std::fs::File::create(log)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}

/// One node agent of the fixture.
pub struct NodeProcess {
    pub index: usize,
    pub child: Child,
}

/// A head and node agents as separate processes.
pub struct Fixture {
    pub dir: PathBuf,
    pub head: std::sync::Mutex<Child>,
    pub head_extra: Vec<String>,
    pub head_address: String,
    pub metrics_address: String,
    /// The dashboard's address, when the head was started with `--dashboard-port`.
    pub dashboard_address: String,
    pub nodes: std::sync::Mutex<Vec<NodeProcess>>,
}

pub fn troupe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

impl Fixture {
    /// Starts a head, then one node agent per entry of `node_args` (each also gets
    /// `--label index=I`), and waits until all registered.
    pub fn start(node_args: &[Vec<&str>]) -> anyhow::Result<Fixture> {
        Self::start_with(&[], node_args)
    }

    /// As `start`, with more arguments for `troupe head`.
    pub fn start_with(head_extra: &[String], node_args: &[Vec<&str>]) -> anyhow::Result<Fixture> {
        let dir = std::env::temp_dir().join(format!("troupe-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (head, text) = start_head(&dir, "0", head_extra)?;
        // Every client this test starts (status commands, drivers, node agents) reads it here.
        std::env::set_var("TROUPE_TOKEN_FILE", dir.join("head").join("token"));
        let mut lines = text.lines();
        let head_address = lines.next().unwrap_or_default().to_string();
        let metrics_address = lines.next().unwrap_or_default().to_string();
        let dashboard_address = lines.next().unwrap_or_default().to_string();
        let fixture = Fixture {
            dir: dir.clone(),
            head: std::sync::Mutex::new(head),
            head_extra: head_extra.to_vec(),
            head_address,
            metrics_address,
            dashboard_address,
            nodes: std::sync::Mutex::new(Vec::new()),
        };
        for (index, extra) in node_args.iter().enumerate() {
            fixture.start_node(index, extra)?;
        }
        fixture.wait_for_nodes(node_args.len())?;
        Ok(fixture)
    }

    /// Kills the head with SIGKILL and starts it again on the same port and data directory.
    pub fn restart_head(&self) -> anyhow::Result<()> {
        self.kill_head()?;
        self.start_head_again()
    }

    /// Kills the head with SIGKILL (node agents, workers and drivers keep running).
    pub fn kill_head(&self) -> anyhow::Result<()> {
        let mut head = self.head.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        head.kill()?;
        head.wait()?;
        Ok(())
    }

    /// Starts the head again on its port and data directory; returns once it serves.
    pub fn start_head_again(&self) -> anyhow::Result<()> {
        let port = self
            .head_address
            .rsplit_once(':')
            .map(|(_, port)| port.to_string())
            .unwrap_or_default();
        let mut head = self.head.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let (fresh, _) = start_head(&self.dir, &port, &self.head_extra)?;
        *head = fresh;
        Ok(())
    }
}

/// Starts `troupe head` with its data in `dir/head`; returns it and what it wrote to its address
/// file (the gRPC address, the metrics address, then the dashboard's if it serves one).
fn start_head(
    dir: &std::path::Path,
    port: &str,
    extra: &[String],
) -> anyhow::Result<(Child, String)> {
    let address_file = dir.join("head.address");
    let _ = std::fs::remove_file(&address_file);
    let head_args: Vec<String> = [
        "head",
        "--port",
        port,
        "--metrics-port",
        "0",
        "--data-dir",
        dir.join("head").to_str().unwrap_or_default(),
        "--address-file",
        address_file.to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(extra.iter().cloned())
    .collect();
    let log = dir.join(format!("head-{}.log", next_head_log()));
    let head = spawn_process(troupe_bin(), &head_args, &log)?;
    // The gRPC and metrics addresses, and the dashboard's third when it serves one.
    let dashboard =
        |arg: &String| arg == "--dashboard-port" || arg.starts_with("--dashboard-port=");
    let lines = if extra.iter().any(dashboard) { 3 } else { 2 };
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            if text.lines().count() >= lines {
                break text;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the head did not start; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((head, text))
}

/// A number for each head started, so the logs of restarts do not overwrite each other.
fn next_head_log() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

impl Fixture {
    pub fn start_node(&self, index: usize, extra: &[&str]) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--head".into(),
            self.head_address.clone(),
            "--work-dir".into(),
            self.dir.join(format!("node-{index}")).display().to_string(),
            "--label".into(),
            format!("index={index}"),
            "--token-file".into(),
            self.dir.join("head").join("token").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_process(
            troupe_bin(),
            &args,
            &self.dir.join(format!("node-{index}.log")),
        )?;
        self.nodes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(NodeProcess { index, child });
        Ok(())
    }

    /// Waits until `count` nodes are alive, per `troupe status --json`.
    pub fn wait_for_nodes(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = self.status_json() {
                let alive = status["nodes"]
                    .as_array()
                    .map(|nodes| nodes.iter().filter(|n| n["state"] == "alive").count())
                    .unwrap_or(0);
                if alive >= count {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{count} nodes did not register within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `troupe status --head ADDR --json`, parsed.
    pub fn status_json(&self) -> anyhow::Result<serde_json::Value> {
        let output = Command::new(troupe_bin())
            .args(["status", "--head", &self.head_address, "--json"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "troupe status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// The node process whose node (per status) has label index=I for the given node id.
    pub fn node_index_of(&self, node_id: &str) -> anyhow::Result<usize> {
        let status = self.status_json()?;
        let node = status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == node_id))
            .ok_or_else(|| anyhow::anyhow!("no node {node_id} in status"))?;
        let index = node["resources"]["labels"]["index"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("node {node_id} has no index label"))?;
        Ok(index.parse()?)
    }

    pub fn kill_node(&self, index: usize) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let node = nodes
            .iter_mut()
            .find(|node| node.index == index)
            .ok_or_else(|| anyhow::anyhow!("no node process {index}"))?;
        node.child.kill()?;
        node.child.wait()?;
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mut nodes = match self.nodes.lock() {
            Ok(nodes) => nodes,
            Err(poisoned) => poisoned.into_inner(),
        };
        for node in nodes.iter_mut() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if let Ok(mut head) = self.head.lock() {
            let _ = head.kill();
            let _ = head.wait();
        }
        if std::env::var_os("TROUPE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A plain HTTP GET (the head's metrics page); the whole answer, headers included.
pub async fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut body)).await??;
    Ok(body)
}

/// Whether a process exists.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

/// SIGKILLs a process.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) on a worker pid the cluster reported.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub type Scenario<'a, F> = (
    &'static str,
    Box<dyn Fn(&'a F) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>> + 'a>,
);

/// Runs scenarios in order, each under `limit`; prints a line per scenario and the summary.
/// Returns whether all passed.
pub async fn run_scenarios<'a, F>(
    fixture: &'a F,
    scenarios: Vec<Scenario<'a, F>>,
    limit: Duration,
) -> bool {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let mut passed = 0;
    let mut failed = 0;
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, scenario(fixture)).await;
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => {
                passed += 1;
                println!("test {name} ... ok ({elapsed:.2}s)");
            }
            Ok(Err(err)) => {
                failed += 1;
                println!("test {name} ... FAILED ({elapsed:.2}s): {err:#}");
            }
            Err(_) => {
                failed += 1;
                println!(
                    "test {name} ... FAILED: timed out after {}s",
                    limit.as_secs()
                );
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    failed == 0
}
