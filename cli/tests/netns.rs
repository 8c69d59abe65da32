//! Multi-host without extra machines: three network namespaces joined by veth pairs to a bridge
//! (scripts/netns.sh; the test's own addresses on a private /24, nothing on the machine's own
//! interfaces), the head in one and a node agent in each of the other two, every process a real
//! `troupe` process. A driver, itself run inside the head's namespace, places one actor on each
//! node by label, checks that each runs in its node's network namespace (and not the driver's)
//! and answers calls across the bridge, and runs a job whose output names the namespace it ran
//! in. Skips with a message where it is not root or the kernel refuses namespaces.
//!
//! Run: `cargo test -p troupe-cli --test netns` (as root). By hand: see scripts/netns.sh.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};
use support::{spawn_process, troupe_bin};
use troupe::jobs::JobClient;
use troupe::proto::JobSpec;
use troupe::{Cluster, SpawnOptions};

/// Reports the network namespace it runs in.
pub struct Where;

#[troupe::actor]
impl Where {
    pub fn new() -> Self {
        Where
    }

    pub fn netns(&self) -> String {
        network_namespace(std::process::id())
    }
}

fn network_namespace(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// `net:[INODE]` of a namespace made by `ip netns add NAME` (bound at /run/netns/NAME).
fn named_namespace(name: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/run/netns/{name}"))?.ino();
    Ok(format!("net:[{inode}]"))
}

fn netns_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns.sh")
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run(prefix: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: creating network namespaces needs CAP_SYS_ADMIN".to_string());
    }
    let probe = format!("{prefix}-probe");
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => Some(format!("no `ip` command (iproute2): {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "the kernel refused a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {
            let veth = Command::new("ip")
                .args([
                    "-n", &probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
                ])
                .output();
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            match veth {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "the kernel refused a veth pair: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Some(format!("cannot run `ip`: {e}")),
            }
        }
    }
}

/// Removes the namespaces and stops the processes, however the test ends.
struct Hosts {
    prefix: String,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("bash")
            .arg(netns_script())
            .args(["down", &self.prefix])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn in_namespace(ns: &str, args: &[String]) -> Vec<String> {
    let mut all = vec!["netns".to_string(), "exec".to_string(), ns.to_string()];
    all.extend(args.iter().cloned());
    all
}

fn orchestrate() -> anyhow::Result<bool> {
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Short (interface and namespace names are limited) and this run's own.
    let prefix = format!("tr{:05x}", (pid ^ nanos) & 0xfffff);
    if ["head", "a", "b", "sw"]
        .iter()
        .any(|h| std::path::Path::new(&format!("/run/netns/{prefix}-{h}")).exists())
    {
        anyhow::bail!("namespaces named {prefix}-* exist already; not touching them");
    }
    if let Some(why) = cannot_run(&prefix) {
        println!("test netns ... skipped: {why}");
        return Ok(true);
    }
    let subnet = format!("10.{}.{}", 200 + pid % 50, (pid / 50) % 250);
    let dir = std::env::temp_dir().join(format!("troupe-netns-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let up = Command::new("bash")
        .arg(netns_script())
        .args(["up", &prefix, &subnet])
        .output()?;
    anyhow::ensure!(
        up.status.success(),
        "scripts/netns.sh up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // From here on, the namespaces are this run's (scripts/netns.sh removes what it made if it
    // fails part-way, and refuses names that exist), and they are removed however the test ends.
    let mut hosts = Hosts {
        prefix: prefix.clone(),
        children: Vec::new(),
        dir: dir.clone(),
    };
    let head_address = format!("{subnet}.1:6380");
    let address_file = dir.join("head.address");
    let head_args: Vec<String> = [
        troupe_bin(),
        "head",
        "--host",
        &format!("{subnet}.1"),
        "--port",
        "6380",
        "--data-dir",
        &dir.join("head").display().to_string(),
        "--address-file",
        &address_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    hosts.children.push(spawn_process(
        "ip",
        &in_namespace(&format!("{prefix}-head"), &head_args),
        &dir.join("head.log"),
    )?);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !address_file.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the head did not start; see {}",
            dir.join("head.log").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = dir.join("head").join("token");
    let mut namespaces = Vec::new();
    for (host, last) in [("a", 2), ("b", 3)] {
        let args: Vec<String> = [
            troupe_bin(),
            "node",
            "--head",
            &head_address,
            "--host",
            &format!("{subnet}.{last}"),
            "--cpus",
            "2",
            "--label",
            &format!("host={host}"),
            "--token-file",
            &token.display().to_string(),
            "--work-dir",
            &dir.join(format!("node-{host}")).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = spawn_process(
            "ip",
            &in_namespace(&format!("{prefix}-{host}"), &args),
            &dir.join(format!("node-{host}.log")),
        )?;
        // The namespace's identity, as /proc/PID/ns/net names it inside it.
        namespaces.push(named_namespace(&format!("{prefix}-{host}"))?);
        hosts.children.push(child);
    }
    // A hung driver is stopped, so the namespaces are always removed.
    let driver = Command::new("timeout")
        .arg("120")
        .arg("ip")
        .args(in_namespace(
            &format!("{prefix}-head"),
            &[
                std::env::current_exe()?.display().to_string(),
                "--driver".to_string(),
                head_address.clone(),
                namespaces[0].clone(),
                namespaces[1].clone(),
            ],
        ))
        .env("TROUPE_TOKEN_FILE", &token)
        .status()?;
    if !driver.success() {
        for log in ["head.log", "node-a.log", "node-b.log"] {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            println!(
                "--- {log} (last lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    drop(hosts);
    Ok(driver.success())
}

/// Inside the head's namespace: actors on both nodes, calls across the bridge, and a job.
async fn drive(address: &str, netns_a: &str, netns_b: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let cluster = loop {
        match Cluster::connect(address).await {
            Ok(cluster) => break cluster,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "head not ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mine = network_namespace(std::process::id());
    for (host, wanted) in [("a", netns_a), ("b", netns_b)] {
        let actor = loop {
            // The node may not have registered yet: its label is then unknown.
            match Where::spawn(
                &cluster,
                SpawnOptions::new().num_cpus(0.5).label("host", host),
            )
            .await
            {
                Ok(actor) => break actor,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "node {host} not ready");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        for _ in 0..20 {
            let seen = actor.netns().await?;
            anyhow::ensure!(
                seen == wanted,
                "actor on host {host} runs in {seen}, not {wanted}"
            );
            anyhow::ensure!(
                seen != mine,
                "the actor must not share the driver's namespace"
            );
        }
        println!("  actor on host {host}: 20 calls across the bridge answered from {wanted}");
    }
    let token = troupe::server::rpc::Token::from_env()?;
    let jobs = JobClient::connect(address, &token).await?;
    let reply = jobs
        .submit(
            "",
            JobSpec {
                entrypoint: "readlink /proc/self/ns/net".to_string(),
                ..JobSpec::default()
            },
        )
        .await?;
    let mut output = Vec::new();
    let info = jobs
        .follow(&reply.submission_id, |piece| {
            output.extend_from_slice(piece)
        })
        .await?;
    let output = String::from_utf8_lossy(&output).trim().to_string();
    anyhow::ensure!(
        troupe::jobs::client::exit_code_of(&info) == 0,
        "the job failed: {info:?}"
    );
    anyhow::ensure!(
        output == netns_a || output == netns_b,
        "the job ran in {output}, not in a node's namespace ({netns_a} or {netns_b})"
    );
    println!(
        "  a job ran on node {} and printed its namespace, {output}",
        info.node_id
    );
    cluster.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    troupe::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--driver") {
        let (Some(address), Some(a), Some(b)) = (args.get(2), args.get(3), args.get(4)) else {
            eprintln!("usage: netns --driver ADDRESS NETNS_A NETNS_B");
            return ExitCode::FAILURE;
        };
        let runtime = match support::tokio_runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        return match runtime.block_on(drive(address, a, b)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("driver failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    match orchestrate() {
        Ok(true) => {
            println!(
                "test netns ... ok ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("test netns ... FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("test netns ... FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
