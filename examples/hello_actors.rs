//! hello_actors: the smallest tour of troupe.
//!
//! Starts an embedded cluster (a head and a node agent inside this process; every actor in its
//! own worker process), spawns a few actors, calls them, passes a handle from one actor to
//! another, and shows an actor restarting after a panic.
//!
//! Run: `cargo run --release -p troupe --example hello_actors`

use troupe::{ActorHandle, Cluster, SpawnOptions};

/// Greets people and counts how many it greeted since its constructor ran.
pub struct Greeter {
    greeting: String,
    greeted: u64,
}

#[troupe::actor]
impl Greeter {
    pub fn new(greeting: String) -> Self {
        Greeter {
            greeting,
            greeted: 0,
        }
    }

    pub fn greet(&mut self, name: String) -> String {
        self.greeted += 1;
        format!(
            "{}, {name}! (#{} from pid {})",
            self.greeting,
            self.greeted,
            std::process::id()
        )
    }

    pub fn crash(&self, why: String) {
        panic!("crash requested: {why}");
    }
}

/// Forwards greetings to a greeter it is handed: handles work inside other actors.
pub struct Relay;

#[troupe::actor]
impl Relay {
    pub fn new() -> Self {
        Relay
    }

    /// A method returning `Result`: callers get the `Ok` value, or the error as
    /// `troupe::Error::Method`.
    pub async fn forward(&self, greeter: GreeterHandle, name: String) -> troupe::Result<String> {
        greeter.greet(name).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let cluster = Cluster::local().await?;
    println!("embedded cluster at {}", cluster.address());

    let greeter = Greeter::spawn(
        &cluster,
        SpawnOptions::new().name("greeter").max_restarts(2),
        "Hello".to_string(),
    )
    .await?;
    let relay = Relay::spawn(&cluster, SpawnOptions::new()).await?;

    println!("{}", greeter.greet("driver".to_string()).await?);
    let looked_up = cluster.get_actor::<Greeter>("greeter").await?;
    println!("{}", looked_up.greet("driver, by name".to_string()).await?);
    println!(
        "{}",
        relay.forward(greeter.clone(), "relay".to_string()).await?
    );

    match greeter.crash("to show a restart".to_string()).await {
        Ok(()) => println!("unexpected: the crash returned"),
        Err(err) => println!("the call failed as it should: {err}"),
    }
    // The next call waits for the restarted worker; the constructor ran again, so the count
    // starts over and the pid is new.
    println!(
        "{}",
        greeter
            .greet("driver, after the restart".to_string())
            .await?
    );
    let info = cluster.actor_info(&greeter).await?;
    println!(
        "greeter {}: restarts {}, node {}",
        greeter.actor_ref().id(),
        info.restarts,
        info.node_id
    );

    let status = cluster.status().await?;
    println!("\n{}", status.table());
    cluster.shutdown().await;
    Ok(())
}
