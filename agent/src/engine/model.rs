//! The Llama forward pass, written with candle ops: quantised matmuls (`QMatMul`), RMS
//! norm, interleaved rotary embeddings (half-split for `qwen2`/`gemma3` GGUFs, with
//! Qwen2's Q/K/V biases), grouped-query attention over a preallocated KV
//! cache, and a SwiGLU MLP. Gemma 3 runs through the same pass with its additions
//! (`LlamaParams::gemma3`): scaled embeddings, Q/K norms, post-attention and post-MLP
//! norms, GELU gating, half-split rotary with a local and a global base, and sliding-window
//! attention on most layers.
//!
//! Batches are left-padded: every row's last prompt token sits in the same column, so a
//! decode step appends one column for all rows. Each row has its own rotary positions
//! (column minus its padding) and attends only over its own columns (attention.rs).

use super::attention::{attention, Heads};
use super::error::EngineError;
use super::requantize::requantize_q4_1;
use super::weight_matmul::WeightMatmul;
use crate::model::ModelError;
use crate::model::{GgufFile, LlamaParams};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor, D};
use std::borrow::Cow;
use std::sync::Arc;

struct Layer {
    attn_norm: Tensor,
    /// Q, K, V (with their biases for Qwen2).
    qkv: Projection,
    wo: WeightMatmul,
    wo_bias: Option<Tensor>,
    ffn_norm: Tensor,
    /// Gate, up.
    gate_up: Projection,
    w_down: WeightMatmul,
    gemma: Option<GemmaNorms>,
}

/// Gemma 3's extra norms of one layer (f32 vectors; the converter folded in the `1 +`).
pub(crate) struct GemmaNorms {
    /// Per-head RMS norms of the queries and keys, before rotary: (head_dim,).
    pub q_norm: Tensor,
    pub k_norm: Tensor,
    /// On the attention output and on the MLP output, before each residual add: (hidden,).
    pub post_attn_norm: Tensor,
    pub post_ffn_norm: Tensor,
}

impl GemmaNorms {
    fn moved_to(self, device: &Device) -> Result<Self, EngineError> {
        let on = |t: Tensor| {
            t.to_device(device)
                .map_err(EngineError::compute("copying weights to the device"))
        };
        Ok(Self {
            q_norm: on(self.q_norm)?,
            k_norm: on(self.k_norm)?,
            post_attn_norm: on(self.post_attn_norm)?,
            post_ffn_norm: on(self.post_ffn_norm)?,
        })
    }
}

/// How the weight matrices are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatmulMode {
    /// candle's `QMatMul::from_arc`: float weights (F32/F16/BF16) are widened to f32 and
    /// run as gemm, quantised ones through the vec_dot kernels. The GGUF path.
    Ggml,
    /// Every weight runs through candle's vec_dot kernels in the type it is stored in, floats
    /// included: F16/BF16 weights multiply activations rounded to F16/BF16, accumulating in
    /// f32 (AVX kernels). Each output element is one dot product whatever the number of
    /// rows, so a row computes the same bits alone and in a batch. The safetensors path.
    Native,
}

/// Where one matrix's product is computed, for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightStorage {
    /// Stored as this ggml type and multiplied by its vec_dot kernel.
    Kernel(GgmlDType),
    /// A dense candle tensor multiplied by gemm.
    Dense(DType),
}

#[cfg(test)]
fn storage_of(m: &WeightMatmul) -> WeightStorage {
    match m {
        WeightMatmul::Candle(QMatMul::QTensor(t)) => WeightStorage::Kernel(t.dtype()),
        WeightMatmul::Candle(QMatMul::Tensor(t)) => WeightStorage::Dense(t.dtype()),
        WeightMatmul::Candle(QMatMul::TensorF16(_)) => WeightStorage::Dense(DType::F16),
        WeightMatmul::Q4_1(_) => WeightStorage::Kernel(GgmlDType::Q4_1),
        WeightMatmul::Q5_0(_) => WeightStorage::Kernel(GgmlDType::Q5_0),
    }
}

