//! Grouped-query attention over the KV cache.
//!
//! A row of a ragged batch must produce the same tokens as the same prompt alone. Masking
//! padding columns is not enough for that: the reductions then run over more (zero)
//! terms at shifted positions, the rounding changes in the last bit, and SmolLM2's huge
//! first-position activations (~2.4e4) amplify such bits into different tokens. So each
//! row attends over exactly its own valid columns, the same ones it would have alone:
//! - prefill (several new columns): candle matmuls, one batch for unpadded batches, row
//!   by row (same shapes as alone) when rows are padded;
//! - decode (one new column): a small kernel here, per (row, head), over the row's valid
//!   columns in a fixed order, run on candle's CPU pool.
//!
//! Sliding-window layers (Gemma 3) see, besides the causal limit, only keys less than
//! `window` positions before the query: the same rule in the mask and in the kernel.

use candle_core::{DType, Device, Storage, Tensor};
use std::sync::Mutex;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn n_rep(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

/// Attention for `l` new columns starting at cache column `offset`.
/// q: (b, heads, l, hd) contiguous, already rotated; `k_cache`/`v_cache`: (b, kv_heads,
/// capacity, hd) with the new columns written; `window`: a sliding-window layer's span
/// (a query at position p sees keys p - window + 1 ..= p), None = the whole context.
/// Returns (b, l, heads * hd).
pub(crate) fn attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    offset: usize,
    pads: &[usize],
    h: Heads,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (b, _, l, _) = q.dims4()?;
    let total = offset + l;
    // The decode kernel reads CPU slices; other devices take the matmul path below.
    if l == 1 && q.device().is_cpu() {
        return decode_attention(q, k_cache, v_cache, total, pads, h, window);
    }
    let y = if pads.iter().all(|&p| p == 0) {
        let keys = k_cache.narrow(2, 0, total)?;
        let values = v_cache.narrow(2, 0, total)?;
        gemm_attention(q, &keys, &values, offset, h, window)?
    } else {
        let mut rows = Vec::with_capacity(b);
        for (r, &pad) in pads.iter().enumerate() {
            // New columns of this row that are padding produce zeros (never read).
            let q_pad = pad.saturating_sub(offset).min(l);
            let lq = l - q_pad;
            let y = if lq == 0 {
                Tensor::zeros((1, h.num_heads, l, h.head_dim), DType::F32, q.device())?
            } else {
                let q_r = q.narrow(0, r, 1)?.narrow(2, q_pad, lq)?.contiguous()?;
                let keys = k_cache.narrow(0, r, 1)?.narrow(2, pad, total - pad)?;
                let values = v_cache.narrow(0, r, 1)?.narrow(2, pad, total - pad)?;
                let first = offset + q_pad - pad;
                gemm_attention(&q_r, &keys, &values, first, h, window)?
                    .pad_with_zeros(2, q_pad, 0)?
            };
            rows.push(y);
        }
        Tensor::cat(&rows, 0)?
    };
    y.transpose(1, 2)?.reshape((b, l, h.num_heads * h.head_dim))
}

/// Softmax(q kᵀ / sqrt(hd) + causal) v with candle matmuls. The `n_rep` query heads that
/// share a KV head are adjacent, so they fold into the rows of one matmul (no K/V copy).
/// `first` is the key column of the first query. Returns (b, heads, lq, hd).
fn gemm_attention(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    first: usize,
    h: Heads,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (b, _, lq, hd) = q.dims4()?;
    let t = keys.dim(2)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let q = (q * scale)?.reshape((b, h.num_kv_heads, h.n_rep() * lq, hd))?;
    let att = q.matmul(&keys.t()?)?.reshape((b, h.num_heads, lq, t))?;
    let att = att.broadcast_add(&causal_mask(lq, t, first, window, q.device())?)?;
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.reshape((b, h.num_kv_heads, h.n_rep() * lq, t))?
        .matmul(values)?
        .reshape((b, h.num_heads, lq, hd))
}

