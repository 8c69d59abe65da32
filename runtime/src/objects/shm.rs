//! Shared-memory segments for objects, so that a process on the same machine maps an object
//! instead of streaming it: a put is one copy into a segment, a fetch maps the owner's segment
//! (no copy at all).
//!
//! A segment is an anonymous memory file (`memfd_create`) owned by the putting worker: its
//! memory goes away with the last process that maps it or holds it open, so no crash leaves
//! shared memory behind once those processes are gone.
//! Another process opens it through `/proc/OWNER_PID/fd/FD` after checking the file's inode and
//! the host's boot id, then checks a random key in the segment's header.
//!
//! The header (one page, before the data) holds the key, the generation of the object the
//! segment holds (0 when it holds none) and a pin count. Every view (the owner's own and each
//! reader's) pins the segment while it lives. A released segment goes back to a pool of free
//! segments, whose pages are already in memory (fresh pages cost more to fault in than to fill
//! them), unless a view still pins it (then it is dropped: its memory lives on in the readers'
//! mappings until they end). A pooled segment is written again only after taking the pin count
//! from 0 to a lock bit, so a segment someone still reads is never overwritten. A reader that pins while the owner holds the lock,
//! or that finds another generation, unpins and reports the object gone.

use bytes::Bytes;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bytes before the data: one page, so the data is page-aligned.
const HEADER_BYTES: usize = 4096;
/// Set in the pin count while the owner (re)writes the segment.
const LOCKED: u64 = 1 << 63;
/// Free segments kept for reuse, in bytes of capacity (`TROUPE_OBJECT_POOL_BYTES` overrides).
const DEFAULT_POOL_BYTES: usize = 2 << 30;
/// Segment capacities are multiples of this (a segment is reused for objects up to twice
/// smaller, so sizes need not match exactly).
const CAPACITY_STEP: usize = 64 << 10;

/// The header at the start of every segment. Shared between processes: only atomics.
#[repr(C)]
struct Header {
    key: AtomicU64,
    generation: AtomicU64,
    pins: AtomicU64,
    len: AtomicU64,
}

/// Where an object lives in shared memory, as a reference carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShmLocation {
    pub boot_id: String,
    pub pid: u32,
    pub fd: i32,
    pub device: u64,
    pub inode: u64,
    pub key: u64,
    pub generation: u64,
    pub len: u64,
}

/// A mapping of a segment file; unmapped when dropped.
struct Mapping {
    address: *mut u8,
    size: usize,
}

// SAFETY: the mapping is plain shared memory; all shared mutation goes through the header's
// atomics, and data bytes are written only by the owner while it holds the lock bit.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: i32, size: usize, populate: bool) -> std::io::Result<Mapping> {
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: maps `size` bytes of an open file descriptor; the result is checked.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            address: address.cast(),
            size,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: every mapping is at least HEADER_BYTES long and page-aligned; Header is atomics.
        unsafe { &*(self.address as *const Header) }
    }

    fn data(&self, len: usize) -> &[u8] {
        // SAFETY: callers check `HEADER_BYTES + len <= size`.
        unsafe { std::slice::from_raw_parts(self.address.add(HEADER_BYTES), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe {
            libc::munmap(self.address.cast(), self.size);
        }
    }
}

/// A pinned, read-only view of an object's bytes; unpins when dropped.
struct View {
    mapping: Arc<Mapping>,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.mapping.data(self.len)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.mapping.header().pins.fetch_sub(1, Ordering::Release);
    }
}

/// Pins `mapping` for `generation` and returns a view of `len` bytes, or `None` if the segment
/// holds another object or is being rewritten.
fn pinned_view(mapping: Arc<Mapping>, generation: u64, len: usize) -> Option<Bytes> {
    if HEADER_BYTES + len > mapping.size {
        return None;
    }
    let header = mapping.header();
    // SeqCst pairs with `release`: it retires the generation, then reads the pins.
    let before = header.pins.fetch_add(1, Ordering::SeqCst);
    let current = header.generation.load(Ordering::SeqCst);
    if before & LOCKED != 0 || current != generation || generation == 0 {
        header.pins.fetch_sub(1, Ordering::Release);
        return None;
    }
    Some(Bytes::from_owner(View { mapping, len }))
}

