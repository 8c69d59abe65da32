//! actor_calls: the workloads of Ray's `ray microbenchmark` (python/ray/_private/ray_perf.py) on
//! the embedded local cluster, under Ray's metric names, so that `benches/compare_ray.sh` can put
//! the two side by side.
//!
//! - `1_1_actor_calls_sync`: one call at a time to one actor, a tiny reply;
//! - `timeline_overhead`: the same with the actor's timeline recording switched on and off
//!   between alternating rounds: the recording's cost in percent of a call, and
//!   `timeline_span_cost`, the same cost measured in process (not Ray's workloads);
//! - `1_1_actor_calls_async`: 1,000 calls in flight to one actor, then wait for all;
//! - `1_1_actor_calls_concurrent`: the same to an actor with max_concurrency 16;
//! - `1_n_actor_calls_async[_nN]`: one client actor makes 5,000 calls to each of N actors;
//! - `n_n_actor_calls_async[_nN]`: N client actors, each 5,000 calls round robin over N actors;
//! - `n_n_actor_calls_with_arg_async[_nN]`: N client actors, each 1,000 calls with an argument
//!   object (an `ObjectRef` the client put) to its own actor;
//! - `actor_creation`: spawn 100 actors and wait for the first answer of each;
//! - `placement_group_create/removal`: create 100 groups of one tiny bundle, wait until all are
//!   placed, remove them;
//! - `put_get_gigabytes`: an actor puts 800 MiB (made once, as Ray's benchmark makes its array
//!   once), another fetches it (GB/s), against this machine's memcpy of the same buffer
//!   (`memcpy_gigabytes`), measured in the same run; `put_get_touch_gigabytes` also reads one
//!   byte of every page of what it fetched (Ray's get does not read the data either);
//! - `breakdown_*`: where the time of one sync call goes, in microseconds per call: a raw TCP
//!   round trip between this process and a child (the machine's floor), the same with both
//!   keeping their CPU awake (`troupe::keep_awake`), a unary gRPC `Ping` to the actor's worker
//!   (transport without the actor), the codec's work for one call (both sides), the worker's
//!   dispatch run in process (decode, lock, method, encode), and the call itself.
//!
//! The driver runs on a current-thread tokio runtime, as Ray's Python driver is single-threaded
//! (`--multi-thread-driver` for tokio's multi-threaded one, where each call also hops between
//! the driver's thread and the runtime's I/O threads).
//!
//! N is Ray's choice (CPU count / 2, at least 1; no suffix) and also 4 (suffix `_n4`). Each
//! workload is timed like Ray's `timeit`: 1 s of warm-up, then 4 rounds of at least 2 s; the
//! figure is the mean rate. Run: `cargo bench -p troupe --bench actor_calls -- --json
//! target/actor_calls.json` (`--quick`: rounds of 0.5 s; `--only NAME`: one workload).

use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, Instant};
use troupe::objects::ObjectRef;
use troupe::{ActorHandle, Cluster, PlacementGroupSpec, SpawnOptions};

/// The callee of every workload.
pub struct Server {
    /// The payload `put_payload` puts, made once (as Ray's benchmark makes its array once).
    payload: std::sync::Mutex<Option<Bytes>>,
}

#[troupe::actor]
impl Server {
    pub fn new() -> Self {
        Server {
            payload: std::sync::Mutex::new(None),
        }
    }

