//! Keeping freed memory in the process between frames.
//!
//! tract allocates every node's output for each run and frees it after its
//! last use. glibc's malloc gives large blocks back to the kernel (`mmap`
//! above its threshold, and trimming the top of the heap), so the next frame
//! touches fresh pages again: on DLA-tiny fp32 that was about 1,640 minor page
//! faults per frame (6.4 MiB), measured with `/usr/bin/time` over 10 and 40
//! runs, and about 7 % of the frame time on our 2-vCPU machine.
//! [`retain_freed_memory`] tells malloc to keep blocks up to 32 MiB on its
//! heap and not to trim it, so steady-state frames reuse the same pages; the
//! resident size stays at the largest frame's need instead of falling between
//! frames. ONNX Runtime does the same with its arena.
//!
//! On the shipped models every node is now one of our operators, which
//! write into one arena per model and allocate nothing per frame; the
//! setting still matters for models with nodes that stay tract's. What it
//! costs is the memory freed while a model loads (the parsed graph, the
//! optimiser's copies): kept too. [`release_free_memory`] hands that back
//! once the first frames have sized every buffer.
//!
//! glibc also gives each thread that allocates its own heap ("arena"), up
//! to 8 per core; what one thread frees stays in its arena, unused by the
//! others. The stream runs a source, an inference pool, sinks and the
//! viewer's connections on their threads, and the peak resident size of
//! `dla-edge stream` (int8, viewer on, one client, 120-200 frames) was
//! 79-82 MiB with an arena per thread against 69-70 MiB with one shared
//! arena (AMD EPYC, 2 vCPU), at the same frame rate: inference allocates
//! nothing per frame, so the shared lock is not contended. [`retain_freed_memory`] sets
//! [`MALLOC_ARENAS`].

/// Largest block glibc may serve from its heap (its ceiling for
/// `M_MMAP_THRESHOLD` on 64-bit targets).
pub const KEEP_BLOCKS_UP_TO: usize = 32 << 20;

/// Free heap glibc may hold at its top before it returns memory to the kernel.
pub const TRIM_ABOVE: usize = 1 << 30;

/// Heaps glibc's malloc keeps (`M_ARENA_MAX`): one, shared by every thread.
pub const MALLOC_ARENAS: usize = 1;

/// Asks the C allocator to keep freed memory for reuse, in one heap for all
/// threads (see the module doc). Returns whether it could: `false` on C libraries without `mallopt`
/// (musl, non-Linux), where nothing changes. Call it once at start, before
/// the first model runs and before other threads start; the binaries do.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are
        // in the ranges glibc documents (it returns 0 and changes nothing
        // otherwise).
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BLOCKS_UP_TO as i32) };
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE as i32) };
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS as i32) };
        log::debug!(
            "malloc keeps freed blocks: mmap threshold {mmap}, trim threshold {trim}, arenas {arenas}"
        );
        mmap == 1 && trim == 1 && arenas == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives the free memory the C allocator holds back to the kernel (glibc's
/// `malloc_trim`: free pages anywhere in its heaps, not only at the top).
/// Call it once the first frames have run, when what is free is the
/// loading's garbage rather than a frame's working set; the stream pipeline
/// does after its third frame. Returns whether any memory was released
/// (`false` on other C libraries, where nothing happens).
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages; 0 keeps no padding.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        assert!(retain_freed_memory());
    }
}
