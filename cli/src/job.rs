//! `troupe job`: submit a job (uploading its working directory), follow its logs, and show, list,
//! stop or delete jobs, against the head's `Jobs` service.

use super::connect::{checked, head_address};
use super::format::{print_job, write_out};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;
use troupe::jobs::client::exit_code_of;
use troupe::jobs::{status_name, JobClient};
use troupe::server::rpc::Token;
use troupe_proto::JobSpec;

#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Submit a job and print its id; with --wait, print the id to stderr, follow the logs and
    /// exit with the job's exit code.
    Submit {
        /// A directory uploaded with the job; the entrypoint runs inside it.
        #[arg(long)]
        working_dir: Option<PathBuf>,
        /// An environment variable for the entrypoint, K=V (repeatable).
        #[arg(long = "env", value_parser = super::parse_label)]
        env: Vec<(String, String)>,
        /// CPUs reserved for the entrypoint.
        #[arg(long)]
        num_cpus: Option<f64>,
        /// GPUs reserved for the entrypoint (its CUDA_VISIBLE_DEVICES).
        #[arg(long)]
        num_gpus: Option<f64>,
        /// The job's id; submitting the same id again runs nothing new.
        #[arg(long)]
        submission_id: Option<String>,
        /// Metadata kept with the job, K=V (repeatable).
        #[arg(long = "metadata", value_parser = super::parse_label)]
        metadata: Vec<(String, String)>,
        /// Follow the logs until the job ends and exit with its exit code.
        #[arg(long)]
        wait: bool,
        /// The command, after `--`. One argument is taken as a whole shell command line.
        #[arg(last = true, required = true)]
        entrypoint: Vec<String>,
    },
    /// Show a job's status, exit code and message.
    Status { id: String },
    /// Print a job's log; -f follows it until the job ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a job: SIGTERM, then SIGKILL after the grace period.
    Stop {
        id: String,
        #[arg(long, default_value_t = 5.0)]
        grace_s: f64,
    },
    /// List every job.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a finished job's record and log.
    Delete { id: String },
}

/// Joins arguments into one shell command line, quoting those that need it; a single argument
/// is used as it is.
pub(crate) fn command_line(args: &[String]) -> String {
    if args.len() == 1 {
        return args[0].clone();
    }
    args.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a job command; returns the process's exit code.
pub(crate) async fn run(address: Option<String>, command: JobCommand) -> anyhow::Result<i32> {
    let address = checked(head_address(address)?)?;
    let token =
        Token::from_env().with_context(|| format!("connecting to the cluster at {address}"))?;
    let client = JobClient::connect(&address, &token)
        .await
        .with_context(|| format!("connecting to the head at {address}"))?;
    match command {
        JobCommand::Submit {
            working_dir,
            env,
            num_cpus,
            num_gpus,
            submission_id,
            metadata,
            wait,
            entrypoint,
        } => {
            let package = match working_dir {
                Some(dir) => client.upload_working_dir(&dir).await?,
                None => String::new(),
            };
            let spec = JobSpec {
                entrypoint: command_line(&entrypoint),
                working_dir_package: package,
                env_vars: env.into_iter().collect(),
                entrypoint_num_cpus: num_cpus.unwrap_or(0.0),
                entrypoint_num_gpus: num_gpus.unwrap_or(0.0),
                metadata: metadata.into_iter().collect(),
            };
            let reply = client
                .submit(submission_id.as_deref().unwrap_or(""), spec)
                .await?;
            if reply.already_existed {
                eprintln!(
                    "job {} was submitted before; not running it again",
                    reply.submission_id
                );
            }
            if !wait {
                println!("{}", reply.submission_id);
                return Ok(0);
            }
            // With --wait, stdout carries only the job's output.
            eprintln!("submitted job {}", reply.submission_id);
            let info = client.follow(&reply.submission_id, write_out).await?;
            eprintln!("job {}: {}", info.submission_id, status_name(info.status()));
            Ok(exit_code_of(&info))
        }
        JobCommand::Status { id } => {
            print_job(&client.get(&id).await?);
            Ok(0)
        }
        JobCommand::Logs { id, follow } => {
            if follow {
                client.follow(&id, write_out).await?;
            } else {
                write_out(&client.logs(&id).await?);
            }
            Ok(0)
        }
        JobCommand::Stop { id, grace_s } => {
            if !grace_s.is_finite() || !(0.0..=600.0).contains(&grace_s) {
                anyhow::bail!("--grace-s {grace_s}: give 0 to 600 seconds");
            }
            let grace = Duration::from_secs_f64(grace_s).max(Duration::from_millis(1));
            if client.stop(&id, grace).await? {
                println!("stopping job {id}");
            } else {
                println!("job {id} had already finished");
            }
            Ok(0)
        }
        JobCommand::List { json } => {
            let jobs = client.list().await?;
            if json {
                let all: Vec<_> = jobs.iter().map(troupe::jobs::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", troupe::jobs::table(&jobs));
            }
            Ok(0)
        }
        JobCommand::Delete { id } => {
            client.delete(&id).await?;
            println!("deleted job {id}");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&args(&["echo hi && exit 3"])),
            "echo hi && exit 3"
        );
        assert_eq!(
            command_line(&args(&["sh", "-c", "exit 3"])),
            "sh -c 'exit 3'"
        );
        assert_eq!(command_line(&args(&["echo", "it's"])), r"echo 'it'\''s'");
        assert_eq!(
            command_line(&args(&["python", "train.py", "--lr=0.1"])),
            "python train.py --lr=0.1"
        );
    }
}
