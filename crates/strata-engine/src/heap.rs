//! Keeping resident memory to what the allocators hold: the C heap's free pages given back
//! to the operating system, and no transparent huge pages.
//!
//! ONNX Runtime and usearch are C++ and allocate through glibc's malloc (strata's own code
//! uses mimalloc). glibc returns freed pages of its main heap only from the top, so the
//! model's load-time buffers (the parsed protobuf, the graph before optimisation) and the
//! varying tensors of ingestion batches stay resident after they are freed. Measured on a
//! fresh server right after startup: `malloc_trim(0)` took the anonymous resident memory
//! from 187 MB to 127 MB.
//!
//! Transparent huge pages are turned off for the process ([`disable_huge_pages`]): mimalloc
//! marks its arena `MADV_HUGEPAGE`, so on a kernel in THP `madvise` mode (Debian's default)
//! the first touch of any 2 MiB stretch of the arena faulted in a whole huge page, and
//! khugepaged later filled in sparse stretches (`max_ptes_none` 511). Pages the allocator
//! never used became resident, and resident memory rose in steps through an hour's soak
//! while the cache and everything else stayed at their bounds.
//!
//! The `unsafe` blocks here are calls into glibc that take no pointers and have no
//! caller-side invariants.
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

/// Turns transparent huge pages off for this process and its children
/// (`prctl(PR_SET_THP_DISABLE)`), so resident memory is the pages the allocators use; returns
/// whether the kernel accepted it. Call it first thing in `main`: huge pages faulted in
/// before it stay. Elsewhere it does nothing and returns false.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn disable_huge_pages() -> bool {
    use std::ffi::{c_int, c_ulong};
    const PR_SET_THP_DISABLE: c_int = 41;
    unsafe extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    // prctl is variadic: its arguments go as the unsigned longs the kernel reads.
    let (on, zero): (c_ulong, c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument (the rest must be zero) and no
    // pointers; it only sets a flag on the calling process.
    unsafe { prctl(PR_SET_THP_DISABLE, on, zero, zero, zero) == 0 }
}

/// Turns transparent huge pages off; a no-op off Linux.
#[cfg(not(target_os = "linux"))]
pub fn disable_huge_pages() -> bool {
    false
}

/// Asks the C allocator to return free pages; a no-op off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}
