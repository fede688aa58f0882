//! The weight layout the Q4_1 and Q5_0 kernels share: a matrix of `n` rows of `kb` blocks
//! repacked so that one block column of eight rows (a group, one row per lane of a 256-bit
//! float vector) lies together, and the kernel reads the weights as one sequential stream.
//! The loop bodies over it are `grouped_tile.rs`.

use crate::dispatch::Variant;
use crate::grouped_tile::{self, GroupFormat};
use crate::parallel::{for_each_row_chunk_and_group, Parallel};
use std::ops::Range;

/// Weight rows per group: the lanes of one 256-bit float vector.
pub const GROUP: usize = 8;

/// A matrix repacked into groups of `GROUP` rows; `G` is one block column of a group.
/// Rows past `n` in the last group are zero and never written out.
pub struct Grouped<G> {
    pub(crate) groups: Vec<G>,
    pub(crate) n: usize,
    pub(crate) kb: usize,
}

impl<G: Copy> Grouped<G> {
    /// Repacks `w`, row-major `n` rows of `kb` blocks: `put(group_block, lane, block)`
    /// stores one row's block in its lane of an all-`zero` group block. Panics naming
    /// `what` when the length differs.
    pub(crate) fn repack<B>(
        what: &str,
        w: &[B],
        n: usize,
        kb: usize,
        zero: G,
        put: impl Fn(&mut G, usize, &B),
    ) -> Self {
        assert_eq!(w.len(), n * kb, "{what} weight blocks");
        let mut groups = vec![zero; n.div_ceil(GROUP) * kb];
        for (r, row) in w.chunks_exact(kb.max(1)).enumerate().take(n) {
            let (g, lane) = (r / GROUP, r % GROUP);
            for (b, src) in row.iter().enumerate() {
                put(&mut groups[g * kb + b], lane, src);
            }
        }
        Self { groups, n, kb }
    }

    /// Output width (weight rows).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Blocks per row (input width / 32).
    pub fn blocks_per_row(&self) -> usize {
        self.kb
    }

    /// Bytes held (padding rows included).
    pub fn bytes(&self) -> usize {
        self.groups.len() * std::mem::size_of::<G>()
    }

    /// Writes the valid lanes of group `g`'s outputs for activation row `r` into `out`,
    /// rows of `n` floats.
    ///
    /// # Safety
    /// `out` holds at least `(r + 1) × n` floats and no other thread writes these cells.
    pub(crate) unsafe fn store(&self, g: usize, r: usize, lanes: &[f32; GROUP], out: *mut f32) {
        let c0 = g * GROUP;
        let valid = GROUP.min(self.n - c0);
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), out.add(r * self.n + c0), valid);
    }
}

/// One kernel variant's body: writes the (rows × group `g`) cells of `out`.
///
/// # Safety (for callers)
/// `out` holds `m × w.n` floats, no other thread writes these cells, and the CPU runs the
/// variant.
pub(crate) type GroupRows<G, A> = unsafe fn(&Grouped<G>, &A, usize, Range<usize>, *mut f32);

/// Runs a grouped kernel: checks `variant` and the output length, then runs the format's
/// body for the variant (`grouped_tile`) on every (row chunk, group) item, spread over
/// `par`. The caller has checked `a` against `w` and `m`.
pub(crate) fn matmul_groups<F: GroupFormat>(
    variant: Variant,
    w: &Grouped<F::Block>,
    a: &F,
    m: usize,
    out: &mut [f32],
    par: Parallel,
) {
    assert!(
        variant.available(),
        "{variant:?} needs CPU features absent here"
    );
    assert_eq!(out.len(), m * w.n, "output length");
    let body = grouped_tile::body::<F>(variant);
    for_each_row_chunk_and_group::<()>(m, w.n.div_ceil(GROUP), out, par, |_, rows, g, out| {
        // SAFETY: each call writes only its (rows, group) cells of `out`; the variant's
        // CPU features were checked above.
        unsafe { body(w, a, g, rows, out) };
    });
}
