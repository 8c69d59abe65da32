//! The `troupe` command: head, node agent, local cluster and status.

fn main() -> anyhow::Result<()> {
    troupe::cli::main()
}