/// A segment this process owns.
pub(crate) struct Segment {
    fd: i32,
    device: u64,
    inode: u64,
    capacity: usize,
    mapping: Arc<Mapping>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this segment opened; mappings keep the memory alive.
        unsafe {
            libc::close(self.fd);
        }
    }
}

impl Segment {
    fn create(capacity: usize) -> std::io::Result<Segment> {
        let name = CString::new("troupe-object").map_err(std::io::Error::other)?;
        // SAFETY: creates an anonymous memory file; the descriptor is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let size = HEADER_BYTES + capacity;
        let setup = (|| {
            // SAFETY: sizes the file this function just created.
            if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let (device, inode, _) = file_identity(fd)?;
            let mapping = Mapping::map(fd, size, true)?;
            mapping
                .header()
                .key
                .store(uuid::Uuid::new_v4().as_u64_pair().0 | 1, Ordering::Relaxed);
            Ok((device, inode, mapping))
        })();
        match setup {
            Ok((device, inode, mapping)) => Ok(Segment {
                fd,
                device,
                inode,
                capacity,
                mapping: Arc::new(mapping),
            }),
            Err(err) => {
                // SAFETY: closes the descriptor created above.
                unsafe { libc::close(fd) };
                Err(err)
            }
        }
    }

    /// Takes the segment for rewriting if nobody pins it.
    fn try_lock(&self) -> bool {
        self.mapping
            .header()
            .pins
            .compare_exchange(0, LOCKED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Writes `parts` back to back as object `generation` (the segment must be locked) and
    /// unlocks it.
    fn fill(&self, generation: u64, parts: &[&[u8]]) {
        let header = self.mapping.header();
        header.generation.store(generation, Ordering::Release);
        let mut at = HEADER_BYTES;
        for part in parts {
            // SAFETY: the lock bit keeps every reader out, and the parts fit the capacity.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.mapping.address.add(at),
                    part.len(),
                );
            }
            at += part.len();
        }
        header
            .len
            .store((at - HEADER_BYTES) as u64, Ordering::Relaxed);
        header.pins.fetch_sub(LOCKED, Ordering::Release);
    }

