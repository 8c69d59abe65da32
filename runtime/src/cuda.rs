//! CUDA through cudarc (the `cuda` feature): finding the GPUs of a node through the driver API,
//! and whether NCCL can be loaded. Libraries are loaded at run time, so this compiles and runs
//! on machines without CUDA; every entry point checks that the library is present first, since
//! cudarc panics when it is not.

use troupe_proto::GpuDevice;

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NCCL library can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the NCCL library by its usual names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// The GPUs the CUDA driver sees (respecting CUDA_VISIBLE_DEVICES); empty without a driver.
pub fn devices() -> Vec<GpuDevice> {
    if !driver_present() {
        return Vec::new();
    }
    let count = match cudarc::driver::result::init()
        .and_then(|_| cudarc::driver::result::device::get_count())
    {
        Ok(count) => count,
        Err(err) => {
            tracing::warn!(%err, "the CUDA driver is present but cannot count devices");
            return Vec::new();
        }
    };
    (0..count)
        .map(|ordinal| {
            let model = cudarc::driver::result::device::get(ordinal)
                .and_then(cudarc::driver::result::device::get_name)
                .unwrap_or_else(|_| "unknown".to_string());
            GpuDevice {
                index: ordinal as u32,
                model,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn detection_never_panics_without_cuda() {
        let devices = super::devices();
        if !super::driver_present() {
            assert!(devices.is_empty());
        }
    }
}