fn build_matmul(
    t: QTensor,
    mode: MatmulMode,
    device: &Device,
) -> Result<WeightMatmul, EngineError> {
    if !device.is_cpu() {
        return device_matmul(&t, device).map(WeightMatmul::Candle);
    }
    // Q4_1 and Q5_0 on the CPU: lem's native kernels (the same bits as candle's, faster).
    if let Some(w) =
        WeightMatmul::native(&t).map_err(EngineError::compute("repacking quantised weights"))?
    {
        return Ok(w);
    }
    match mode {
        MatmulMode::Ggml => qmatmul(t).map(WeightMatmul::Candle),
        MatmulMode::Native => Ok(WeightMatmul::Candle(QMatMul::QTensor(Arc::new(t)))),
    }
}

/// A CPU-loaded weight as a matmul on a GPU. The vec_dot kernels behind `Native` exist on
/// the CPU only, so floats become dense tensors for cuBLAS (F16 stays F16, multiplied as
/// f16; BF16 is widened to f32, having no QMatMul variant) and quantised blocks are
/// copied as they are for candle's CUDA kernels.
fn device_matmul(t: &QTensor, device: &Device) -> Result<QMatMul, EngineError> {
    let moved = match t.dtype() {
        GgmlDType::F16 => t
            .dequantize_f16(&Device::Cpu)
            .and_then(|w| w.to_device(device))
            .map(QMatMul::TensorF16),
        GgmlDType::F32 | GgmlDType::BF16 => t.dequantize(device).map(QMatMul::Tensor),
        dtype => t.data().and_then(|data| {
            let storage = QStorage::from_data(data, device, dtype)?;
            Ok(QMatMul::QTensor(Arc::new(QTensor::new(
                storage,
                t.shape(),
            )?)))
        }),
    };
    moved.map_err(EngineError::compute(
        "copying a weight matrix to the device",
    ))
}

/// Several matrices applied to the same input. When they share a storage type they are
/// stacked into one quantised matrix: one activation quantisation and one pass over the
/// thread pool instead of several (each output element is the same dot product, so the
/// result is bit-identical), which matters at batch 1 where a decode step is mostly
/// per-op overhead. `bias` (f32, all parts' biases concatenated) is added after.
struct Projection {
    kind: ProjectionKind,
    bias: Option<Tensor>,
}

enum ProjectionKind {
    Fused { w: WeightMatmul, widths: Vec<usize> },
    Separate(Vec<WeightMatmul>),
}

impl Projection {
    fn new(
        parts: Vec<QTensor>,
        bias: Option<Tensor>,
        mode: MatmulMode,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let dtype = parts[0].dtype();
        let cols = parts[0].shape().dims()[1];
        let same = parts
            .iter()
            .all(|t| t.dtype() == dtype && t.shape().dims()[1] == cols);
        if !same || !device.is_cpu() {
            let ws = parts
                .into_iter()
                .map(|t| build_matmul(t, mode, device))
                .collect::<Result<_, _>>()?;
            return Ok(Self {
                kind: ProjectionKind::Separate(ws),
                bias,
            });
        }
        let widths: Vec<usize> = parts.iter().map(|t| t.shape().dims()[0]).collect();
        let mut bytes = Vec::new();
        for t in &parts {
            // Row-major blocks: stacking rows is concatenating the raw data.
            let data = t
                .data()
                .map_err(EngineError::compute("reading quantised weights"))?;
            bytes.extend_from_slice(&data);
        }
        drop(parts);
        let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)
            .map_err(EngineError::compute("stacking quantised weights"))?;
        let stacked = QTensor::new(storage, (widths.iter().sum::<usize>(), cols))
            .map_err(EngineError::compute("stacking quantised weights"))?;
        Ok(Self {
            kind: ProjectionKind::Fused {
                w: build_matmul(stacked, mode, device)?,
                widths,
            },
            bias,
        })
    }

    /// One output per matrix, split on the last dimension.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let (y, widths) = match &self.kind {
            ProjectionKind::Separate(ws) => {
                let ys: Vec<Tensor> = ws.iter().map(|w| w.forward(x)).collect::<Result<_, _>>()?;
                let Some(bias) = &self.bias else {
                    return Ok(ys);
                };
                let widths: Vec<usize> = ys
                    .iter()
                    .map(|y| y.dim(D::Minus1))
                    .collect::<Result<_, _>>()?;
                let y = Tensor::cat(&ys, D::Minus1)?.broadcast_add(bias)?;
                (y, widths)
            }
            ProjectionKind::Fused { w, widths } => {
                let y = w.forward(x)?;
                let y = match &self.bias {
                    Some(bias) => y.broadcast_add(bias)?,
                    None => y,
                };
                (y, widths.clone())
            }
        };
        let mut start = 0;
        widths
            .iter()
            .map(|&n| {
                let part = y.narrow(D::Minus1, start, n);
                start += n;
                part
            })
            .collect()
    }

    #[cfg(test)]
    fn storage(&self) -> Vec<WeightStorage> {
        match &self.kind {
            ProjectionKind::Fused { w, .. } => vec![storage_of(w)],
            ProjectionKind::Separate(ws) => ws.iter().map(storage_of).collect(),
        }
    }
}

