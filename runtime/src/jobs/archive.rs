//! Working-directory packages: a gzip-compressed tar of a job's directory. Owns packing a
//! directory the same way every time (so one directory gives one content hash and is uploaded
//! once), checking an archive without unpacking it (the head, at upload), and unpacking it so that
//! nothing lands outside the job's directory (the node agent): no absolute or `..` paths, no
//! symlink that points out or is walked through, only files, directories and symlinks, and a
//! bound on the unpacked size and the number of entries.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Bounds on what one package may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    /// 2 GiB unpacked, 100,000 entries.
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: 2 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why an archive was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry `{path}`: {why}")]
    Entry { path: String, why: String },
    #[error("the archive unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

fn refuse(path: &Path, why: impl Into<String>) -> ArchiveError {
    ArchiveError::Entry {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// What an archive holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
}

/// The entry's path made relative and checked: no root, no `..`. `None` for the archive root.
fn relative_path(raw: &Path) -> Result<Option<PathBuf>, ArchiveError> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(refuse(
                    raw,
                    "`..` in the path would leave the job directory",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(raw, "absolute paths are not allowed"))
            }
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// Checks that a symlink at `link` (relative to the job directory) pointing at `target` stays
/// inside the job directory as text: not absolute, never above the root.
fn check_link_target(link: &Path, target: &Path) -> Result<(), ArchiveError> {
    let outside = || {
        refuse(
            link,
            format!(
                "symlink to {} points outside the job directory",
                target.display()
            ),
        )
    };
    if target.has_root() {
        return Err(outside());
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(outside());
        }
    }
    Ok(())
}

/// Most symlinks followed while resolving one path (as Linux allows).
const MAX_LINK_HOPS: usize = 40;

/// Checks every symlink of an archive together: resolving its target the way the kernel would,
/// following the archive's other symlinks on the way, must never leave the job directory. (Each
/// link can be harmless alone, `d/up -> ..`, and a chain of them still escape, `out -> d/up/..`.)
fn check_links(links: &[(PathBuf, PathBuf)]) -> Result<(), ArchiveError> {
    let table: std::collections::HashMap<&Path, &Path> = links
        .iter()
        .map(|(link, target)| (link.as_path(), target.as_path()))
        .collect();
    for (link, target) in links {
        let mut resolved: Vec<std::ffi::OsString> = Vec::new();
        // Components still to walk, next one last: the link's directory, then its target (the
        // directory is walked too, in case it goes through another link).
        let mut pending: Vec<Component> = target.components().rev().collect();
        if let Some(parent) = link.parent() {
            pending.extend(parent.components().rev());
        }
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component {
                Component::ParentDir => {
                    if resolved.pop().is_none() {
                        return Err(refuse(
                            link,
                            format!(
                                "symlink to {} leads outside the job directory through other symlinks",
                                target.display()
                            ),
                        ));
                    }
                }
                Component::Normal(part) => {
                    resolved.push(part.to_os_string());
                    let here: PathBuf = resolved.iter().collect();
                    if let Some(next) = table.get(here.as_path()) {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Err(refuse(link, "too many levels of symlinks"));
                        }
                        if next.has_root() {
                            return Err(refuse(link, "a symlink on its way is absolute"));
                        }
                        resolved.pop();
                        pending.extend(next.components().rev());
                    }
                }
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(link, "absolute symlink target"))
                }
            }
        }
    }
    Ok(())
}

/// One checked entry.
enum Kind {
    File,
    Directory,
    Symlink(PathBuf),
}

/// Checks one entry's path and type; `None` for the archive root directory.
fn check_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
) -> Result<Option<(PathBuf, Kind)>, ArchiveError> {
    let raw = entry
        .path()
        .map_err(io("reading an entry's path"))?
        .into_owned();
    let Some(path) = relative_path(&raw)? else {
        return Ok(None);
    };
    let kind = match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Directory => Kind::Directory,
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(io("reading a symlink target"))?
                .ok_or_else(|| refuse(&path, "symlink without a target"))?
                .into_owned();
            check_link_target(&path, &target)?;
            Kind::Symlink(target)
        }
        other => {
            return Err(refuse(
                &path,
                format!("{other:?} entries are not allowed (only files, directories and symlinks)"),
            ))
        }
    };
    Ok(Some((path, kind)))
}

/// Counts an entry against the limits.
fn count(summary: &mut Summary, size: u64, limits: &Limits) -> Result<(), ArchiveError> {
    summary.entries += 1;
    if summary.entries > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    summary.bytes = summary.bytes.saturating_add(size);
    if summary.bytes > limits.max_unpacked_bytes {
        return Err(ArchiveError::TooLarge {
            limit: limits.max_unpacked_bytes,
        });
    }
    Ok(())
}