    pub fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }

    /// Turns the timeline's recording in this worker on or off.
    pub fn set_timeline(&self, on: bool) {
        troupe::timeline::set_recording(on);
    }

    pub async fn small_value_arg(&self, argument: ObjectRef) -> troupe::Result<Vec<u8>> {
        argument.fetch().await?;
        Ok(b"ok".to_vec())
    }

    /// Puts `mib` MiB of bytes (made and filled on the first call, so the pages are real) and
    /// returns the reference.
    pub fn put_payload(&self, mib: usize) -> Result<ObjectRef, String> {
        let mut payload = self.payload.lock().map_err(|err| err.to_string())?;
        let bytes = payload
            .get_or_insert_with(|| Bytes::from(vec![7u8; mib << 20]))
            .clone();
        if bytes.len() != mib << 20 {
            return Err(format!("the payload has {} bytes", bytes.len()));
        }
        ObjectRef::put(bytes).map_err(|err| err.to_string())
    }

    /// Fetches an object and returns its length.
    pub async fn fetch_len(&self, object: ObjectRef) -> troupe::Result<u64> {
        Ok(object.fetch().await?.len() as u64)
    }

    /// Fetches an object, reads one byte of every 4 KiB page, and returns their sum.
    pub async fn fetch_touch(&self, object: ObjectRef) -> troupe::Result<u64> {
        let bytes = object.fetch().await?;
        Ok(bytes.iter().step_by(4096).map(|b| *b as u64).sum())
    }

    pub async fn release(&self, object: ObjectRef) -> troupe::Result<()> {
        object.release().await
    }
}

/// An actor that calls other actors (Ray's `Client`).
pub struct Caller {
    servers: Vec<ServerHandle>,
}

#[troupe::actor]
impl Caller {
    pub fn new(servers: Vec<ServerHandle>) -> Self {
        Caller { servers }
    }

    /// `n` calls to each server, all in flight at once.
    pub async fn batch(&self, n: usize) -> troupe::Result<usize> {
        let calls = self
            .servers
            .iter()
            .flat_map(|server| (0..n).map(move |_| server.small_value()));
        let replies = futures::future::try_join_all(calls).await?;
        Ok(replies.len())
    }

    /// `n` calls in all, round robin over the servers, all in flight at once.
    pub async fn round_robin(&self, n: usize) -> troupe::Result<usize> {
        let servers = &self.servers;
        let calls = (0..n).map(|i| servers[i % servers.len()].small_value());
        Ok(futures::future::try_join_all(calls).await?.len())
    }

    /// `n` calls with an argument object to each server.
    pub async fn batch_with_arg(&self, n: usize) -> troupe::Result<usize> {
        let argument = ObjectRef::put(Bytes::from_static(&[0u8; 8]))?;
        let calls = self
            .servers
            .iter()
            .flat_map(|server| (0..n).map(|_| server.small_value_arg(argument.clone())));
        let replies = futures::future::try_join_all(calls).await?;
        argument.release().await?;
        Ok(replies.len())
    }
}

/// Rounds of `round` seconds after 1 s of warm-up, as Ray's `timeit`; returns the mean rate.
async fn rate<F, Fut>(round: Duration, per_call: f64, mut work: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let warm = Instant::now();
    let mut count = 0u64;
    while warm.elapsed() < Duration::from_secs(1) {
        work().await?;
        count += 1;
    }
    let step = count / 10 + 1;
    let mut rates = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < round {
            for _ in 0..step {
                work().await?;
            }
            done += step;
        }
        rates.push(per_call * done as f64 / started.elapsed().as_secs_f64());
    }
    Ok(rates.iter().sum::<f64>() / rates.len() as f64)
}

fn server() -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.0)
}

async fn servers(cluster: &Cluster, count: usize) -> anyhow::Result<Vec<ServerHandle>> {
    let handles =
        futures::future::try_join_all((0..count).map(|_| Server::spawn(cluster, server()))).await?;
    for handle in &handles {
        handle.small_value().await?;
    }
    Ok(handles)
}