/// One decoder layer's weights as loaded, before they are fused for the forward pass.
/// Matrices are (out, in); Q and K rows are in the interleaved-rotary (GGUF) order.
pub(crate) struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: QTensor,
    pub k: QTensor,
    pub v: QTensor,
    /// Q, K and V biases concatenated, f32 (Qwen2).
    pub qkv_bias: Option<Tensor>,
    pub o: QTensor,
    pub o_bias: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: QTensor,
    pub up: QTensor,
    pub down: QTensor,
    /// Gemma 3 only.
    pub gemma: Option<GemmaNorms>,
}

/// A whole model's weights as loaded from any format.
pub(crate) struct ModelWeights {
    pub embed: Arc<QTensor>,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    /// None: the LM head is the embedding (tied).
    pub output: Option<QTensor>,
    /// Divisors of the rotary frequencies (Llama 3 `rope_freqs` / `rope_scaling`).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Q/K rows as stored in a GGUF of `qwen2` or `gemma3`: each head rotates its halves
    /// (NeoX). False: adjacent pairs (GGUF `llama`, and every safetensors model, whose
    /// rows are reordered at load).
    pub rotary_half_split: bool,
}

/// What loading did to the weights, for `EngineInfo::weight_dtype`.
#[derive(Debug, Clone, Default)]
pub(crate) struct WeightReport {
    /// (ggml type name, count) of the matmul weights as stored in the file.
    pub stored: Vec<(&'static str, usize)>,
    /// Matmul weights re-quantised from Q4_1 to Q8_0 at load.
    pub requantized: usize,
}

impl WeightReport {
    fn note(&mut self, dtype: GgmlDType) {
        let name = crate::model::ggml_name(dtype);
        match self.stored.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.stored.push((name, 1)),
        }
    }

    /// e.g. `Q8_0 (requantised from Q4_1)`, `Q4_1`, or `mixed: Q4_1 x210, Q6_K x1`.
    pub(crate) fn describe(&self) -> String {
        let stored = match self.stored.as_slice() {
            [(name, _)] => name.to_string(),
            many => {
                let parts: Vec<String> = many.iter().map(|(n, c)| format!("{n} x{c}")).collect();
                format!("mixed: {}", parts.join(", "))
            }
        };
        if self.requantized == 0 {
            stored
        } else if self.stored.len() == 1 {
            format!("Q8_0 (requantised from {stored})")
        } else {
            format!("{stored}; {} Q4_1 requantised to Q8_0", self.requantized)
        }
    }
}

pub(crate) struct LlamaModel {
    cfg: LlamaParams,
    /// Embedding rows are dequantised on lookup; the table stays quantised.
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    output: WeightMatmul,
    /// (max_positions, head_dim / 2) rotary tables (Gemma 3: of the global layers).
    cos: Tensor,
    sin: Tensor,
    /// Gemma 3's tables for the sliding-window layers, with their own rotary base.
    local_rope: Option<(Tensor, Tensor)>,
    /// `ModelWeights::rotary_half_split`.
    rotary_half_split: bool,
    device: Device,
}

/// Per-layer K and V, shaped (batch, kv_heads, capacity, head_dim), allocated once per
/// batch shape and written in place, so a decode step allocates no cache memory.
pub(crate) struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    batch: usize,
    capacity: usize,
}

