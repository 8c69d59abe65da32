//! The `kubernetes` provider end to end against a stand-in API server. The stand-in is this
//! test's own: an HTTP server that answers the few pod calls the provider makes (create, get,
//! list by label, delete) the way the Kubernetes API does, and acts as the kubelet by running
//! each created pod's container command (`troupe node ...`) as a process, and killing it when the
//! pod is deleted. The head is a real `troupe head --autoscaler` process whose kube client finds
//! the stand-in through a kubeconfig. This checks the provider's requests and the pods it
//! creates, and the whole scale-up and scale-down loop through them; it is not a live API
//! server (nothing here ran against one; see docs/autoscaling.md).
//!
//! Run: `cargo test -p troupe-cli --test kubernetes`.

#[macro_use]
mod support;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{troupe_bin, wait_for_state, Fixture, Probe};
use troupe::proto::ActorState;
use troupe::{Cluster, SpawnOptions};

#[derive(Default)]
struct Api {
    pods: BTreeMap<String, Value>,
    running: BTreeMap<String, Child>,
    /// "METHOD path?query" of every request, in order.
    requests: Vec<String>,
    token_file: String,
    log_dir: std::path::PathBuf,
}

type Shared = Arc<Mutex<Api>>;

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Json<Value>) {
    (
        code,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": reason, "code": code.as_u16()}),
        ),
    )
}

