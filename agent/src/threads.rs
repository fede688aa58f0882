//! CPU thread counts for inference, fixed once per process before any job runs.
//!
//! candle 0.11 sizes two global pools lazily, on first use: a barrier pool that runs the
//! quantised matmuls (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the number of
//! physical cores) and a rayon pool (`RAYON_NUM_THREADS`, which is also what
//! `candle_core::utils::get_num_threads` reads for f32 matmuls). The only way in is
//! those variables, so [`init`] sets them once, when `lem` or `lem-agent` starts and
//! before any candle op; jobs never set them. The count in use is recorded with each
//! result (`compute_device.threads`).

use std::sync::OnceLock;

static REQUESTED: OnceLock<Option<usize>> = OnceLock::new();

/// Fixes the CPU thread count of this process: `Some(n)` (n > 0) sets candle's pools to
/// `n` threads, `None` leaves candle's default. Only the first call counts; it returns
/// the count that call applied (`None`: candle's default).
pub fn init(requested: Option<usize>) -> Option<usize> {
    *REQUESTED.get_or_init(|| {
        let n = requested.filter(|&n| n > 0)?;
        // Edition 2021: set_var is safe; it runs at start-up, before lem reads these
        // variables anywhere or starts candle.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        Some(n)
    })
}

/// The CPU threads candle's quantised kernels use in this process: the barrier pool's
/// workers plus the calling thread, which takes a share of every op. Starts the pool
/// with its size fixed if nothing has yet.
pub fn in_use() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}
