//! Same-machine messages copied once: the receiver reads the sender's memory directly
//! (`process_vm_readv`) while the sender waits for its acknowledgement, so a message crosses
//! with one copy and no shared segment. The sender describes its message as the addresses and
//! lengths of its parts; the receiver pairs them with its own targets and reads in batches of
//! up to 1,024 pieces per system call. Whatever fails (kernels or containers that forbid it with
//! EPERM or ENOSYS, a description that does not fit), the receiver refuses and the sender sends
//! the bytes another way.

/// A message's parts in the sender's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub pid: u32,
    pub id: u64,
    pub parts: Vec<(u64, u64)>,
}

/// Largest description accepted (a message of a million parts).
pub(super) const MAX_DESCRIPTION_BYTES: usize = 16 << 20;
/// Pieces per system call (the kernel's limit on an I/O vector).
const BATCH: usize = 1024;

impl Described {
    /// Describes `parts` of this process as message `id`.
    pub fn of(parts: &[&[u8]], id: u64) -> Self {
        Described {
            pid: std::process::id(),
            id,
            parts: parts
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| (part.as_ptr() as u64, part.len() as u64))
                .collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.parts.len() * 16);
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&(self.parts.len() as u32).to_le_bytes());
        for (address, len) in &self.parts {
            out.extend_from_slice(&address.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let take = |at: usize, n: usize| {
            bytes
                .get(at..at + n)
                .ok_or_else(|| format!("a direct-read description cut short at byte {at}"))
        };
        let u32_at = |at| -> Result<u32, String> {
            Ok(u32::from_le_bytes(
                take(at, 4)?.try_into().map_err(|_| "u32")?,
            ))
        };
        let u64_at = |at| -> Result<u64, String> {
            Ok(u64::from_le_bytes(
                take(at, 8)?.try_into().map_err(|_| "u64")?,
            ))
        };
        let pid = u32_at(0)?;
        let id = u64_at(4)?;
        let count = u32_at(12)? as usize;
        if bytes.len() != 16 + count * 16 {
            return Err(format!(
                "a direct-read description of {} bytes for {count} parts",
                bytes.len()
            ));
        }
        let parts = (0..count)
            .map(|i| Ok((u64_at(16 + i * 16)?, u64_at(24 + i * 16)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Described { pid, id, parts })
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }
}

/// Reads the described parts of the sender's memory into `targets`, in order (their lengths
/// must add up to the description's total).
pub(super) fn read_into(described: &Described, targets: &mut [&mut [u8]]) -> Result<(), String> {
    let wanted: usize = targets.iter().map(|t| t.len()).sum();
    if wanted as u64 != described.total() {
        return Err(format!(
            "described {} bytes where {wanted} were expected",
            described.total()
        ));
    }
    // Pair remote parts with local targets into pieces of equal length on both sides.
    let mut local: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut remote: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut pending = 0_usize;
    let mut parts = described.parts.iter().copied();
    let (mut address, mut left) = parts.next().unwrap_or((0, 0));
    for target in targets.iter_mut() {
        // One pointer per target, offsets from it: the iovecs already batched stay valid.
        let (base, len) = (target.as_mut_ptr(), target.len());
        let mut at = 0;
        while at < len {
            while left == 0 {
                (address, left) = parts.next().ok_or("the parts ran out early")?;
            }
            let n = (len - at).min(left as usize);
            local.push(libc::iovec {
                // SAFETY: `at + n <= len`: within this target.
                iov_base: unsafe { base.add(at) }.cast(),
                iov_len: n,
            });
            remote.push(libc::iovec {
                iov_base: address as *mut libc::c_void,
                iov_len: n,
            });
            pending += n;
            at += n;
            address += n as u64;
            left -= n as u64;
            if local.len() == BATCH {
                read_batch(described.pid, &local, &remote, pending)?;
                local.clear();
                remote.clear();
                pending = 0;
            }
        }
    }
    if !local.is_empty() {
        read_batch(described.pid, &local, &remote, pending)?;
    }
    Ok(())
}

fn read_batch(
    pid: u32,
    local: &[libc::iovec],
    remote: &[libc::iovec],
    expected: usize,
) -> Result<(), String> {
    // SAFETY: every local iovec points into a target slice this function's caller borrows
    // mutably; the remote ones name the sender's memory, which the kernel checks.
    let read = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if read < 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!("reading the sender's memory (pid {pid}): {err}"));
    }
    if read as usize != expected {
        return Err(format!(
            "read {read} of {expected} bytes of the sender's memory"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_round_trips_and_reads_back_across_uneven_splits() {
        let (a, b) = (
            vec![1_u8; 3000],
            (0..5000).map(|i| i as u8).collect::<Vec<u8>>(),
        );
        let described = Described::of(&[&a, &[], &b], 7);
        assert_eq!(Described::decode(&described.encode()).unwrap(), described);
        assert!(Described::decode(&described.encode()[..20]).is_err());
        // Targets cut differently from the parts: 1000 + 4500 + 2500.
        let (mut x, mut y, mut z) = (vec![0_u8; 1000], vec![0_u8; 4500], vec![0_u8; 2500]);
        read_into(&described, &mut [&mut x, &mut y, &mut z]).unwrap();
        let joined: Vec<u8> = [x, y, z].concat();
        assert_eq!(joined, [a, b].concat());
        let mut short = vec![0_u8; 10];
        assert!(read_into(&described, &mut [&mut short])
            .unwrap_err()
            .contains("expected"));
    }
}