    /// Where the data area starts: the owner writes there, up to `capacity` bytes, only while
    /// it holds the lock bit (`allocate` or `relock` gave it).
    pub(crate) fn data_pointer(&self) -> *mut u8 {
        // SAFETY: the mapping is at least HEADER_BYTES long.
        unsafe { self.mapping.address.add(HEADER_BYTES) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The data area, read-only, for the owner (`len` must fit the capacity).
    pub(crate) fn data(&self, len: usize) -> &[u8] {
        assert!(
            len <= self.capacity,
            "{len} bytes past a {}-byte segment",
            self.capacity
        );
        self.mapping.data(len)
    }

    /// Publishes the locked segment's `len` bytes as a new object and unlocks it; returns the
    /// object's generation.
    pub(crate) fn publish(&self, len: usize) -> u64 {
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let header = self.mapping.header();
        header.generation.store(generation, Ordering::Release);
        header.len.store(len as u64, Ordering::Relaxed);
        header.pins.fetch_sub(LOCKED, Ordering::Release);
        generation
    }

    /// Takes the segment back for rewriting: no new reader may pin the published object, and
    /// the lock is taken once no reader pins it. False if a reader still does.
    pub(crate) fn relock(&self) -> bool {
        let header = self.mapping.header();
        let generation = header.generation.load(Ordering::SeqCst);
        self.retire();
        if self.try_lock() {
            return true;
        }
        // Still read: the published object stays published.
        header.generation.store(generation, Ordering::SeqCst);
        false
    }

    /// A pinned view of object `generation` in this segment, if it still holds it.
    pub(crate) fn view(&self, generation: u64, len: usize) -> Option<Bytes> {
        pinned_view(self.mapping.clone(), generation, len)
    }

    /// Where readers find object `generation` of `len` bytes.
    pub(crate) fn location(&self, generation: u64, len: usize) -> ShmLocation {
        ShmLocation {
            boot_id: boot_id().to_string(),
            pid: std::process::id(),
            fd: self.fd,
            device: self.device,
            inode: self.inode,
            key: self.mapping.header().key.load(Ordering::Relaxed),
            generation,
            len: len as u64,
        }
    }

    /// No new reader may pin the object any more (views already made stay valid); returns
    /// whether some view still pins it.
    fn retire(&self) -> bool {
        let header = self.mapping.header();
        header.generation.store(0, Ordering::SeqCst);
        header.pins.load(Ordering::SeqCst) != 0
    }
}

/// Free segments of this process, ready to be written again (none is pinned: a segment still
/// pinned when its object is released is dropped instead, its memory living on in the readers'
/// mappings until they end).
struct Pool {
    free: Vec<Arc<Segment>>,
    limit: usize,
}

impl Pool {
    fn held(&self) -> usize {
        self.free.iter().map(|segment| segment.capacity).sum()
    }
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn pool_limit() -> usize {
    std::env::var("TROUPE_OBJECT_POOL_BYTES")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_POOL_BYTES)
}

/// Copies `bytes` into a segment (a free one that fits, else a new one) and returns it with the
/// object's generation.
pub(crate) fn store(bytes: &[u8]) -> std::io::Result<(Arc<Segment>, u64)> {
    store_parts(&[bytes])
}

/// As `store`, for an object made of `parts` back to back.
pub(crate) fn store_parts(parts: &[&[u8]]) -> std::io::Result<(Arc<Segment>, u64)> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    let segment = allocate(len)?;
    segment.fill(generation, parts);
    Ok((segment, generation))
}

/// A locked segment of at least `len` bytes (a free one that fits, else a new one), for the
/// owner to write and then `publish`.
pub(crate) fn allocate(len: usize) -> std::io::Result<Arc<Segment>> {
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let pool = pool.as_mut()?;
        let mut candidates: Vec<usize> = (0..pool.free.len())
            .filter(|&i| {
                let capacity = pool.free[i].capacity;
                capacity >= len && capacity <= len.max(1 << 20) * 2
            })
            .collect();
        candidates.sort_by_key(|&i| pool.free[i].capacity);
        let chosen = candidates.into_iter().find(|&i| pool.free[i].try_lock())?;
        Some(pool.free.remove(chosen))
    });
    match reused {
        Some(segment) => Ok(segment),
        None => {
            raise_open_file_limit();
            let segment = Arc::new(Segment::create(len.next_multiple_of(CAPACITY_STEP))?);
            if !segment.try_lock() {
                return Err(std::io::Error::other("a fresh segment was already pinned"));
            }
            Ok(segment)
        }
    }
}

/// The object left `segment`: no new reader may pin it. An unpinned segment is kept for reuse
/// (the oldest free ones make room if the pool is full); a pinned one is dropped.
pub(crate) fn release(segment: Arc<Segment>) {
    if segment.retire() {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let pool = pool.get_or_insert_with(|| Pool {
            free: Vec::new(),
            limit: pool_limit(),
        });
        if segment.capacity > pool.limit {
            return;
        }
        while pool.held() + segment.capacity > pool.limit && !pool.free.is_empty() {
            pool.free.remove(0);
        }
        pool.free.push(segment);
    }
}

/// Each segment holds a file descriptor: lift the soft limit on open files to the hard one once,
/// so many live objects cannot starve the process's sockets.
fn raise_open_file_limit() {
    static RAISED: OnceLock<()> = OnceLock::new();
    RAISED.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads and sets this process's own limit with a valid struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    });
}

/// Maps an object another process on this machine holds; `None` when it is not reachable that
/// way (another machine, the owner gone, the object released), so the caller streams it instead.
pub(crate) fn map_remote(location: &ShmLocation) -> Option<Bytes> {
    map_remote_with(location, false)
}

/// As `map_remote`; with `populate` the whole mapping's page tables are set up at once (a reader
/// that will read every byte saves a page fault per page).
pub(crate) fn map_remote_with(location: &ShmLocation, populate: bool) -> Option<Bytes> {
    map_remote_or_why(location, populate).ok()
}

