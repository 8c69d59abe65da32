//! Directories and files that hold secrets or code that will run (the head's data directory with
//! the cluster token, a node agent's work directory with cached executables): owned by the user
//! who runs troupe and closed to everyone else, so that no other user of the machine can plant a
//! token or an executable in a shared place such as /tmp before troupe starts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    unsafe { libc::geteuid() }
}

/// Creates `dir` if needed, checks that it is a real directory owned by this user, and closes it
/// to group and others (mode 0700). The error says what is wrong.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|err| format!("reading {}: {err}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory (a symlink?); refusing to keep troupe's data there",
            dir.display()
        ));
    }
    if meta.uid() != current_uid() {
        return Err(format!(
            "{} belongs to uid {}, not to this user (uid {}); refusing to keep troupe's data there",
            dir.display(),
            meta.uid(),
            current_uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|err| format!("closing {} to other users: {err}", dir.display()))?;
    }
    Ok(())
}

/// Checks that a file holding a secret belongs to this user.
pub fn check_own_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|err| format!("reading {}: {err}", path.display()))?;
    if meta.uid() != current_uid() {
        return Err(format!(
            "{} belongs to uid {}, not to this user (uid {}); refusing it",
            path.display(),
            meta.uid(),
            current_uid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_created_and_closed() {
        let dir = std::env::temp_dir().join(format!("troupe-private-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        let link = dir.with_extension("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(ensure_private_dir(&link)
            .unwrap_err()
            .contains("not a directory"));
        std::fs::write(dir.join("token"), "x").unwrap();
        assert!(check_own_file(&dir.join("token")).is_ok());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