/// (lq, t) additive mask: query i (key column `first + i`) sees keys 0..=first + i, and
/// with a window only the last `window` of them.
fn causal_mask(
    lq: usize,
    t: usize,
    first: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; lq * t];
    for i in 0..lq {
        for j in (first + i + 1).min(t)..t {
            m[i * t + j] = f32::NEG_INFINITY;
        }
        if let Some(w) = window {
            for j in 0..(first + i + 1).saturating_sub(w).min(t) {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (lq, t), device)
}

/// One new column per row: for every (row, head), scores over the row's valid columns
/// `pad..total`, softmax, weighted sum of values — in an order that depends only on that
/// window, so a row computes the same bits in any batch. A sliding window starts the
/// columns at `total - window` when that is later. Returns (b, 1, heads * hd).
fn decode_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    total: usize,
    pads: &[usize],
    h: Heads,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (b, nh, _, hd) = q.dims4()?;
    let (_, nkv, cap, _) = k_cache.dims4()?;
    if !k_cache.is_contiguous() || !v_cache.is_contiguous() || total > cap {
        candle_core::bail!("decode attention needs contiguous caches holding {total} columns");
    }
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let (k_store, k_layout) = k_cache.storage_and_layout();
    let (v_store, v_layout) = v_cache.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_store, &*v_store) else {
        candle_core::bail!("decode attention runs on the CPU only");
    };
    let k_all = &k_cpu.as_slice::<f32>()?[k_layout.start_offset()..];
    let v_all = &v_cpu.as_slice::<f32>()?[v_layout.start_offset()..];
    let scale = 1.0 / (hd as f32).sqrt();
    let n_rep = h.n_rep();

    let mut out = vec![0f32; b * nh * hd];
    // Each (row, head) owns one hd-long slice of the output.
    let slots: Vec<Mutex<&mut [f32]>> = out.chunks_mut(hd).map(Mutex::new).collect();
    let work = |item: usize| {
        let (r, head) = (item / nh, item % nh);
        let pad = match window {
            Some(w) => pads[r].max(total.saturating_sub(w)),
            None => pads[r],
        };
        let base = (r * nkv + head / n_rep) * cap * hd;
        let keys = &k_all[base..base + total * hd];
        let values = &v_all[base..base + total * hd];
        let qv = &q[item * hd..(item + 1) * hd];
        let mut scores: Vec<f32> = (pad..total)
            .map(|c| dot(qv, &keys[c * hd..(c + 1) * hd]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let mut acc = vec![0f32; hd];
        for (w, c) in scores.iter().zip(pad..total) {
            let v = &values[c * hd..(c + 1) * hd];
            for (a, x) in acc.iter_mut().zip(v) {
                *a += w * x;
            }
        }
        let mut slot = slots[item].lock().unwrap_or_else(|e| e.into_inner());
        for (o, a) in slot.iter_mut().zip(&acc) {
            *o = a / sum;
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(b * nh, |range| range.for_each(work));
    drop(slots);
    drop(k_store);
    drop(v_store);
    Tensor::from_vec(out, (b, 1, nh * hd), &Device::Cpu)
}

/// Dot product with 8 independent partial sums (vectorisable) combined in a fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Heads = Heads {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
    };

    fn rand(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let mut rng = lem_common::rng::SplitMix64::new(seed);
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn causal_mask_shape() {
        let m: Vec<Vec<f32>> = causal_mask(2, 4, 1, None, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![0.0, 0.0, inf, inf], vec![0.0, 0.0, 0.0, inf]]);
        // Window 2: query at column 1 sees 0..=1, at column 2 sees 1..=2.
        let m: Vec<Vec<f32>> = causal_mask(2, 4, 1, Some(2), &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(m, vec![vec![0.0, 0.0, inf, inf], vec![inf, 0.0, 0.0, inf]]);
    }

    #[test]
    fn windowed_decode_equals_attention_over_the_window_alone() {
        // With window 3 at 6 columns, the kernel must equal full attention over the
        // last 3 columns only, i.e. the cache with columns 0..3 cut away.
        let cap = 8;
        let q = rand((1, 4, 1, 8), 11);
        let k = rand((1, 2, cap, 8), 12);
        let v = rand((1, 2, cap, 8), 13);
        let windowed = decode_attention(&q, &k, &v, 6, &[0], H, Some(3)).unwrap();
        let tail = |t: &Tensor| t.narrow(2, 3, 3).unwrap().contiguous().unwrap();
        let cut = decode_attention(&q, &tail(&k), &tail(&v), 3, &[0], H, None).unwrap();
        assert!(
            max_diff(&windowed, &cut) < 1e-6,
            "{}",
            max_diff(&windowed, &cut)
        );
        let full = decode_attention(&q, &k, &v, 6, &[0], H, None).unwrap();
        assert!(
            max_diff(&windowed, &full) > 1e-3,
            "the window must change the result"
        );
        // And the prefill (mask) path agrees with the kernel for the last query.
        let keys = k.narrow(2, 0, 6).unwrap();
        let values = v.narrow(2, 0, 6).unwrap();
        let masked = gemm_attention(&q, &keys, &values, 5, H, Some(3))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((1, 1, 32))
            .unwrap();
        assert!(
            max_diff(&windowed, &masked) < 1e-5,
            "{}",
            max_diff(&windowed, &masked)
        );
    }

    #[test]
    fn decode_kernel_matches_matmul_attention() {
        let (t, cap) = (5, 8);
        let q = rand((2, 4, 1, 8), 1);
        let k = rand((2, 2, cap, 8), 2);
        let v = rand((2, 2, cap, 8), 3);
        let fast = decode_attention(&q, &k, &v, t, &[0, 0], H, None).unwrap();
        let keys = k.narrow(2, 0, t).unwrap();
        let values = v.narrow(2, 0, t).unwrap();
        let slow = gemm_attention(&q, &keys, &values, t - 1, H, None)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((2, 1, 32))
            .unwrap();
        assert!(max_diff(&fast, &slow) < 1e-5, "{}", max_diff(&fast, &slow));
    }

    #[test]
    fn padded_row_equals_unpadded_row_bitwise() {
        // Row 1 of the batch is row 0's content shifted right by 2 padding columns.
        let cap = 8;
        let q = rand((1, 4, 1, 8), 4);
        let k1 = rand((1, 2, cap, 8), 5);
        let v1 = rand((1, 2, cap, 8), 6);
        let alone = decode_attention(&q, &k1, &v1, 4, &[0], H, None).unwrap();
        let shift = |t: &Tensor| {
            let junk = rand((1, 2, 2, 8), 7);
            Tensor::cat(&[&junk, &t.narrow(2, 0, cap - 2).unwrap()], 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let kb = Tensor::cat(&[&k1, &shift(&k1)], 0).unwrap();
        let vb = Tensor::cat(&[&v1, &shift(&v1)], 0).unwrap();
        let qb = Tensor::cat(&[&q, &q], 0).unwrap();
        let batch = decode_attention(&qb, &kb, &vb, 6, &[2, 2], H, None).unwrap();
        let row1 = batch.narrow(0, 1, 1).unwrap();
        assert_eq!(max_diff(&alone, &row1), 0.0);
    }
}
