//! The `troupe` command: head, node agent, local cluster, status and jobs.

fn main() {
    let code = match troupe::cli::main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    };
    std::process::exit(code)
}