impl KvCache {
    pub(crate) fn new(
        cfg: &LlamaParams,
        batch: usize,
        capacity: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let shape = (batch, cfg.num_kv_heads, capacity, cfg.head_dim);
        let mut k = Vec::with_capacity(cfg.num_layers);
        let mut v = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            k.push(Tensor::zeros(shape, DType::F32, device)?);
            v.push(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(Self {
            k,
            v,
            batch,
            capacity,
        })
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps only the batch rows `keep` (in that order), so finished rows stop costing
    /// compute. Each row's cached keys and values are copied unchanged.
    pub(crate) fn retain_rows(&mut self, keep: &[usize]) -> candle_core::Result<()> {
        let device = self.k.first().map(|t| t.device().clone());
        let Some(device) = device else {
            return Ok(());
        };
        let ids: Vec<u32> = keep.iter().map(|&r| r as u32).collect();
        let ids = Tensor::new(ids.as_slice(), &device)?;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(&ids, 0)?;
        }
        self.batch = keep.len();
        Ok(())
    }
}

fn qmatmul(t: QTensor) -> Result<QMatMul, EngineError> {
    QMatMul::from_qtensor(t).map_err(EngineError::compute("building a quantised matmul"))
}

impl LlamaModel {
    pub(crate) fn load(
        g: &mut GgufFile,
        cfg: LlamaParams,
        requantize: bool,
        max_positions: usize,
        device: &Device,
    ) -> Result<(Self, WeightReport), EngineError> {
        let path = g.path().to_path_buf();
        let mut report = WeightReport::default();
        // Tensors are read into host memory; `assemble` moves them to `device`.
        let host = &Device::Cpu;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let q_out = cfg.num_heads * hd;
        let kv_out = cfg.num_kv_heads * hd;

        let mut weight =
            |g: &mut GgufFile, name: &str, dims: &[usize]| -> Result<QTensor, EngineError> {
                let t = g.tensor_shaped(name, dims, host)?;
                report.note(t.dtype());
                if requantize && t.dtype() == GgmlDType::Q4_1 {
                    report.requantized += 1;
                    requantize_q4_1(t, &path, name)
                } else {
                    Ok(t)
                }
            };
        let vector_of = |g: &mut GgufFile, name: &str, len: usize| -> Result<Tensor, EngineError> {
            g.tensor_shaped(name, &[len], host)?
                .dequantize(host)
                .map_err(|e| {
                    EngineError::from(ModelError::BadTensor {
                        path: g.path().to_path_buf(),
                        name: name.to_string(),
                        reason: e.to_string(),
                    })
                })
        };
        let vector = |g: &mut GgufFile, name: &str| vector_of(g, name, h);

        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let ffn = cfg.intermediate_size;
            let qkv_bias = if cfg.has_qkv_bias() {
                let b = |g: &mut GgufFile, s: &str, len: usize| {
                    vector_of(g, &format!("blk.{i}.{s}.bias"), len)
                };
                let parts = [
                    b(g, "attn_q", q_out)?,
                    b(g, "attn_k", kv_out)?,
                    b(g, "attn_v", kv_out)?,
                ];
                Some(
                    Tensor::cat(&parts, 0)
                        .map_err(EngineError::compute("joining the Q/K/V biases"))?,
                )
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: vector(g, &n("attn_norm"))?,
                q: weight(g, &n("attn_q"), &[q_out, h])?,
                k: weight(g, &n("attn_k"), &[kv_out, h])?,
                v: weight(g, &n("attn_v"), &[kv_out, h])?,
                qkv_bias,
                o: weight(g, &n("attn_output"), &[h, q_out])?,
                o_bias: None,
                ffn_norm: vector(g, &n("ffn_norm"))?,
                gate: weight(g, &n("ffn_gate"), &[ffn, h])?,
                up: weight(g, &n("ffn_up"), &[ffn, h])?,
                down: weight(g, &n("ffn_down"), &[h, ffn])?,
                gemma: match cfg.gemma3 {
                    Some(_) => Some(GemmaNorms {
                        q_norm: vector_of(g, &n("attn_q_norm"), hd)?,
                        k_norm: vector_of(g, &n("attn_k_norm"), hd)?,
                        post_attn_norm: vector(g, &n("post_attention_norm"))?,
                        post_ffn_norm: vector(g, &n("post_ffw_norm"))?,
                    }),
                    None => None,
                },
            });
        }
        let norm = vector(g, "output_norm.weight")?;
        let embed = Arc::new(g.tensor_shaped("token_embd.weight", &[cfg.vocab_size, h], host)?);
        let output = if g.has_tensor("output.weight") {
            Some(weight(g, "output.weight", &[cfg.vocab_size, h])?)
        } else if requantize && embed.dtype() == GgmlDType::Q4_1 {
            // Tied embeddings: the lookup keeps the stored table, the LM head gets the
            // faster Q8_0 copy.
            report.note(GgmlDType::Q4_1);
            report.requantized += 1;
            Some(requantize_q4_1(
                g.tensor("token_embd.weight", host)?,
                &path,
                "token_embd.weight",
            )?)
        } else {
            None
        };