fn lock(api: &Shared) -> std::sync::MutexGuard<'_, Api> {
    match api.lock() {
        Ok(api) => api,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn list_pods(
    State(api): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut api = lock(&api);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    api.requests.push(format!(
        "GET /api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    ));
    let wanted: Vec<(String, String)> = selector
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let items: Vec<Value> = api
        .pods
        .values()
        .filter(|pod| {
            wanted
                .iter()
                .all(|(k, v)| pod["metadata"]["labels"][k] == v.as_str())
        })
        .cloned()
        .collect();
    (
        StatusCode::OK,
        Json(
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
        ),
    )
}

async fn create_pod(
    State(api): State<Shared>,
    Path(namespace): Path<String>,
    Json(mut pod): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut api = lock(&api);
    api.requests
        .push(format!("POST /api/v1/namespaces/{namespace}/pods"));
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() || api.pods.contains_key(&name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("pods \"{name}\" already exists"),
        );
    }
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["metadata"]["resourceVersion"] = json!("1");
    pod["status"] = json!({"phase": "Running", "podIP": "127.0.0.1"});
    // The kubelet: run the container's command, with what the pod's spec would provide.
    let container = &pod["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.as_str())
        .map(|a| match a {
            "$(POD_IP)" => "127.0.0.1".to_string(),
            "/var/run/troupe/token" => api.token_file.clone(),
            other => other.to_string(),
        })
        .collect();
    let mut args = args;
    args.extend([
        "--work-dir".to_string(),
        api.log_dir.join(&name).display().to_string(),
    ]);
    match support::spawn_process(
        troupe_bin(),
        &args,
        &api.log_dir.join(format!("{name}.log")),
    ) {
        Ok(child) => {
            api.running.insert(name.clone(), child);
        }
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        }
    }
    api.pods.insert(name, pod.clone());
    (StatusCode::CREATED, Json(pod))
}

async fn get_pod(
    State(api): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let mut api = lock(&api);
    api.requests
        .push(format!("GET /api/v1/namespaces/{namespace}/pods/{name}"));
    if name == "troupe-head-0" {
        // The head's own pod, owned by its StatefulSet.
        return (
            StatusCode::OK,
            Json(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "uid": "uid-head-pod",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "name": "troupe-head", "uid": "uid-statefulset", "controller": true,
                        "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "head", "image": "troupe"}]}})),
        );
    }
    match api.pods.get(&name) {
        Some(pod) => (StatusCode::OK, Json(pod.clone())),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        ),
    }
}

async fn delete_pod(
    State(api): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let mut api = lock(&api);
    api.requests
        .push(format!("DELETE /api/v1/namespaces/{namespace}/pods/{name}"));
    if let Some(mut child) = api.running.remove(&name) {
        // SAFETY: kill(2) on a process this test started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
    }
    match api.pods.remove(&name) {
        Some(pod) => (StatusCode::OK, Json(pod)),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        ),
    }
}

async fn start_api(api: Shared) -> anyhow::Result<String> {
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(list_pods).post(create_pod),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(get_pod).delete(delete_pod),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(address)
}

const CONFIG: &str = r#"
idle_timeout_s = 2
period_s = 0.3
launch_timeout_s = 60
[provider]
kind = "kubernetes"
namespace = "troupe"
image = "ghcr.io/troupe-rl/troupe:test"
node_selectors = { l4-1x = { "nvidia.com/gpu.product" = "NVIDIA-L4" } }
[node_types.l4-1x]
cpus = 2
memory_gib = 2
gpus = 1
gpu_model = "L4"
max = 2
"#;

async fn scenario(fixture: &Fixture, api: &Shared) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&fixture.head_address).await?;
    let probe = Probe::spawn(&cluster, SpawnOptions::new().num_cpus(0.5).num_gpus(1.0)).await?;
    let info = wait_for_state(&cluster, &probe, ActorState::Alive, Duration::from_secs(40)).await?;
    anyhow::ensure!(probe.pid().await? != std::process::id());
    let (pod, requests) = {
        let api = lock(api);
        anyhow::ensure!(api.pods.len() == 1, "one pod: {:?}", api.pods.keys());
        (
            api.pods.values().next().cloned().unwrap_or_default(),
            api.requests.clone(),
        )
    };
    let requests = requests.join("\n");
    anyhow::ensure!(
        requests.contains("GET /api/v1/namespaces/troupe/pods?labelSelector=app.kubernetes.io/managed-by=troupe-autoscaler"),
        "the head listed its pods at start:\n{requests}"
    );
    anyhow::ensure!(
        requests.contains("GET /api/v1/namespaces/troupe/pods/troupe-head-0"),
        "{requests}"
    );
    anyhow::ensure!(
        requests.contains("POST /api/v1/namespaces/troupe/pods"),
        "{requests}"
    );
    let container = &pod["spec"]["containers"][0];
    anyhow::ensure!(
        container["resources"]["limits"]["nvidia.com/gpu"] == "1",
        "{pod:#}"
    );
    anyhow::ensure!(
        container["image"] == "ghcr.io/troupe-rl/troupe:test",
        "{pod:#}"
    );
    anyhow::ensure!(
        pod["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4",
        "{pod:#}"
    );
    anyhow::ensure!(
        pod["metadata"]["labels"]["troupe.io/node-type"] == "l4-1x",
        "{pod:#}"
    );
    let owner = &pod["metadata"]["ownerReferences"][0];
    anyhow::ensure!(
        owner["kind"] == "StatefulSet" && owner["uid"] == "uid-statefulset",
        "{pod:#}"
    );
    // An owner, not a controller: the StatefulSet would release pods it controls but does not
    // select.
    anyhow::ensure!(owner["controller"].is_null(), "{pod:#}");
    let launch = pod["metadata"]["labels"]["troupe.io/launch-id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let status = fixture.status_json()?;
    let node = status["nodes"]
        .as_array()
        .and_then(|nodes| {
            nodes
                .iter()
                .find(|n| n["id"] == info.node_id.as_str())
                .cloned()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        node["labels"]["troupe.io/launch-id"] == launch.as_str()
            || status["autoscaler"]["nodes"][0]["launch_id"] == launch.as_str(),
        "the actor runs on the pod's agent: {status:#}"
    );
    println!("  a GPU actor launched pod {} (owner StatefulSet troupe-head, 1 nvidia.com/gpu) and runs there", pod["metadata"]["name"]);
    cluster.kill(&probe).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = lock(api).pods.is_empty();
        if gone {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the idle pod was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = lock(api).requests.join("\n");
    anyhow::ensure!(
        requests.contains(&format!(
            "DELETE /api/v1/namespaces/troupe/pods/troupe-node-{launch}"
        )),
        "{requests}"
    );
    println!("  the idle pod was deleted through the API and its agent stopped");
    cluster.shutdown().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let passed = runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("troupe-kube-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let api: Shared = Arc::new(Mutex::new(Api {
            log_dir: dir.clone(),
            ..Api::default()
        }));
        let outcome = async {
            let address = start_api(api.clone()).await?;
            let kubeconfig = dir.join("kubeconfig");
            std::fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://{address}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n    namespace: troupe\ncurrent-context: stand-in\nusers:\n- name: stand-in\n  user:\n    token: not-a-real-token\n"
                ),
            )?;
            let config = dir.join("autoscaler.toml");
            std::fs::write(&config, CONFIG)?;
            // The head process inherits these: its kube client finds the stand-in, and it
            // believes it runs as pod troupe-head-0.
            std::env::set_var("KUBECONFIG", &kubeconfig);
            std::env::remove_var("KUBERNETES_SERVICE_HOST");
            std::env::set_var("POD_NAME", "troupe-head-0");
            let fixture = Fixture::start_with(&["--autoscaler".to_string(), config.display().to_string()], &[])?;
            lock(&api).token_file = fixture.dir.join("head").join("token").display().to_string();
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(90), scenario(&fixture, &api)).await;
            match result {
                Ok(Ok(())) => println!("test kubernetes_provider_scales_up_and_down ... ok ({:.1}s)", started.elapsed().as_secs_f64()),
                Ok(Err(e)) => {
                    let log = std::fs::read_to_string(fixture.dir.join("head-0.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().filter(|l| !l.trim_start().starts_with("at ") && !l.contains(" INFO ")).take(12).collect();
                    println!("--- head log (first lines)\n{}", tail.join("\n"));
                    println!("--- API requests\n{}", lock(&api).requests.join("\n"));
                    anyhow::bail!("{e:#}")
                }
                Err(_) => anyhow::bail!("timed out after 90 s"),
            }
            anyhow::Ok(())
        }
        .await;
        for (_, mut child) in std::mem::take(&mut lock(&api).running) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if outcome.is_ok() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        match outcome {
            Ok(()) => true,
            Err(e) => {
                println!("test kubernetes_provider_scales_up_and_down ... FAILED: {e:#}");
                false
            }
        }
    });
    support::exit_code(passed)
}
