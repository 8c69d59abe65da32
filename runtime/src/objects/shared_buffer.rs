//! A byte buffer that lives in shared memory, so that processes on the same machine read it in
//! place: a resharding source kept in one (`reshard::execute_from_shared`) reaches each
//! destination on its machine with a single copy, from this buffer straight into the
//! destination's, instead of one copy into a message and another out of it.

use super::shm::{self, Segment};
use std::sync::Arc;

/// Why a shared buffer could not be made or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum SharedBufferError {
    #[error("making a {len}-byte shared buffer: {source}")]
    Allocate {
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("a reader still holds the shared buffer; it cannot be rewritten now")]
    StillRead,
}

/// A byte buffer in shared memory, readable in place by processes on this machine.
pub struct SharedBuffer {
    segment: Arc<Segment>,
    len: usize,
    generation: u64,
}

impl SharedBuffer {
    /// A zeroed buffer of `len` bytes (its pages taken from the pool when one fits).
    pub fn new(len: usize) -> Result<Self, SharedBufferError> {
        let segment =
            shm::allocate(len).map_err(|source| SharedBufferError::Allocate { len, source })?;
        let mut buffer = SharedBuffer {
            segment,
            len,
            generation: 0,
        };
        // `allocate` returns the segment locked: no reader can pin it.
        buffer.locked_bytes().fill(0);
        buffer.generation = buffer.segment.publish(len);
        Ok(buffer)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        self.segment.data(self.len)
    }

    /// Rewrites the buffer with `write` (given all `len` bytes, as they were), then publishes it
    /// again; readers that mapped it see the new bytes under a new generation. Refused while a
    /// reader still reads it (sends from it return only once their readers are done; a reader
    /// that comes late and pins it briefly is waited for, up to 50 ms).
    pub fn rewrite(&mut self, write: impl FnOnce(&mut [u8])) -> Result<(), SharedBufferError> {
        let mut tries = 0;
        while !self.segment.relock() {
            tries += 1;
            if tries == 50 {
                return Err(SharedBufferError::StillRead);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        write(self.locked_bytes());
        self.generation = self.segment.publish(self.len);
        Ok(())
    }

    /// The bytes, to write. Only called while this buffer holds its segment's lock bit (fresh
    /// from `allocate`, or after `relock`), so no reader maps them meanwhile.
    fn locked_bytes(&mut self) -> &mut [u8] {
        assert!(
            self.len <= self.segment.capacity(),
            "{} bytes past a {}-byte segment",
            self.len,
            self.segment.capacity()
        );
        // SAFETY: within the mapping (checked above); `&mut self` makes this the only writer
        // in this process, and the lock bit keeps readers in other processes out.
        unsafe { std::slice::from_raw_parts_mut(self.segment.data_pointer(), self.len) }
    }

    /// Where a reader on this machine finds the buffer as it is now.
    pub(crate) fn location(&self) -> shm::ShmLocation {
        self.segment.location(self.generation, self.len)
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        shm::release(self.segment.clone());
    }
}

impl std::fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("len", &self.len)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_maps_in_place_and_is_rewritten_under_a_new_generation() {
        let mut buffer = SharedBuffer::new(10_000).unwrap();
        assert!(buffer.as_slice().iter().all(|b| *b == 0));
        buffer.rewrite(|bytes| bytes.fill(7)).unwrap();
        let location = buffer.location();
        let view = shm::map_remote(&location).expect("maps");
        assert!(view.iter().all(|b| *b == 7));
        // A reader holds it: no rewrite until it lets go.
        assert!(matches!(
            buffer.rewrite(|_| {}),
            Err(SharedBufferError::StillRead)
        ));
        drop(view);
        buffer.rewrite(|bytes| bytes[0] = 1).unwrap();
        assert!(
            shm::map_remote(&location).is_none(),
            "the old generation is gone"
        );
        assert_eq!(shm::map_remote(&buffer.location()).unwrap()[0], 1);
    }
}
