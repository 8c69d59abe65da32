//! Memory allocator tuning for model processes. candle's CPU backend allocates a fresh buffer
//! for every op; glibc's defaults hand large freed blocks back to the kernel at once, so the
//! next op faults its pages in again (about a tenth of a training step on the recipe model).
//! Keeping freed memory for reuse removes that.

/// Tells glibc's malloc to keep freed memory (no trimming, no per-allocation mmap up to 1 GiB).
/// Called once per process by the roles that build a model; a no-op elsewhere.
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is called before this process
        // allocates model memory, and glibc serialises it with other malloc calls.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    });
}