        let rope_freq_factors = if g.has_tensor("rope_freqs.weight") {
            let t = g.tensor_shaped("rope_freqs.weight", &[hd / 2], host)?;
            let v = t
                .dequantize(host)
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| {
                    EngineError::from(ModelError::BadTensor {
                        path: path.clone(),
                        name: "rope_freqs.weight".into(),
                        reason: e.to_string(),
                    })
                })?;
            Some(v)
        } else {
            None
        };
        let weights = ModelWeights {
            embed,
            layers,
            norm,
            output,
            rope_freq_factors,
            rotary_half_split: !cfg.gguf_qk_interleaved(),
        };
        let model = Self::assemble(cfg, weights, MatmulMode::Ggml, max_positions, device)?;
        Ok((model, report))
    }

    /// Builds the forward-pass structures (fused projections, rotary tables) from loaded
    /// weights.
    pub(crate) fn assemble(
        cfg: LlamaParams,
        w: ModelWeights,
        mode: MatmulMode,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        // Weights are loaded into host memory; vectors move here, matrices in
        // `build_matmul`. A no-op on the CPU.
        let on_device = |t: Tensor| {
            t.to_device(device)
                .map_err(EngineError::compute("copying weights to the device"))
        };
        let on_device_opt = |t: Option<Tensor>| t.map(on_device).transpose();
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in w.layers {
            layers.push(Layer {
                attn_norm: on_device(lw.attn_norm)?,
                qkv: Projection::new(
                    vec![lw.q, lw.k, lw.v],
                    on_device_opt(lw.qkv_bias)?,
                    mode,
                    device,
                )?,
                wo: build_matmul(lw.o, mode, device)?,
                wo_bias: on_device_opt(lw.o_bias)?,
                ffn_norm: on_device(lw.ffn_norm)?,
                gate_up: Projection::new(vec![lw.gate, lw.up], None, mode, device)?,
                w_down: build_matmul(lw.down, mode, device)?,
                gemma: lw.gemma.map(|n| n.moved_to(device)).transpose()?,
            });
        }
        let output = match w.output {
            Some(t) => build_matmul(t, mode, device)?,
            // The embedding table stays in host memory for the lookup; the GPU gets a copy.
            None if !device.is_cpu() => WeightMatmul::Candle(device_matmul(&w.embed, device)?),
            None => match WeightMatmul::native(&w.embed)
                .map_err(EngineError::compute("repacking the tied output matmul"))?
            {
                // The lookup keeps the stored table; the LM head gets a repacked copy.
                Some(packed) => packed,
                None => WeightMatmul::Candle(match mode {
                    MatmulMode::Ggml => QMatMul::from_arc(w.embed.clone())
                        .map_err(EngineError::compute("building the tied output matmul"))?,
                    MatmulMode::Native => QMatMul::QTensor(w.embed.clone()),
                }),
            },
        };
        let (cos, sin) = rope_tables(
            cfg.head_dim,
            cfg.rope_theta,
            w.rope_freq_factors.as_deref(),
            max_positions,
            device,
        )
        .map_err(EngineError::compute("building rotary tables"))?;
        let local_rope = match &cfg.gemma3 {
            Some(g) => Some(
                rope_tables(
                    cfg.head_dim,
                    g.rope_theta_local,
                    None,
                    max_positions,
                    device,
                )
                .map_err(EngineError::compute("building rotary tables"))?,
            ),
            None => None,
        };
        Ok(Self {
            cfg,
            embed: w.embed,
            layers,
            norm: on_device(w.norm)?,
            output,
            cos,
            sin,
            local_rope,
            rotary_half_split: w.rotary_half_split,
            device: device.clone(),
        })
    }

    /// Storage of the matmul weights: (name, storage) for layer 0's projections, the
    /// embedding table and the LM head. For tests.
    #[cfg(test)]
    pub(crate) fn weight_storage(&self) -> Vec<(&'static str, WeightStorage)> {
        let mut out = Vec::new();
        if let Some(l) = self.layers.first() {
            for s in l.qkv.storage() {
                out.push(("qkv", s));
            }
            out.push(("o", storage_of(&l.wo)));
            for s in l.gate_up.storage() {
                out.push(("gate_up", s));
            }
            out.push(("down", storage_of(&l.w_down)));
        }
        out.push(("embed", WeightStorage::Kernel(self.embed.dtype())));
        out.push(("lm_head", storage_of(&self.output)));
        out
    }

    pub(crate) fn config(&self) -> &LlamaParams {
        &self.cfg
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Rotary positions the tables cover.
    pub(crate) fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Runs `seq_len` new columns for every row and returns the logits of the last column,
    /// shaped (batch, vocab). `tokens` is row-major (batch × seq_len); the new columns
    /// start at cache column `offset`; row `r` has `pads[r]` padding columns on the left.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        seq_len: usize,
        offset: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        let b = pads.len();
        let l = seq_len;
        let total = offset + l;
        if tokens.len() != b * l {
            candle_core::bail!("{} tokens for a {b}x{l} step", tokens.len());
        }
        if cache.batch != b || total > cache.capacity {
            candle_core::bail!(
                "KV cache is {}x{} but the step needs {b}x{total}",
                cache.batch,
                cache.capacity
            );
        }
        if total > self.max_positions() {
            candle_core::bail!(
                "position {total} beyond the rotary table ({})",
                self.max_positions()
            );
        }
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let heads = Heads {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        let eps = self.cfg.rms_norm_eps as f32;
        let dev = &self.device;

        let (cos, sin) = self.rotary(&self.cos, &self.sin, offset, l, pads)?;
        let local = match &self.local_rope {
            Some((c, s)) => Some(self.rotary(c, s, offset, l, pads)?),
            None => None,
        };
        let gemma = self.cfg.gemma3.as_ref();

        // The table is in host memory (dequantising only the rows looked up); on a GPU
        // the (b, l, hidden) activations are copied over.
        let ids = Tensor::from_slice(tokens, (b, l), &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.to_device(dev)?;
        if gemma.is_some() {
            // Gemma scales embeddings by sqrt(hidden), in f32 as llama.cpp does.
            x = (x * (self.cfg.hidden_size as f32).sqrt() as f64)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            // (b, l, heads*hd) -> (b, heads, l, hd); rotary and slice_set need contiguous.
            let split = |t: Tensor, heads: usize| {
                t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let [q, k, v]: [Tensor; 3] = layer
                .qkv
                .forward(&h)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("qkv projection arity".into()))?;
            let q = split(q, nh)?;
            let k = split(k, nkv)?;
            let v = split(v, nkv)?;
            let rotate = |t: &Tensor, c: &Tensor, s: &Tensor| {
                if self.rotary_half_split {
                    candle_nn::rotary_emb::rope(t, c, s)
                } else {
                    candle_nn::rotary_emb::rope_i(t, c, s)
                }
            };
            let (q, k, window) = match (gemma, &layer.gemma) {
                (Some(g), Some(norms)) => {
                    let q = candle_nn::ops::rms_norm(&q, &norms.q_norm, eps)?;
                    let k = candle_nn::ops::rms_norm(&k, &norms.k_norm, eps)?;
                    let ((c, s), window) = match (&local, g.is_local(i)) {
                        (Some((lc, ls)), true) => ((lc, ls), Some(g.sliding_window)),
                        _ => ((&cos, &sin), None),
                    };
                    (rotate(&q, c, s)?, rotate(&k, c, s)?, window)
                }
                _ => (rotate(&q, &cos, &sin)?, rotate(&k, &cos, &sin)?, None),
            };

            cache.k[i].slice_set(&k, 2, offset)?;
            cache.v[i].slice_set(&v, 2, offset)?;
            let y = attention(&q, &cache.k[i], &cache.v[i], offset, pads, heads, window)?;
            let o = layer.wo.forward(&y)?;
            let o = match &layer.wo_bias {
                Some(bias) => o.broadcast_add(bias)?,
                None => o,
            };
            let o = match &layer.gemma {
                Some(norms) => candle_nn::ops::rms_norm(&o, &norms.post_attn_norm, eps)?,
                None => o,
            };
            x = (x + o)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("gate/up projection arity".into()))?;
            let Some(norms) = &layer.gemma else {
                let gate = candle_nn::ops::silu(&gate)?;
                x = (x + layer.w_down.forward(&(gate * up)?)?)?;
                continue;
            };
            // GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
            let gate = gate.gelu()?;
            let down = layer.w_down.forward(&(gate * up)?)?;
            x = (x + candle_nn::ops::rms_norm(&down, &norms.post_ffn_norm, eps)?)?;
        }
        let last = x.narrow(1, l - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self
            .output
            .forward(&last)?
            .squeeze(1)?
            .to_dtype(DType::F32)?;
        match gemma.and_then(|g| g.final_logit_softcap) {
            Some(cap) => soft_cap(&logits, cap),
            None => Ok(logits),
        }
    }

    /// cos/sin for the new columns: a plain slice of the tables when no row is padded,
    /// else one row of positions per batch row.
    fn rotary(
        &self,
        cos: &Tensor,
        sin: &Tensor,
        offset: usize,
        l: usize,
        pads: &[usize],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if pads.iter().all(|&p| p == 0) {
            return Ok((cos.narrow(0, offset, l)?, sin.narrow(0, offset, l)?));
        }
        let b = pads.len();
        let mut pos = Vec::with_capacity(b * l);
        for &pad in pads {
            for c in offset..offset + l {
                pos.push(c.saturating_sub(pad) as u32);
            }
        }
        let pos = Tensor::from_vec(pos, b * l, &self.device)?;
        let half = self.cfg.head_dim / 2;
        let cos = cos.index_select(&pos, 0)?.reshape((b, l, half))?;
        let sin = sin.index_select(&pos, 0)?.reshape((b, l, half))?;
        Ok((cos, sin))
    }
}

/// `cap · tanh(x / cap)`: bounds logits to (-cap, cap), near-identity for small ones.
fn soft_cap(x: &Tensor, cap: f64) -> candle_core::Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// Rotary tables for the interleaved (GPT-J style) rotation that GGUF Llama weights use:
/// llama.cpp's converter permutes Q/K rows so adjacent pairs rotate together.
fn rope_tables(
    head_dim: usize,
    theta: f64,
    freq_factors: Option<&[f32]>,
    max_positions: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| {
            let f = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            match freq_factors {
                Some(ff) => f / ff[i] as f64,
                None => f,
            }
        })
        .collect();
    let mut cos = Vec::with_capacity(max_positions * half);
    let mut sin = Vec::with_capacity(max_positions * half);
    for p in 0..max_positions {
        for f in &inv_freq {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (max_positions, half), device)?,
        Tensor::from_vec(sin, (max_positions, half), device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gemma3Params;

    #[test]
    fn soft_cap_bounds_and_keeps_small_values() {
        let x = Tensor::new(&[0.0f32, 1.0, 100.0, -1000.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = soft_cap(&x, 30.0).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = [0.0f64, 1.0, 100.0, -1000.0]
            .iter()
            .map(|v| (30.0 * (v / 30.0).tanh()) as f32)
            .collect();
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{y:?} vs {want:?}");
        }
        // Never beyond the cap (f32 tanh saturates to exactly ±1 far out).
        assert!(y[3] >= -30.0 && y[2] < 30.0 && y[2] > 29.0, "{y:?}");
    }

    #[test]
    fn gemma3_layers_alternate_five_local_one_global() {
        let g = Gemma3Params {
            sliding_window: 512,
            global_layer_every: 6,
            rope_theta_local: 10_000.0,
            final_logit_softcap: None,
        };
        let global: Vec<usize> = (0..18).filter(|&i| !g.is_local(i)).collect();
        assert_eq!(global, vec![5, 11, 17]);
    }

    #[test]
    fn rope_tables_start_at_identity() {
        let (cos, sin) = rope_tables(4, 10_000.0, None, 3, &Device::Cpu).unwrap();
        let c: Vec<Vec<f32>> = cos.to_vec2().unwrap();
        let s: Vec<Vec<f32>> = sin.to_vec2().unwrap();
        assert_eq!(c[0], vec![1.0, 1.0]);
        assert_eq!(s[0], vec![0.0, 0.0]);
        // Second frequency is theta^(-2/4) = 0.01.
        assert!((s[1][0] - 1f32.sin()).abs() < 1e-6);
        assert!((s[2][1] - 0.02f32.sin()).abs() < 1e-6);
    }
}