/// Checks a whole archive without writing anything.
pub fn validate(reader: impl Read, limits: &Limits) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut summary = Summary::default();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(io("reading the archive"))? {
        let entry = entry.map_err(io("reading the archive"))?;
        if let Some((path, Kind::Symlink(target))) = check_entry(&entry)? {
            links.push((path, target));
        }
        count(
            &mut summary,
            entry.header().size().unwrap_or(u64::MAX),
            limits,
        )?;
    }
    check_links(&links)?;
    Ok(summary)
}

/// Fails if any existing ancestor of `path` below `root` (or `path` itself) is a symlink, so
/// that nothing is written through a link.
fn refuse_symlinks_on_the_way(root: &Path, path: &Path) -> Result<(), ArchiveError> {
    let mut walked = root.to_path_buf();
    for component in path.components() {
        walked.push(component);
        match std::fs::symlink_metadata(&walked) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(path, "its path goes through a symlink"))
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Unpacks into `dest` (which must exist), checking every entry as `validate` does; symlinks are
/// made last, so no entry is written through one.
pub fn unpack(reader: impl Read, dest: &Path, limits: &Limits) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut summary = Summary::default();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(io("reading the archive"))? {
        let mut entry = entry.map_err(io("reading the archive"))?;
        let Some((path, kind)) = check_entry(&entry)? else {
            continue;
        };
        let size = entry.header().size().unwrap_or(u64::MAX);
        count(&mut summary, size, limits)?;
        refuse_symlinks_on_the_way(dest, &path)?;
        let target = dest.join(&path);
        match kind {
            Kind::Directory => std::fs::create_dir_all(&target)
                .map_err(io(format!("creating {}", target.display())))?,
            Kind::File => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("creating {}", parent.display())))?;
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                write_file(&mut entry, &target, size, mode)?;
            }
            Kind::Symlink(link_target) => links.push((path, link_target)),
        }
    }
    check_links(&links)?;
    for (path, link_target) in &links {
        refuse_symlinks_on_the_way(dest, path)?;
        let at = dest.join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(link_target, &at)
            .map_err(io(format!("creating the symlink {}", at.display())))?;
    }
    // And on disk, as the kernel resolves them: every link whose target exists stays inside.
    let root = dest
        .canonicalize()
        .map_err(io(format!("resolving {}", dest.display())))?;
    for (path, _) in &links {
        if let Ok(resolved) = dest.join(path).canonicalize() {
            if !resolved.starts_with(&root) {
                return Err(refuse(path, "symlink resolves outside the job directory"));
            }
        }
    }
    Ok(summary)
}

/// Writes one file's bytes, never more than the header promised.
fn write_file(
    entry: &mut impl Read,
    target: &Path,
    size: u64,
    mode: u32,
) -> Result<(), ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(target)
        .map_err(io(format!("creating {}", target.display())))?;
    let copied = std::io::copy(&mut entry.take(size), &mut file)
        .map_err(io(format!("writing {}", target.display())))?;
    if copied != size {
        return Err(refuse(target, "the archive ends inside this file"));
    }
    Ok(())
}

/// Packs `dir` into a gzip-compressed tar with sorted entries and no times or owners, so the same
/// tree always gives the same bytes. Refuses trees above `max_bytes` of file content.
pub fn pack(dir: &Path, max_bytes: u64) -> Result<Vec<u8>, ArchiveError> {
    if !dir.is_dir() {
        return Err(ArchiveError::Io {
            context: format!("packing {}", dir.display()),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut total = 0_u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let full = dir.join(&relative);
        let mut children: Vec<_> = std::fs::read_dir(&full)
            .map_err(io(format!("reading {}", full.display())))?
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .collect();
        children.sort();
        // Reversed onto the stack so the walk, and the archive, go in sorted order.
        for name in children.iter().rev() {
            let child = relative.join(name);
            let meta = std::fs::symlink_metadata(dir.join(&child))
                .map_err(io(format!("reading {}", dir.join(&child).display())))?;
            if meta.is_dir() {
                stack.push(child);
            }
        }
        for name in children {
            let child = relative.join(&name);
            let path = dir.join(&child);
            let meta = std::fs::symlink_metadata(&path)
                .map_err(io(format!("reading {}", path.display())))?;
            if meta.is_file() {
                total += meta.len();
                if total > max_bytes {
                    return Err(ArchiveError::TooLarge { limit: max_bytes });
                }
            } else if !meta.is_dir() && !meta.file_type().is_symlink() {
                continue;
            }
            builder
                .append_path_with_name(&path, &child)
                .map_err(io(format!("packing {}", path.display())))?;
        }
    }
    let encoder = builder.into_inner().map_err(io("finishing the archive"))?;
    encoder.finish().map_err(io("finishing the archive"))
}

#[cfg(test)]
mod tests;
