//! Tests of packing, checking and unpacking packages, with hand-made hostile archives.

use super::*;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("troupe-archive-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds an archive entry by entry, writing names raw so that hostile paths survive.
fn hostile(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (name, kind, data, link) in entries {
        let mut header = tar::Header::new_old();
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            let raw = &mut header.as_old_mut().linkname;
            raw[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn packing_is_deterministic_and_round_trips() {
    let source = scratch("src");
    std::fs::create_dir_all(source.join("sub/deeper")).unwrap();
    std::fs::write(source.join("run.sh"), "echo hi\n").unwrap();
    std::fs::write(source.join("sub/deeper/data.txt"), "payload").unwrap();
    std::os::unix::fs::symlink("sub/deeper/data.txt", source.join("link")).unwrap();
    let first = pack(&source, 1 << 20).unwrap();
    let again = pack(&source, 1 << 20).unwrap();
    assert_eq!(first, again, "same tree, same bytes");
    let summary = validate(first.as_slice(), &Limits::default()).unwrap();
    assert_eq!(summary.entries, 5);
    let dest = scratch("dest");
    unpack(first.as_slice(), &dest, &Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("run.sh")).unwrap(),
        "echo hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("link")).unwrap(),
        "payload"
    );
    assert!(std::fs::symlink_metadata(dest.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(matches!(
        pack(&source, 5),
        Err(ArchiveError::TooLarge { limit: 5 })
    ));
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn parent_paths_are_refused_and_nothing_lands_outside() {
    let archive = hostile(&[("../escaped.txt", tar::EntryType::Regular, b"gotcha", None)]);
    let err = validate(archive.as_slice(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("../escaped.txt"), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    let parent = scratch("parent");
    let dest = parent.join("job");
    std::fs::create_dir_all(&dest).unwrap();
    assert!(unpack(archive.as_slice(), &dest, &Limits::default()).is_err());
    assert!(!parent.join("escaped.txt").exists());
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn absolute_paths_hard_links_and_devices_are_refused() {
    for (name, kind, link) in [
        ("/etc/evil", tar::EntryType::Regular, None),
        ("hard", tar::EntryType::Link, Some("/etc/passwd")),
        ("fifo", tar::EntryType::Fifo, None),
    ] {
        let archive = hostile(&[(name, kind, b"", link)]);
        let err = validate(archive.as_slice(), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

#[test]
fn symlinks_pointing_out_are_refused() {
    for target in ["/etc", "../..", "sub/../../x"] {
        let archive = hostile(&[("link", tar::EntryType::Symlink, b"", Some(target))]);
        let err = validate(archive.as_slice(), &Limits::default()).unwrap_err();
        assert!(
            err.to_string().contains("points outside"),
            "{target}: {err}"
        );
    }
    let inside = hostile(&[("a/link", tar::EntryType::Symlink, b"", Some("../b"))]);
    assert!(validate(inside.as_slice(), &Limits::default()).is_ok());
}

#[test]
fn chains_of_symlinks_that_escape_are_refused() {
    let chain = hostile(&[
        ("d/up", tar::EntryType::Symlink, b"", Some("..")),
        ("out", tar::EntryType::Symlink, b"", Some("d/up/..")),
    ]);
    let err = validate(chain.as_slice(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("out"), "{err}");
    let parent = scratch("chain");
    let dest = parent.join("job");
    std::fs::create_dir_all(&dest).unwrap();
    assert!(unpack(chain.as_slice(), &dest, &Limits::default()).is_err());
    assert!(!dest.join("out").exists(), "no escaping link is made");
    let looping = hostile(&[
        ("a", tar::EntryType::Symlink, b"", Some("b")),
        ("b", tar::EntryType::Symlink, b"", Some("a")),
    ]);
    let err = validate(looping.as_slice(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("levels of symlinks"), "{err}");
    let inside = hostile(&[
        ("d/up", tar::EntryType::Symlink, b"", Some("..")),
        ("d/e/f", tar::EntryType::Regular, b"x", None),
        ("ok", tar::EntryType::Symlink, b"", Some("d/up/d/e/f")),
    ]);
    assert!(validate(inside.as_slice(), &Limits::default()).is_ok());
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let dest = scratch("through");
    let outside = scratch("outside");
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    let archive = hostile(&[("link/file", tar::EntryType::Regular, b"x", None)]);
    let err = unpack(archive.as_slice(), &dest, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("through a symlink"), "{err}");
    assert!(!outside.join("file").exists());
    std::fs::remove_dir_all(&dest).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn size_and_entry_limits_hold() {
    let archive = hostile(&[
        ("a", tar::EntryType::Regular, &[7_u8; 600], None),
        ("b", tar::EntryType::Regular, &[7_u8; 600], None),
    ]);
    let small = Limits {
        max_unpacked_bytes: 1000,
        max_entries: 10,
    };
    assert!(matches!(
        validate(archive.as_slice(), &small),
        Err(ArchiveError::TooLarge { limit: 1000 })
    ));
    let few = Limits {
        max_unpacked_bytes: 1 << 20,
        max_entries: 1,
    };
    assert!(matches!(
        validate(archive.as_slice(), &few),
        Err(ArchiveError::TooManyEntries { limit: 1 })
    ));
    assert!(validate(&b"not gzip at all"[..], &Limits::default()).is_err());
}
