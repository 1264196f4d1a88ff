//! Settings of the C allocator (glibc's malloc, which Rust's `System` allocator calls) for
//! tensor work.

/// Keep memory that tensors free inside the process for the next allocation, instead of handing
/// it back to the kernel. glibc maps every large block (feature maps, Winograd buffers, gradient
/// products) freshly from the kernel and unmaps it when freed, so each training step or batch
/// pays a page fault and a page clearing for every 4 KiB it touches again (seen: 10% of a VGG16
/// block5 fine-tune step in page faults). With large blocks taken from the heap and the heap
/// never trimmed, a step reuses the pages of the last one. On an AVX-512 Xeon (three
/// interleaved pairs): VGG16 block5 step b8 282 -> 258 ms, EfficientNet-Lite0 last-two-blocks
/// step b16 72 -> 63 ms, Dense head step 1.59 -> 1.45 ms, `retrain fit` 6.4 -> 6.0 s with peak
/// RSS 366 -> 370 MiB. Freed memory goes back to the system only when the process ends, which
/// suits a command-line run. Call it once, first thing in `main`; it does nothing where the C
/// library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before other threads
    // start, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
