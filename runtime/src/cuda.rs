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

/// The GPUs the CUDA driver sees, each named by the id a worker's CUDA_VISIBLE_DEVICES must
/// hold: when this process itself runs under a numeric CUDA_VISIBLE_DEVICES (a batch scheduler's
/// slice of the machine), ordinal i is device `list[i]`. Empty without a driver.
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
    let visible: Option<Vec<u32>> = std::env::var("CUDA_VISIBLE_DEVICES").ok().and_then(|list| {
        list.split(',')
            .map(|id| id.trim().parse::<u32>().ok())
            .collect::<Option<Vec<u32>>>()
    });
    (0..count)
        .map(|ordinal| {
            let model = cudarc::driver::result::device::get(ordinal)
                .and_then(cudarc::driver::result::device::get_name)
                .unwrap_or_else(|_| "unknown".to_string());
            let index = visible
                .as_ref()
                .and_then(|ids| ids.get(ordinal as usize).copied())
                .unwrap_or(ordinal as u32);
            GpuDevice { index, model }
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
