//! Faults a run injects into itself, to show (and test) that it survives them:
//! `--inject-fault trainer-1@5,rollout-0@9` kills the worker of each named actor while that step
//! runs, as a crash would (`Cluster::restart`: the head stops the process at once and restarts
//! it per its `max_restarts`). The run's observer fires them (`resilient.rs`).

use super::error::{RecipeError, Result};
use super::recovery::Recovery;

/// Kill the actor watched as `role` while step `step` (1-based, as `metrics.jsonl` counts)
/// runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    pub role: String,
    pub step: usize,
}

/// Parses `ROLE@STEP[,ROLE@STEP...]` (empty: none). Roles are checked against the run's actors
/// when the run starts (`check_roles`); a step must be 2 or later (the first step's start is
/// not a step's end to time the kill from).
pub fn parse_faults(text: &str) -> Result<Vec<Fault>> {
    let bad = |why: String| RecipeError::Config(format!("--inject-fault `{text}`: {why}"));
    let mut faults = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (role, step) = item
            .split_once('@')
            .ok_or_else(|| bad(format!("`{item}` is not ROLE@STEP")))?;
        let step: usize = step
            .parse()
            .map_err(|_| bad(format!("`{step}` in `{item}` is not a step number")))?;
        if step < 2 {
            return Err(bad(format!("`{item}`: faults start at step 2")));
        }
        faults.push(Fault {
            role: role.to_string(),
            step,
        });
    }
    Ok(faults)
}

/// Refuses faults naming an actor the run does not have.
pub fn check_roles(faults: &[Fault], recovery: &Recovery) -> Result<()> {
    let roles = recovery.roles();
    for fault in faults {
        if !roles.contains(&fault.role) {
            return Err(RecipeError::Config(format!(
                "--inject-fault: no actor `{}` in this run (it has: {})",
                fault.role,
                roles.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_are_named() {
        let faults = parse_faults("trainer-1@5, rollout-0@9").unwrap();
        assert_eq!(
            faults,
            vec![
                Fault {
                    role: "trainer-1".into(),
                    step: 5
                },
                Fault {
                    role: "rollout-0".into(),
                    step: 9
                }
            ]
        );
        assert!(parse_faults("").unwrap().is_empty());
        for (bad, says) in [
            ("trainer", "ROLE@STEP"),
            ("trainer@x", "not a step number"),
            ("trainer@1", "start at step 2"),
        ] {
            let err = parse_faults(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
