//! The job runner on a tiny random-weight safetensors model written by the test: the
//! config's `fp_precision` and `quantization_config` reach the loader, the result records
//! what was used, nf4 draws a warning naming the substitute, and a cached model is
//! reloaded when precision or quantisation change. Also: the runner claims the devices
//! it meters before its idle baseline, so a job waits while another holds one.

use candle_core::{Device, Tensor};
use lem_agent::runner::{JobRunner, NoProgress, RunContext};
use lem_common::config::{ExperimentConfig, Precision};
use lem_common::domain::{JobSpec, RawResult};
use lem_common::rng::SplitMix64;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const HIDDEN: usize = 64;
const FFN: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// A byte-level tokenizer (every text encodes) with `<|endoftext|>` as id 0.
fn write_tokenizer(path: &Path) -> usize {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};
    let mut chars: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    chars.sort_unstable();
    let vocab: Vocab = std::iter::once(("<|endoftext|>".to_string(), 0))
        .chain(
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), i as u32 + 1)),
        )
        .collect();
    let size = vocab.len();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .unwrap();
    tok.save(path, false).unwrap();
    size
}

/// A 2-layer Llama in BF16 with tied embeddings.
fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = write_tokenizer(&dir.join("tokenizer.json"));
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": 2,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 512, "tie_word_embeddings": true,
        "eos_token_id": 0, "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = SplitMix64::new(3);
    let mut tensors = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(candle_core::DType::BF16))
            .unwrap();
        tensors.insert(name, t);
    };
    let hd = HIDDEN / HEADS;
    put(
        "model.embed_tokens.weight".into(),
        &[vocab, HIDDEN],
        1.0,
        0.0,
    );
    put("model.norm.weight".into(), &[HIDDEN], 0.1, 1.0);
    for i in 0..2 {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        put(n("input_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        put(n("post_attention_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        put(
            n("self_attn.q_proj.weight"),
            &[HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.k_proj.weight"),
            &[KV_HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.v_proj.weight"),
            &[KV_HEADS * hd, HIDDEN],
            0.3,
            0.0,
        );
        put(
            n("self_attn.o_proj.weight"),
            &[HIDDEN, HEADS * hd],
            0.3,
            0.0,
        );
        put(n("mlp.gate_proj.weight"), &[FFN, HIDDEN], 0.3, 0.0);
        put(n("mlp.up_proj.weight"), &[FFN, HIDDEN], 0.3, 0.0);
        put(n("mlp.down_proj.weight"), &[HIDDEN, FFN], 0.3, 0.0);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

fn run(runner: &mut JobRunner, ctx: &RunContext, cfg: ExperimentConfig) -> RawResult {
    let job = JobSpec {
        experiment_id: "t".into(),
        job_key: "k".into(),
        cycle: 0,
        attempt: 0,
        config: cfg,
        cli_overrides: BTreeMap::new(),
    };
    runner.run(&job, ctx, &mut NoProgress).expect("run")
}

#[test]
fn config_precision_and_quantisation_reach_the_safetensors_loader() {
    // The CPU pool is sized once per process (as lem does at start).
    lem_agent::threads::init(Some(2));
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("tiny-llama");
    write_model(&model);
    let mut ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    ctx.resolve.offline = true;
    ctx.resolve.lem_model_dir = root.path().join("lem-models");
    ctx.resolve.hf_cache_dir = root.path().join("hf");
    ctx.powercap_root = root.path().join("no-powercap");

    let base = {
        let mut c = ExperimentConfig::default_for("t", model.to_str().unwrap());
        c.num_input_prompts = Some(2);
        c.max_input_tokens = 8;
        c.max_output_tokens = 3;
        c.warmup_prompts = 0;
        c.idle_baseline_s = 0.0;
        c.cpu_threads = Some(2);
        c
    };
    let mut runner = JobRunner::new();

    let mut c = base.clone();
    c.fp_precision = Precision::Bfloat16;
    let r = run(&mut runner, &ctx, c);
    assert_eq!(r.model.format, "safetensors");
    assert_eq!(r.model.weight_dtype, "BF16");
    assert!(
        r.model.compute_dtype.starts_with("bf16 matmuls"),
        "{}",
        r.model.compute_dtype
    );
    assert_eq!(r.model.shape.architecture, "llama");
    assert_eq!(r.requests.len(), 2);
    assert!(
        !r.warnings.iter().any(|w| w.contains("quantization_config")),
        "{:?}",
        r.warnings
    );

    // Same model, other precision: the cached engine must not be reused.
    let mut c = base.clone();
    c.fp_precision = Precision::Float32;
    let r = run(&mut runner, &ctx, c);
    assert_eq!(r.model.weight_dtype, "F32 (converted on load from BF16)");
    assert_eq!(r.model.compute_dtype, "f32");

    // 4-bit nf4: Q4_0 is used instead, and the result says so.
    let mut c = base.clone();
    c.fp_precision = Precision::Float16;
    c.quantization_config.quantization = true;
    c.quantization_config.load_in_4bit = true;
    c.quantization_config.bnb_4bit_quant_type = Some("nf4".into());
    let r = run(&mut runner, &ctx, c);
    assert_eq!(
        r.model.weight_dtype,
        "Q4_0 (quantised on load from BF16); embeddings and LM head F16"
    );
    let note = r
        .warnings
        .iter()
        .find(|w| w.contains("bnb_4bit_quant_type nf4"))
        .unwrap_or_else(|| panic!("no nf4 warning in {:?}", r.warnings));
    assert!(note.contains("Q4_0"), "{note}");

    // 8-bit.
    let mut c = base.clone();
    c.quantization_config.quantization = true;
    c.quantization_config.load_in_8bit = true;
    let r = run(&mut runner, &ctx, c);
    assert!(r
        .model
        .weight_dtype
        .starts_with("Q8_0 (quantised on load from BF16)"));
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("load_in_8bit") && w.contains("Q8_0")));
}

#[test]
fn the_runner_waits_for_a_metered_package_another_job_holds() {
    use lem_agent::meter::claims::DeviceClaims;
    use lem_agent::meter::ownership::{Access, DeviceKey, MeteredDevice};
    use std::time::{Duration, Instant};

    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("tiny-llama");
    write_model(&model);
    // A fake powercap tree with one package.
    let powercap = root.path().join("powercap");
    let zone = powercap.join("intel-rapl:0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("name"), "package-0\n").unwrap();
    std::fs::write(zone.join("energy_uj"), "1000\n").unwrap();
    let mut ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    ctx.resolve.offline = true;
    ctx.resolve.lem_model_dir = root.path().join("lem-models");
    ctx.resolve.hf_cache_dir = root.path().join("hf");
    ctx.powercap_root = powercap.clone();
    let mut cfg = ExperimentConfig::default_for("claims", model.to_str().unwrap());
    cfg.num_input_prompts = Some(1);
    cfg.max_input_tokens = 8;
    cfg.max_output_tokens = 2;
    cfg.warmup_prompts = 0;
    cfg.idle_baseline_s = 0.0;
    cfg.cpu_threads = Some(1);

    // Another job of this process meters the package.
    let key = DeviceKey::rapl(Some(&powercap.display().to_string()), "package-0");
    let held = DeviceClaims::global()
        .try_claim(
            "the other job",
            &[MeteredDevice {
                key: key.clone(),
                access: Access::Exclusive,
            }],
        )
        .unwrap();
    let job = std::thread::spawn(move || run(&mut JobRunner::new(), &ctx, cfg));
    // Bounded wait until the runner asks for the package (model load first).
    let deadline = Instant::now() + Duration::from_secs(120);
    while DeviceClaims::global().waiting() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        DeviceClaims::global().waiting(),
        1,
        "the runner never asked"
    );
    assert!(!job.is_finished(), "it ran while the package was held");
    drop(held);
    let r = job.join().unwrap();
    let warning = r
        .warnings
        .iter()
        .find(|w| w.starts_with("waited"))
        .unwrap_or_else(|| panic!("no wait said in {:?}", r.warnings));
    assert!(warning.contains(key.as_str()), "{warning}");
    assert!(warning.contains("the other job"), "{warning}");
    // Released when the job returned.
    assert!(DeviceClaims::global().holders(&key).is_empty());
    assert!(r
        .energy
        .iter()
        .any(|e| e.device_id == "package-0" && e.energy_mj.is_some()));
}
