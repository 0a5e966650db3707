//! Giving memory that the C heap holds free back to the operating system.
//!
//! ONNX Runtime and usearch are C++ and allocate through glibc's malloc (strata's own code
//! uses mimalloc). glibc returns freed pages of its main heap only from the top, so the
//! model's load-time buffers (the parsed protobuf, the graph before optimisation) and the
//! varying tensors of ingestion batches stay resident after they are freed. Measured on a
//! fresh server right after startup: `malloc_trim(0)` took the anonymous resident memory
//! from 187 MB to 127 MB.
//!
//! The one `unsafe` block of the workspace lives here: a call into glibc that takes no
//! pointers and has no caller-side invariants.
//!
//! Must not import: anything of strata's.

/// Asks glibc to return the free pages of every malloc arena to the system; returns whether
/// anything was released. Elsewhere (musl, other systems) it does nothing and returns false.
///
/// glibc walks and locks each arena in turn: call it after a burst (model load, a periodic
/// tick), not on a request path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; glibc serialises it with every other
    // allocator call.
    unsafe { malloc_trim(0) == 1 }
}

/// Asks the C allocator to return free pages; a no-op off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}
