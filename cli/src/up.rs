//! `troupe up` and `troupe down`: a local cluster of one head and N node agents, each its own
//! process (started from this same `troupe` executable, in its own session so it outlives the
//! command), with their pids and the head's address kept in a state file for `down` and `status`.

use super::connect::{fetch_status, read_state, state_file, ClusterState};
use super::processes;
use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use troupe::server::rpc::{Token, TOKEN_FILE_NAME};

pub(crate) struct UpOptions {
    pub nodes: u32,
    pub gpus_per_node: u32,
    pub cpus_per_node: Option<f64>,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub dashboard_port: Option<u16>,
    pub dir: PathBuf,
    /// The head's autoscaler config, if any.
    pub autoscale: Option<PathBuf>,
}

fn spawn_detached(args: &[String], log: &Path) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("finding the troupe executable")?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: setsid(2) is async-signal-safe; it detaches the child from this terminal session.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().context("starting a cluster process")?;
    Ok(child.id())
}

pub(crate) async fn up(options: UpOptions) -> anyhow::Result<()> {
    if options.nodes == 0 && options.autoscale.is_none() {
        bail!("--nodes must be at least 1 (or 0 with --autoscale, which launches them)");
    }
    if let Some(state) = read_state(&options.dir) {
        if processes::alive(state.head_pid) {
            bail!(
                "a cluster started from {} is already running (head {}); run `troupe down` first",
                options.dir.display(),
                state.head_address
            );
        }
    }
    // Private: its state file and logs steer clients, and its head directory holds the token.
    troupe::server::private_fs::ensure_private_dir(&options.dir).map_err(anyhow::Error::msg)?;
    let address_file = options.dir.join("head.address");
    let _ = std::fs::remove_file(&address_file);
    let mut head_args = vec![
        "head".to_string(),
        "--port".to_string(),
        options.port.to_string(),
        "--data-dir".to_string(),
        options.dir.join("head").display().to_string(),
        "--address-file".to_string(),
        address_file.display().to_string(),
    ];
    if let Some(port) = options.metrics_port {
        head_args.extend(["--metrics-port".to_string(), port.to_string()]);
    }
    if let Some(port) = options.dashboard_port {
        head_args.extend(["--dashboard-port".to_string(), port.to_string()]);
    }
    if let Some(config) = &options.autoscale {
        head_args.extend(["--autoscaler".to_string(), config.display().to_string()]);
    }
    let head_pid = spawn_detached(&head_args, &options.dir.join("head.log"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let addresses = loop {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            if !text.trim().is_empty() {
                break text;
            }
        }
        if !processes::alive(head_pid) || tokio::time::Instant::now() > deadline {
            processes::stop(head_pid, Duration::from_secs(1)).await;
            bail!(
                "the head did not start; see {}",
                options.dir.join("head.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut lines = addresses.lines();
    let head_address = lines.next().unwrap_or_default().trim().to_string();
    let metrics_address = lines
        .next()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty());
    let dashboard_address = lines
        .next()
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty());
    let mut node_pids = Vec::new();
    for index in 0..options.nodes {
        let mut args = vec![
            "node".to_string(),
            "--head".to_string(),
            head_address.clone(),
            "--work-dir".to_string(),
            options
                .dir
                .join(format!("node-{index}"))
                .display()
                .to_string(),
            "--label".to_string(),
            format!("local-node={index}"),
            "--token-file".to_string(),
            options
                .dir
                .join("head")
                .join(TOKEN_FILE_NAME)
                .display()
                .to_string(),
        ];
        if options.gpus_per_node > 0 {
            args.extend(["--gpus".to_string(), options.gpus_per_node.to_string()]);
        }
        if let Some(cpus) = options.cpus_per_node {
            args.extend(["--cpus".to_string(), cpus.to_string()]);
        }
        node_pids.push(spawn_detached(
            &args,
            &options.dir.join(format!("node-{index}.log")),
        )?);
    }
    let state = ClusterState {
        head_address: head_address.clone(),
        metrics_address: metrics_address.clone(),
        head_pid,
        node_pids,
    };
    std::fs::write(
        state_file(&options.dir),
        serde_json::to_string_pretty(&state)?,
    )
    .with_context(|| format!("writing {}", state_file(&options.dir).display()))?;
    let token = Token::read_file(&options.dir.join("head").join(TOKEN_FILE_NAME))?;
    wait_for_nodes(&head_address, &token, options.nodes as usize).await?;
    println!("{head_address}");
    eprintln!(
        "troupe cluster up: head {head_address}, {} node(s); state in {}; cluster token in {}; stop it with `troupe down`",
        options.nodes,
        options.dir.display(),
        options.dir.join("head").join(TOKEN_FILE_NAME).display()
    );
    if let Some(metrics) = metrics_address {
        eprintln!("metrics on http://{metrics}/metrics");
    }
    if let Some(dashboard) = dashboard_address {
        eprintln!("dashboard on http://{dashboard}/ (log in with the cluster token)");
    }
    Ok(())
}

async fn wait_for_nodes(head_address: &str, token: &Token, expected: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = fetch_status(head_address, token).await {
            if status.nodes.iter().filter(|node| node.alive).count() >= expected {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("fewer than {expected} nodes registered within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(dir) else {
        bail!(
            "no cluster state in {} (was `troupe up` run with this --dir?)",
            dir.display()
        );
    };
    for pid in &state.node_pids {
        processes::stop(*pid, Duration::from_secs(5)).await;
    }
    processes::stop(state.head_pid, Duration::from_secs(5)).await;
    std::fs::remove_file(state_file(dir))
        .with_context(|| format!("removing {}", state_file(dir).display()))?;
    println!("stopped the cluster at {}", state.head_address);
    Ok(())
}
