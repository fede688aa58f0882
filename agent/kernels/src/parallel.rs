//! How the matmul kernels split their output over the caller's threads: work items of
//! (a chunk of activation rows, a group of weight rows), each written by one worker.

use std::ops::Range;

/// Runs `f` over `0..items` split in ranges, possibly on several threads (the caller's
/// pool); every item must be run exactly once.
pub type Parallel<'a> = &'a dyn Fn(usize, &(dyn Fn(Range<usize>) + Sync));

/// Activation rows per work item: their quantised blocks stay in L2 while a thread runs
/// its weight rows past them (64 rows × 1536 columns of Q8_0 ≈ 100 KiB).
pub const ROW_CHUNK: usize = 64;

/// Calls `cells(scratch, rows, group, out)` once for every chunk of `ROW_CHUNK` of the `m`
/// activation rows and every weight-row group of `0..groups`, spread over `par`; `out` is
/// `out_cells`' start. `scratch` is the worker's own (one per range of items), for buffers
/// reused across its items.
///
/// `cells` must write only the output cells of its rows × its group's weight rows: the
/// items are disjoint, so no two workers then write one cell.
pub fn for_each_row_chunk_and_group<S: Default>(
    m: usize,
    groups: usize,
    out_cells: &mut [f32],
    par: Parallel,
    cells: impl Fn(&mut S, Range<usize>, usize, *mut f32) + Sync,
) {
    let chunks = m.div_ceil(ROW_CHUNK);
    let out_ptr = SendPtr(out_cells.as_mut_ptr());
    let work = |items: Range<usize>| {
        let out_ptr = &out_ptr;
        let mut scratch = S::default();
        for item in items {
            let (chunk, group) = (item / groups, item % groups);
            let rows = chunk * ROW_CHUNK..m.min((chunk + 1) * ROW_CHUNK);
            cells(&mut scratch, rows, group, out_ptr.0);
        }
    };
    par(chunks * groups, &work);
}

struct SendPtr(*mut f32);
// SAFETY: workers write disjoint cells (see `for_each_row_chunk_and_group`), and the
// output outlives the `par` call.
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{serial, split};
    use std::sync::Mutex;

    #[test]
    fn every_row_and_group_is_visited_once() {
        // A ragged last chunk (m = 150: 64 + 64 + 22 rows) and three groups.
        let (m, groups) = (150, 3);
        for par in [&serial as Parallel, &split as Parallel] {
            let seen = Mutex::new(vec![0u32; m * groups]);
            let mut out = vec![0f32; 1];
            for_each_row_chunk_and_group::<()>(m, groups, &mut out, par, |_, rows, g, _| {
                let mut seen = seen.lock().unwrap();
                for r in rows {
                    seen[r * groups + g] += 1;
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));
        }
    }
}