/// As `map_remote_with`, saying why the object could not be mapped.
pub(crate) fn map_remote_or_why(
    location: &ShmLocation,
    populate: bool,
) -> Result<Bytes, &'static str> {
    if location.boot_id != boot_id() || location.boot_id.is_empty() {
        return Err("it is on another machine");
    }
    let text = format!("/proc/{}/fd/{}", location.pid, location.fd);
    // Look before opening: a stale location (owner gone, pid or fd reused) may name any file,
    // even a terminal whose open would block; only the expected memory file is opened.
    let before = std::fs::metadata(&text).map_err(|_| "its owner's descriptor is gone")?;
    if !before.is_file() || before.ino() != location.inode || before.dev() != location.device {
        return Err("its owner's descriptor now names another file");
    }
    let len = usize::try_from(location.len).map_err(|_| "too large")?;
    if let Some(mapping) = remote_mappings::cached(location, HEADER_BYTES + len) {
        return pinned_view(mapping, location.generation, len)
            .ok_or("the segment holds another object now");
    }
    let path = CString::new(text).map_err(|_| "an impossible path")?;
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    // SAFETY: opens a path; the descriptor is checked and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err("its owner's descriptor cannot be opened");
    }
    let mapped = (|| {
        let (device, inode, size) = file_identity(fd).map_err(|_| "fstat failed")?;
        if inode != location.inode || device != location.device || size < HEADER_BYTES + len {
            return Err("the file is not the segment named");
        }
        let mapping = Mapping::map(fd, size, populate).map_err(|_| "mmap failed")?;
        if mapping.header().key.load(Ordering::Relaxed) != location.key {
            return Err("the segment's key differs");
        }
        let mapping = Arc::new(mapping);
        remote_mappings::keep(location, mapping.clone());
        pinned_view(mapping, location.generation, len).ok_or("the segment holds another object now")
    })();
    // SAFETY: closes the descriptor opened above; the mapping keeps the memory.
    unsafe { libc::close(fd) };
    mapped
}

/// Other processes' segments this process has mapped, kept mapped for the next object in the
/// same segment (owners reuse their segments from a pool, and a shared buffer stays the same
/// segment): a mapping costs more to set up and tear down than a large copy out of it. A kept
/// mapping whose owner no longer holds the segment can never be named again and only keeps
/// memory alive: those are dropped whenever another is kept. Live ones cost address space only,
/// so they are kept up to a count, not a size.
mod remote_mappings {
    use super::{Mapping, Ordering, ShmLocation};
    use std::sync::{Arc, Mutex};

    struct Kept {
        device: u64,
        inode: u64,
        key: u64,
        /// Where the owner holds it: once that no longer names the segment, the owner has let
        /// it go and no location can name it again, so the mapping only keeps memory alive.
        owner_fd: String,
        mapping: Arc<Mapping>,
    }

    impl Kept {
        fn owner_still_holds(&self) -> bool {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&self.owner_fd)
                .is_ok_and(|meta| meta.ino() == self.inode && meta.dev() == self.device)
        }
    }

    static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

    /// Live mappings kept at most (the oldest go first).
    const MOST: usize = 4096;

    /// The kept mapping of the segment `location` names, if it is at least `size` bytes.
    pub(super) fn cached(location: &ShmLocation, size: usize) -> Option<Arc<Mapping>> {
        let kept = KEPT.lock().ok()?;
        kept.iter()
            .find(|kept| {
                kept.device == location.device
                    && kept.inode == location.inode
                    && kept.key == location.key
                    && kept.mapping.size >= size
                    && kept.mapping.header().key.load(Ordering::Relaxed) == location.key
            })
            .map(|kept| kept.mapping.clone())
    }

    pub(super) fn keep(location: &ShmLocation, mapping: Arc<Mapping>) {
        let Ok(mut kept) = KEPT.lock() else {
            return;
        };
        kept.retain(|old| {
            !(old.device == location.device && old.inode == location.inode)
                && old.owner_still_holds()
        });
        if kept.len() >= MOST {
            kept.remove(0);
        }
        kept.push(Kept {
            device: location.device,
            inode: location.inode,
            key: location.key,
            owner_fd: format!("/proc/{}/fd/{}", location.pid, location.fd),
            mapping,
        });
    }
}

/// The device, inode and size of an open file.
fn file_identity(fd: i32) -> std::io::Result<(u64, u64, usize)> {
    // SAFETY: fstat fills a zeroed stat buffer for an open descriptor.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.st_dev, stat.st_ino, stat.st_size.max(0) as usize))
}

