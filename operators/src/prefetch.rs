//! Software prefetch: a hint that memory will be read soon, so that a sweep
//! over scattered heap objects (a tick re-scores every live idea, each a box,
//! an id and a vector of its own) overlaps their cache misses instead of
//! waiting on each in turn. A hint only: it never faults and changes no result.

/// Asks for the cache line holding `p` (no-op where not supported).
#[inline(always)]
pub fn line<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch reads nothing architecturally and cannot fault, for
    // any address; SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const u8 as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the `bytes` starting at `p`, a line at a time.
#[inline(always)]
pub fn lines<T: ?Sized>(p: *const T, bytes: usize) {
    let start = p as *const u8;
    for offset in (0..bytes).step_by(64) {
        line(start.wrapping_add(offset));
    }
}
