//! The `command` provider: user commands create, delete and list node agents (`sh -c`, with
//! the launch described in the environment), so any cloud's CLI can be the provider. A command
//! that fails or outlives its timeout is an error naming its exit and the end of its output.

use super::provider::{LaunchSpec, NodeProvider, ProviderError};
use futures::future::BoxFuture;
use std::time::Duration;

/// Runs the configured commands.
pub struct CommandProvider {
    pub create: String,
    pub delete: String,
    pub list: String,
    pub timeout: Duration,
}

impl CommandProvider {
    async fn run(
        &self,
        action: &'static str,
        command: &str,
        launch_id: &str,
        env: Vec<(String, String)>,
    ) -> Result<String, ProviderError> {
        let failed = |why: String| ProviderError::Failed {
            provider: "command",
            action,
            launch_id: launch_id.to_string(),
            why,
        };
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot run `sh -c {command}`: {e}")))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                failed(format!(
                    "`{command}` ran past its {:?} timeout and was killed",
                    self.timeout
                ))
            })?
            .map_err(|e| failed(format!("waiting for `{command}`: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(failed(format!(
                "`{command}` exited with {}: {tail}",
                output.status
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl NodeProvider for CommandProvider {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn create(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            self.run("create", &self.create, &spec.launch_id, spec.env())
                .await
                .map(|_| ())
        })
    }

    fn delete(&self, launch_id: String) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let env = vec![("TROUPE_LAUNCH_ID".to_string(), launch_id.clone())];
            self.run("delete", &self.delete, &launch_id, env)
                .await
                .map(|_| ())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let out = self.run("list", &self.list, "(all)", Vec::new()).await?;
            Ok(out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_see_the_launch_and_failures_are_named() {
        let dir = std::env::temp_dir().join(format!("troupe-cmd-provider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let d = dir.display();
        let provider = CommandProvider {
            create: format!("echo \"$TROUPE_NODE_TYPE $TROUPE_GPUS\" > {d}/$TROUPE_LAUNCH_ID"),
            delete: format!("rm {d}/$TROUPE_LAUNCH_ID"),
            list: format!("ls {d}"),
            timeout: Duration::from_secs(10),
        };
        let spec = LaunchSpec {
            launch_id: "gpu-1".to_string(),
            node_type_name: "gpu".to_string(),
            node_type: toml::from_str(
                "cpus = 1\nmemory_gib = 1\ngpus = 2\ngpu_model = \"T4\"\nmax = 1",
            )
            .expect("type"),
            head_address: "h:1".to_string(),
            token_file: dir.join("token"),
        };
        provider.create(spec).await.expect("create");
        assert_eq!(
            std::fs::read_to_string(dir.join("gpu-1"))
                .expect("written")
                .trim(),
            "gpu 2"
        );
        assert_eq!(provider.list().await.expect("list"), vec!["gpu-1"]);
        provider.delete("gpu-1".to_string()).await.expect("delete");
        assert!(provider.list().await.expect("list").is_empty());
        let err = provider
            .delete("gpu-1".to_string())
            .await
            .expect_err("gone")
            .to_string();
        assert!(
            err.contains("could not delete gpu-1") && err.contains("exited with"),
            "{err}"
        );
        let slow = CommandProvider {
            create: "true".to_string(),
            delete: "true".to_string(),
            list: "sleep 5".to_string(),
            timeout: Duration::from_millis(200),
        };
        let err = slow.list().await.expect_err("timeout").to_string();
        assert!(err.contains("ran past its"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
