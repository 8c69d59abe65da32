//! `troupe status`: nodes (state, resources, each GPU and who holds it), actors (with why a
//! pending one waits), jobs, placement groups and pending demand, as tables or as one JSON object
//! for scripts. The rendering is the library's (`troupe::ClusterStatus`), so a driver printing
//! `cluster.status().await?.table()` shows the same tables.

use super::connect::{checked, fetch_status, head_address};
use anyhow::Context;
use troupe::server::rpc::Token;
use troupe::ClusterStatus;

pub(crate) async fn show(head: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let address = checked(head_address(head)?)?;
    let token =
        Token::from_env().with_context(|| format!("connecting to the cluster at {address}"))?;
    let status = ClusterStatus::from(
        fetch_status(&address, &token)
            .await
            .with_context(|| format!("reading the status of the cluster at {address}"))?,
    );
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status.to_json())?);
    } else {
        print!("{}", status.table());
    }
    Ok(())
}