/// This boot of this machine: processes that share it can share memory files.
pub(crate) fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|text| text.trim().to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn another_mapping_sees_the_bytes_and_a_released_object_is_gone() {
        let bytes = pattern(3 << 20, 1);
        let (segment, generation) = store(&bytes).expect("store");
        let location = segment.location(generation, bytes.len());
        let mapped = map_remote(&location).expect("mapped through /proc");
        assert_eq!(&mapped[..], &bytes[..]);
        let own = segment.view(generation, bytes.len()).expect("own view");
        assert_eq!(&own[..], &bytes[..]);
        drop(own);
        release(segment);
        assert!(map_remote(&location).is_none(), "a released object maps");
        assert_eq!(
            &mapped[..],
            &bytes[..],
            "a view made before release stays valid"
        );
    }

    #[test]
    fn wrong_locations_are_refused() {
        let bytes = pattern(70 << 20, 2);
        let (segment, generation) = store(&bytes).expect("store");
        let good = segment.location(generation, bytes.len());
        let wrong = [
            ShmLocation {
                key: good.key ^ 2,
                ..good.clone()
            },
            ShmLocation {
                inode: good.inode + 1,
                ..good.clone()
            },
            ShmLocation {
                device: good.device + 1,
                ..good.clone()
            },
            ShmLocation {
                generation: generation + 1,
                ..good.clone()
            },
            ShmLocation {
                boot_id: "another-machine".to_string(),
                ..good.clone()
            },
            ShmLocation {
                fd: 0,
                ..good.clone()
            },
            ShmLocation {
                len: (segment.capacity + 1) as u64,
                ..good.clone()
            },
        ];
        for location in &wrong {
            assert!(map_remote(location).is_none(), "{location:?} mapped");
        }
        assert!(map_remote(&good).is_some());
        release(segment);
    }

    #[test]
    fn a_pinned_segment_is_never_rewritten_and_a_free_one_is_reused() {
        // This test's size (150 MiB) is far from the other tests', so the shared pool never
        // hands it another test's segments (a segment is reused only for at most twice less).
        let first = pattern(150 << 20, 3);
        let (segment, generation) = store(&first).expect("store");
        let first_inode = segment.inode;
        let location = segment.location(generation, first.len());
        let reader = map_remote(&location).expect("mapped");
        release(segment);
        let second = pattern(150 << 20, 4);
        let (other, other_generation) = store(&second).expect("store while pinned");
        let other_inode = other.inode;
        let other_location = other.location(other_generation, second.len());
        assert_ne!(
            other_inode, first_inode,
            "a segment a reader pins was reused"
        );
        assert_eq!(
            &reader[..],
            &first[..],
            "a pinned object changed under its reader"
        );
        drop(reader);
        release(other);
        let (again, again_generation) = store(&first).expect("store after unpinning");
        assert_eq!(
            again.inode, other_inode,
            "the free segment was not reused (a segment pinned at release is dropped)"
        );
        assert!(
            map_remote(&other_location).is_none(),
            "a released generation maps"
        );
        let fresh = map_remote(&again.location(again_generation, first.len())).expect("mapped");
        assert_eq!(&fresh[..], &first[..]);
        drop(fresh);
        release(again);
    }

    #[test]
    fn a_segment_being_rewritten_cannot_be_pinned() {
        let bytes = pattern(12 << 20, 5);
        let (segment, generation) = store(&bytes).expect("store");
        let location = segment.location(generation, bytes.len());
        assert!(
            segment.try_lock(),
            "nobody pins it, so the owner may rewrite it"
        );
        assert!(map_remote(&location).is_none(), "pinned while locked");
        let replacement = pattern(12 << 20, 6);
        segment.fill(generation + 1000, &[&replacement]);
        assert!(map_remote(&location).is_none(), "the old generation maps");
        let renewed = map_remote(&segment.location(generation + 1000, replacement.len()))
            .expect("the new generation maps");
        assert_eq!(&renewed[..], &replacement[..]);
        assert!(!segment.try_lock(), "a pinned segment was locked");
        drop(renewed);
        release(segment);
    }
}
