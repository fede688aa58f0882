//! The Q/K row order of rotary attention. Hugging Face checkpoints rotate the halves of
//! each head (dimension i pairs with i + head_dim/2); GGUF Llama files, and lem's forward
//! pass, rotate adjacent pairs, the order llama.cpp's converter makes by permuting Q and K
//! rows (`permute` in convert_hf_to_gguf.py). Both directions live here, once: the engine
//! applies `to_interleaved` when loading safetensors, the converter both ways.

use candle_core::Tensor;

/// `(rows, cols, half)`: rows split into `heads` heads of even size `2 * half`. Works on
/// `(heads * head_dim, in)` matrices and `(heads * head_dim)` biases (one column).
fn head_split(t: &Tensor, heads: usize) -> candle_core::Result<(usize, usize, usize)> {
    let rows = t.dims().first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        candle_core::bail!("{rows} rows do not split into {heads} heads of even size");
    }
    Ok((rows, t.elem_count() / rows, rows / heads / 2))
}

/// Rotate-half rows → interleaved rows: within each head, row `j * hd/2 + i` moves to
/// `2 * i + j`.
pub fn to_interleaved(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (_, cols, half) = head_split(t, heads)?;
    t.reshape((heads, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.shape())
}

/// The inverse of [`to_interleaved`]: interleaved rows back to rotate-half order.
pub fn to_rotate_half(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (_, cols, half) = head_split(t, heads)?;
    t.reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(t.shape())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// llama.cpp: `reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)`: interleaved row 2i+j
    /// of a head is rotate-half row j*hd/2+i, so a head of 8 reads 0,4,1,5,2,6,3,7.
    fn llama_cpp_order(heads: usize, hd: usize) -> Vec<usize> {
        (0..heads)
            .flat_map(|h| (0..hd).map(move |r| h * hd + (r % 2) * hd / 2 + r / 2))
            .collect()
    }

    #[test]
    fn matrix_rows_move_as_llama_cpp_moves_them_and_come_back() {
        // 2 heads of dim 8, 3 columns; value = row * 10 + col.
        let (heads, hd, cols) = (2usize, 8usize, 3usize);
        let data: Vec<f32> = (0..heads * hd * cols)
            .map(|i| ((i / cols) * 10 + i % cols) as f32)
            .collect();
        let hf = Tensor::from_vec(data, (heads * hd, cols), &Device::Cpu).unwrap();
        let g = to_interleaved(&hf, heads).unwrap();
        let first_column: Vec<f32> = values(&g).into_iter().step_by(cols).collect();
        let want: Vec<f32> = llama_cpp_order(heads, hd)
            .iter()
            .map(|&r| (r * 10) as f32)
            .collect();
        assert_eq!(
            &want[..8],
            &[0.0, 40.0, 10.0, 50.0, 20.0, 60.0, 30.0, 70.0],
            "the expected order itself"
        );
        assert_eq!(first_column, want);
        assert_eq!(g.dims(), hf.dims());
        let back = to_rotate_half(&g, heads).unwrap();
        assert_eq!(values(&back), values(&hf));
    }

    #[test]
    fn biases_move_like_matrix_rows() {
        let (heads, hd) = (3usize, 4usize);
        let bias = Tensor::arange(0f32, (heads * hd) as f32, &Device::Cpu).unwrap();
        let got = to_interleaved(&bias, heads).unwrap();
        let want: Vec<f32> = llama_cpp_order(heads, hd)
            .iter()
            .map(|&r| r as f32)
            .collect();
        assert_eq!(values(&got), want);
        assert_eq!(got.dims(), &[heads * hd]);
        assert_eq!(values(&to_rotate_half(&got, heads).unwrap()), values(&bias));
    }

    #[test]
    fn rows_that_do_not_split_into_even_heads_are_refused() {
        let t = Tensor::zeros((16, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(to_interleaved(&t, 3).is_err(), "16 rows are not 3 heads");
        assert!(
            to_interleaved(&t, 16).is_err(),
            "heads of 1 row have no pairs"
        );
        assert!(to_rotate_half(&t, 0).is_err(), "no heads");
    }
}
