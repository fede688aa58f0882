//! lem's CPU compute kernels: plain slices in, plain slices out, no dependencies.
//!
//! A crate of its own so that the workspace's `Cargo.toml` can build it optimised in dev
//! and test profiles too (SIMD intrinsics at opt-level 0 run ~30× slower, which would make
//! every engine test crawl), as it already does for candle.

pub mod dispatch;
pub mod grouped;
mod grouped_tile;
pub mod parallel;
pub mod q4_1;
pub mod q5_0;
pub mod q8_0;
#[cfg(test)]
mod test_support;
