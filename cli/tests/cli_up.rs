//! The `troupe` command as a user runs it: `up` starts a head and node agents as separate
//! processes that outlive the command, `status` reads them, `down` stops every one of them; and
//! bad command lines fail with a message that names the problem.

use std::process::Command;
use std::time::{Duration, Instant};

fn troupe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .output()
        .expect("run troupe")
}

fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn up_status_down() {
    let dir = std::env::temp_dir().join(format!("troupe-cli-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().expect("utf-8 temp dir");
    let up = troupe(&[
        "up",
        "--nodes",
        "2",
        "--gpus-per-node",
        "2",
        "--cpus-per-node",
        "4",
        "--dir",
        dir_arg,
    ]);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let address = String::from_utf8_lossy(&up.stdout).trim().to_string();
    assert!(
        address.starts_with("127.0.0.1:"),
        "up prints the head address, got `{address}`"
    );

    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("cluster.json")).expect("state file"),
    )
    .expect("state json");
    let mut pids = vec![state["head_pid"].as_u64().expect("head pid")];
    pids.extend(
        state["node_pids"]
            .as_array()
            .expect("node pids")
            .iter()
            .filter_map(|pid| pid.as_u64()),
    );
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|pid| alive(*pid)),
        "the cluster outlives `troupe up`"
    );

    let without_token = troupe(&["status", "--head", &address]);
    assert!(
        !without_token.status.success()
            && String::from_utf8_lossy(&without_token.stderr).contains("TROUPE_TOKEN"),
        "without the token, status says where tokens are looked for: {}",
        String::from_utf8_lossy(&without_token.stderr)
    );
    let status = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["status", "--head", &address, "--json"])
        .env("TROUPE_TOKEN_FILE", dir.join("head").join("token"))
        .output()
        .expect("run troupe");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    for node in nodes {
        assert_eq!(node["state"], "alive");
        assert_eq!(node["gpus"].as_array().map(Vec::len), Some(2));
        assert_eq!(node["resources"]["cpus"], 4.0);
    }
    assert_eq!(status["actors"].as_array().map(Vec::len), Some(0));

    let again = troupe(&["up", "--nodes", "1", "--dir", dir_arg]);
    assert!(
        !again.status.success(),
        "a second `up` on the same directory is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let down = troupe(&["down", "--dir", dir_arg]);
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "processes left after `troupe down`: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_command_lines_name_the_problem() {
    let bad_resource = troupe(&["node", "--head", "127.0.0.1:1", "--resource", "tpu"]);
    assert!(!bad_resource.status.success());
    assert!(String::from_utf8_lossy(&bad_resource.stderr).contains("NAME=QTY"));

    let both = troupe(&[
        "node",
        "--head",
        "127.0.0.1:1",
        "--gpus",
        "2",
        "--gpu-ids",
        "0,1",
    ]);
    assert!(!both.status.success(), "--gpus and --gpu-ids conflict");

    let started = Instant::now();
    let nobody = troupe(&["status", "--head", "127.0.0.1:1"]);
    assert!(!nobody.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "status gives up quickly"
    );
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("127.0.0.1:1"));

    let bad_address = troupe(&["status", "--head", "no-port"]);
    assert!(!bad_address.status.success());
    assert!(String::from_utf8_lossy(&bad_address.stderr).contains("no port"));
}
