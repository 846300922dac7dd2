//! Process-wide settings a program that hosts a [`Store`](crate::Store) should make
//! before it starts its threads.

/// Turns transparent huge pages off for this process (Linux; a no-op elsewhere), unless
/// `MIMALLOC_ALLOW_THP` is set, in which case the allocator's own setting stands.
///
/// Why: sled allocates a fresh IO buffer (8 MiB of capacity) for every flush, and
/// mimalloc advises the kernel to back its arenas with 2 MiB pages. The first touch of
/// each 2 MiB of a buffer then makes the kernel zero all of it, for a group that writes
/// ~20 KB: `clear_page_erms` was 40 % of the writer thread's samples under 64 appenders
/// (`perf record`, `storage/examples/append_load.rs`). With 4 KiB pages only what is
/// written is zeroed: durable single appends went from ~32 000 to ~47 000/s in process
/// and the writer's CPU per event from ~16 µs to ~9 µs (BENCHMARKS.md).
///
/// Returns whether the setting was changed.
pub fn disable_transparent_huge_pages() -> bool {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return false;
    }
    disable_thp()
}

#[cfg(target_os = "linux")]
fn disable_thp() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; it
    // sets a flag on this process's address space that the kernel reads at page faults.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn disable_thp() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_kernel_reports_huge_pages_off_after_the_call() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            assert!(!super::disable_transparent_huge_pages());
            return;
        }
        assert!(super::disable_transparent_huge_pages());
        // SAFETY: as above; PR_GET_THP_DISABLE only reads the flag.
        #[allow(unsafe_code)]
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