/// Sync calls to `actor` in `rounds` pairs of `calls` calls, its timeline recording on for one
/// half of each pair and off (or, for a `control`, on too) for the other, alternating which goes
/// first. Returns the median over pairs of (on - off) / off in percent, and the mean call times
/// in microseconds of the two halves.
async fn paired_rounds(
    actor: &ServerHandle,
    control: bool,
    rounds: usize,
    calls: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let (mut on_sum, mut off_sum, mut pairs) = (0.0, 0.0, Vec::with_capacity(rounds));
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut times = [0.0f64; 2];
        for recording in order {
            actor.set_timeline(recording || control).await?;
            let started = Instant::now();
            for _ in 0..calls {
                actor.small_value().await?;
            }
            times[usize::from(recording)] = started.elapsed().as_secs_f64() * 1e6 / calls as f64;
        }
        on_sum += times[1];
        off_sum += times[0];
        pairs.push((times[1] - times[0]) / times[0] * 100.0);
    }
    pairs.sort_by(f64::total_cmp);
    let median = (pairs[(rounds - 1) / 2] + pairs[rounds / 2]) / 2.0;
    Ok((median, on_sum / rounds as f64, off_sum / rounds as f64))
}

struct Bench {
    cluster: Cluster,
    round: Duration,
    only: Option<String>,
    results: Vec<serde_json::Value>,
}

impl Bench {
    fn wanted(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| name.contains(only.as_str()))
    }

    fn record(&mut self, name: &str, per_s: f64, unit: &str) {
        println!("{name:<40} {per_s:>14.1} {unit}");
        self.results
            .push(serde_json::json!({ "name": name, "per_s": per_s, "unit": unit }));
    }

    /// The timeline's cost on a 1:1 sync call: one actor whose recording is switched on and
    /// off between short rounds (so that the machine's drift hits both alike); the overhead is
    /// the median over round pairs of the difference of their call times, over the time without.
    /// The same procedure with recording on in both halves (`timeline_overhead_control`) shows
    /// what this machine's noise alone gives.
    async fn timeline_overhead(&mut self) -> anyhow::Result<()> {
        let actor = Server::spawn(&self.cluster, server()).await?;
        actor.small_value().await?;
        let (rounds, calls) = (100, 500);
        let (overhead, with_us, without_us) = paired_rounds(&actor, false, rounds, calls).await?;
        let (control, _, _) = paired_rounds(&actor, true, rounds, calls).await?;
        actor.set_timeline(true).await?;
        self.results.push(serde_json::json!({
            "name": "timeline_overhead_control",
            "percent": control,
        }));
        println!(
            "{:<40} {control:>14.2} % (recording on in both halves: the noise floor)",
            "timeline_overhead_control"
        );
        // The same cost measured in process, free of the machine's noise: what the worker adds
        // per call, against the call's time measured above.
        let (entry_ns, entry_and_span_ns) =
            troupe::server::diagnostics::measure_call_bookkeeping(1_000_000);
        let span_ns = entry_and_span_ns - entry_ns;
        let span_percent = span_ns / (without_us * 1000.0) * 100.0;
        let bookkeeping_percent = entry_and_span_ns / (without_us * 1000.0) * 100.0;
        println!(
            "{:<40} {span_ns:>14.0} ns a call = {span_percent:.2} % of a sync call (with the in-flight entry: {entry_and_span_ns:.0} ns, {bookkeeping_percent:.2} %)",
            "timeline_span_cost"
        );
        self.record("1_1_actor_calls_sync_timeline_on", 1e6 / with_us, "calls/s");
        self.record(
            "1_1_actor_calls_sync_timeline_off",
            1e6 / without_us,
            "calls/s",
        );
        println!("{:<40} {overhead:>14.2} % of a call (median of {rounds} round pairs of {calls} calls; means {with_us:.1} us with, {without_us:.1} us without)", "timeline_overhead");
        self.results.push(serde_json::json!({
            "name": "timeline_overhead",
            "percent": overhead,
            "us_per_call_with": with_us,
            "us_per_call_without": without_us,
            "round_pairs": rounds,
            "calls_per_round": calls,
        }));
        self.results.push(serde_json::json!({
            "name": "timeline_span_cost",
            "ns_per_call": span_ns,
            "percent_of_sync_call": span_percent,
            "ns_per_call_with_inflight_entry": entry_and_span_ns,
            "percent_of_sync_call_with_inflight_entry": bookkeeping_percent,
        }));
        self.cluster.kill(&actor).await?;
        Ok(())
    }

    async fn one_to_one(&mut self) -> anyhow::Result<()> {
        let round = self.round;
        if self.wanted("1_1_actor_calls_sync") {
            let actor = servers(&self.cluster, 1).await?.remove(0);
            let per_s = rate(round, 1.0, || async {
                actor.small_value().await?;
                Ok(())
            })
            .await?;
            self.record("1_1_actor_calls_sync", per_s, "calls/s");
            self.cluster.kill(&actor).await?;
        }
        if self.wanted("timeline_overhead") {
            self.timeline_overhead().await?;
        }
        for (name, concurrency) in [
            ("1_1_actor_calls_async", 1),
            ("1_1_actor_calls_concurrent", 16),
        ] {
            if !self.wanted(name) {
                continue;
            }
            let actor = Server::spawn(&self.cluster, server().max_concurrency(concurrency)).await?;
            actor.small_value().await?;
            let per_s = rate(round, 1000.0, || async {
                futures::future::try_join_all((0..1000).map(|_| actor.small_value())).await?;
                Ok(())
            })
            .await?;
            self.record(name, per_s, "calls/s");
            self.cluster.kill(&actor).await?;
        }
        Ok(())
    }

    async fn fan_out(&mut self, n: usize, suffix: &str) -> anyhow::Result<()> {
        let round = self.round;
        let name = format!("1_n_actor_calls_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let client = Caller::spawn(&self.cluster, server(), targets.clone()).await?;
            let per_s = rate(round, (5000 * n) as f64, || async {
                client.batch(5000).await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.cluster.kill(&client).await?;
        }
        let name = format!("n_n_actor_calls_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let clients = futures::future::try_join_all(
                (0..n).map(|_| Caller::spawn(&self.cluster, server(), targets.clone())),
            )
            .await?;
            let per_s = rate(round, (5000 * n) as f64, || async {
                futures::future::try_join_all(clients.iter().map(|c| c.round_robin(5000))).await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.kill_all(&clients).await?;
        }
        let name = format!("n_n_actor_calls_with_arg_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let clients = futures::future::try_join_all(
                targets
                    .iter()
                    .map(|t| Caller::spawn(&self.cluster, server(), vec![t.clone()])),
            )
            .await?;
            let per_s = rate(round, (1000 * n) as f64, || async {
                futures::future::try_join_all(clients.iter().map(|c| c.batch_with_arg(1000)))
                    .await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.kill_all(&clients).await?;
        }
        Ok(())
    }

    /// Where the time of one sync call goes (µs per call), all measured here and now.
    async fn breakdown(&mut self) -> anyhow::Result<()> {
        if !self.wanted("breakdown") {
            return Ok(());
        }
        const CALLS: u32 = 5000;
        // Blocking loops run off the driver's (current-thread) runtime.
        let tcp_us = tokio::task::spawn_blocking(|| tcp_round_trip_us(CALLS, false)).await??;
        self.record("breakdown_tcp_round_trip", tcp_us, "µs");
        let tcp_awake_us = tokio::task::spawn_blocking(|| tcp_round_trip_us(CALLS, true)).await??;
        self.record("breakdown_tcp_round_trip_awake", tcp_awake_us, "µs");
        let actor = servers(&self.cluster, 1).await?.remove(0);
        self.cluster.ping_worker(&actor, CALLS / 10).await?; // warm-up
        let ping_us = self.cluster.ping_worker(&actor, CALLS).await?.as_secs_f64() * 1e6;
        self.record("breakdown_grpc_ping", ping_us, "µs");
        let started = Instant::now();
        for _ in 0..CALLS {
            let args = troupe::codec::encode(&())?;
            let (): () = troupe::codec::decode(&args)?;
            let reply = troupe::codec::encode(&b"ok".to_vec())?;
            let _: Vec<u8> = troupe::codec::decode(&reply)?;
        }
        let codec_us = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
        self.record("breakdown_codec", codec_us, "µs");
        let dispatch_us = dispatch_in_process_us(CALLS).await?;
        self.record("breakdown_dispatch_in_process", dispatch_us, "µs");
        for _ in 0..CALLS / 10 {
            actor.small_value().await?; // warm-up
        }
        let started = Instant::now();
        for _ in 0..CALLS {
            actor.small_value().await?;
        }
        let call_us = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
        self.record("breakdown_call", call_us, "µs");
        self.cluster.kill(&actor).await?;
        Ok(())
    }

    async fn kill_all(&self, handles: &[impl ActorHandle]) -> anyhow::Result<()> {
        for handle in handles {
            self.cluster.kill(handle).await?;
        }
        Ok(())
    }

    async fn creation(&mut self) -> anyhow::Result<()> {
        if !self.wanted("actor_creation") {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let per_s = rate(self.round, 100.0, || {
            let cluster = cluster.clone();
            async move {
                let actors = servers(&cluster, 100).await?;
                for actor in &actors {
                    cluster.kill(actor).await?;
                }
                Ok(())
            }
        })
        .await?;
        self.record("actor_creation", per_s, "actors/s");
        Ok(())
    }

    async fn placement_groups(&mut self) -> anyhow::Result<()> {
        if !self.wanted("placement_group") {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let per_s = rate(self.round, 100.0, || {
            let cluster = cluster.clone();
            async move {
                let groups = futures::future::try_join_all((0..100).map(|_| {
                    cluster.create_placement_group(PlacementGroupSpec::new(
                        vec![SpawnOptions::new().num_cpus(0.001)],
                        "PACK",
                    ))
                }))
                .await?;
                for group in &groups {
                    group.ready(Duration::from_secs(30)).await?;
                }
                for group in &groups {
                    group.remove().await?;
                }
                Ok(())
            }
        })
        .await?;
        self.record("placement_group_create/removal", per_s, "groups/s");
        Ok(())
    }

    async fn put_get(&mut self) -> anyhow::Result<()> {
        if !self.wanted("gigabytes") {
            return Ok(());
        }
        const MIB: usize = 800;
        let gib = MIB as f64 / 1024.0;
        // A blocking loop: it runs off the driver's (current-thread) runtime.
        let round = self.round;
        let per_s = tokio::task::spawn_blocking(move || {
            let source: Vec<u8> = vec![7u8; MIB << 20];
            let mut target = vec![0u8; MIB << 20];
            futures::executor::block_on(rate(round, gib, || {
                target.copy_from_slice(&source);
                std::hint::black_box(&target);
                async { Ok(()) }
            }))
        })
        .await??;
        self.record("memcpy_gigabytes", per_s, "GiB/s");
        let actors = servers(&self.cluster, 2).await?;
        let (owner, reader) = (&actors[0], &actors[1]);
        let per_s = rate(self.round, gib, || async {
            let object = owner.put_payload(MIB).await?;
            let got = reader.fetch_len(object.clone()).await?;
            anyhow::ensure!(got == (MIB as u64) << 20, "fetched {got} bytes");
            owner.release(object).await?;
            Ok(())
        })
        .await?;
        self.record("put_get_gigabytes", per_s, "GiB/s");
        let pages = ((MIB as u64) << 20) / 4096;
        let per_s = rate(self.round, gib, || async {
            let object = owner.put_payload(MIB).await?;
            let sum = reader.fetch_touch(object.clone()).await?;
            anyhow::ensure!(sum == 7 * pages, "read {sum} over {pages} pages");
            owner.release(object).await?;
            Ok(())
        })
        .await?;
        self.record("put_get_touch_gigabytes", per_s, "GiB/s");
        self.kill_all(&actors).await?;
        Ok(())
    }
}

/// What the worker does for one call once the frame is in hand, without any network: decode the
/// arguments, take the actor's lock, run the method, encode the reply (µs per call).
async fn dispatch_in_process_us(count: u32) -> anyhow::Result<f64> {
    let hosted = troupe::__private::host(Server::new());
    let method = (0..)
        .take_while(|index| hosted.method_name(*index).is_some())
        .find(|index| hosted.method_name(*index) == Some("small_value"))
        .ok_or_else(|| anyhow::anyhow!("no method small_value"))?;
    let args = troupe::codec::encode(&())?;
    let started = Instant::now();
    for _ in 0..count {
        hosted
            .call(method, args.clone())
            .await
            .map_err(|err| anyhow::anyhow!("{}", err.message))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / count as f64)
}

/// Environment variable that makes this executable a TCP echo child on the given port.
const ECHO_ENV: &str = "ACTOR_CALLS_TCP_ECHO";

/// Set for the echo child when both sides keep their CPU awake (`troupe::keep_awake`).
const ECHO_AWAKE_ENV: &str = "ACTOR_CALLS_TCP_ECHO_AWAKE";

/// The child's side of the raw TCP round trip: echo 16-byte messages until the peer hangs up.
fn echo_child(address: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let awake = std::env::var_os(ECHO_AWAKE_ENV).is_some();
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut message = [0u8; 16];
    while stream.read_exact(&mut message).is_ok() {
        if awake {
            troupe::keep_awake::note_activity();
        }
        stream.write_all(&message)?;
    }
    Ok(())
}

/// The mean round trip of a 16-byte message to a child process over loopback TCP, one at a time;
/// with `awake`, both processes keep their CPU awake between messages as troupe's RPCs do.
fn tcp_round_trip_us(count: u32, awake: bool) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.env(ECHO_ENV, &address);
    if awake {
        command.env(ECHO_AWAKE_ENV, "1");
    }
    let mut child = command.spawn()?;
    let result = (|| {
        listener.set_nonblocking(false)?;
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut message = [1u8; 16];
        let started = Instant::now();
        for _ in 0..count {
            if awake {
                troupe::keep_awake::note_activity();
            }
            stream.write_all(&message)?;
            stream.read_exact(&mut message)?;
        }
        anyhow::Ok(started.elapsed().as_secs_f64() * 1e6 / count as f64)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() -> anyhow::Result<()> {
    if let Ok(address) = std::env::var(ECHO_ENV) {
        return echo_child(&address);
    }
    troupe::init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let multi_thread_driver = args.iter().any(|a| a == "--multi-thread-driver");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runtime = if multi_thread_driver {
        tokio::runtime::Runtime::new()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let cluster = Cluster::local().await?;
        let mut bench = Bench {
            cluster,
            round: if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            only,
            results: Vec::new(),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ray_n = (cpus / 2).max(1);
        bench.one_to_one().await?;
        bench.breakdown().await?;
        bench.fan_out(ray_n, "").await?;
        if ray_n != 4 {
            bench.fan_out(4, "_n4").await?;
        }
        bench.creation().await?;
        bench.placement_groups().await?;
        bench.put_get().await?;
        let report = serde_json::json!({
            "bench": "actor_calls",
            "cluster": "embedded local (Cluster::local)",
            "cpus": cpus,
            "n": ray_n,
            "driver_runtime": if multi_thread_driver { "multi-thread" } else { "current-thread" },
            "workloads": bench.results,
        });
        if let Some(path) = troupe::report::json_path_arg() {
            println!(
                "wrote {}",
                troupe::report::write_json(&path, &report)?.display()
            );
        }
        bench.cluster.shutdown().await;
        anyhow::Ok(())
    })
}
