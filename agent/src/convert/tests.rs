use super::*;
use crate::model::gguf;
use candle_core::quantized::GgmlDType;
use serde_json::json;

#[test]
fn dtypes_parse_and_fit_formats() {
    assert_eq!("F16".parse::<TargetDtype>(), Ok(TargetDtype::F16));
    assert_eq!("bfloat16".parse::<TargetDtype>(), Ok(TargetDtype::Bf16));
    assert!("q5_k".parse::<TargetDtype>().unwrap_err().contains("q4_0"));
    assert!(TargetDtype::Bf16.supported_by(TargetFormat::Safetensors));
    assert!(!TargetDtype::Bf16.supported_by(TargetFormat::Gguf));
    assert!(!TargetDtype::Q8_0.supported_by(TargetFormat::Safetensors));
    assert_eq!(
        TargetDtype::names_for(TargetFormat::Gguf),
        "f32|f16|q8_0|q4_0"
    );
    assert_eq!(gguf::tensor_dtype(&[576], GgmlDType::Q8_0), GgmlDType::F32);
    assert_eq!(
        gguf::tensor_dtype(&[4, 64], GgmlDType::Q4_0),
        GgmlDType::Q4_0
    );
    assert_eq!(
        gguf::tensor_dtype(&[4, 48], GgmlDType::Q4_0),
        GgmlDType::F16
    );
}

#[test]
fn default_names_resolve_as_repo_ids() {
    assert_eq!(
        strip_dtype_suffix("SmolLM2-135M-Instruct-f16"),
        "SmolLM2-135M-Instruct"
    );
    assert_eq!(
        strip_dtype_suffix("SmolLM2-135M-Instruct.Q4_1"),
        "SmolLM2-135M-Instruct"
    );
    assert_eq!(
        strip_dtype_suffix("SmolLM2-135M-Instruct-q8_0"),
        "SmolLM2-135M-Instruct"
    );
    assert_eq!(strip_dtype_suffix("Llama-2-7B-GGUF"), "Llama-2-7B");
    assert_eq!(strip_dtype_suffix("Qwen2.5-0.5B"), "Qwen2.5-0.5B");
    assert_eq!(
        strip_dtype_suffix("SmolLM2-135M-Instruct"),
        "SmolLM2-135M-Instruct"
    );
    let lem = Path::new("/m");
    let (out, name) = default_output(
        lem,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        TargetFormat::Safetensors,
        TargetDtype::F16,
    );
    assert_eq!(
        out,
        Path::new("/m/HuggingFaceTB--SmolLM2-135M-Instruct-f16")
    );
    assert_eq!(name, "HuggingFaceTB/SmolLM2-135M-Instruct-f16");
    let (out, name) = default_output(lem, "org/m", TargetFormat::Gguf, TargetDtype::Q8_0);
    assert_eq!(out, Path::new("/m/org--m-GGUF/m-q8_0.gguf"));
    assert_eq!(name, "org/m-GGUF:q8_0");
    let id = base_model_id(
        "HuggingFaceTB/SmolLM2-135M-Instruct-f32:Q4_1",
        Path::new("/nowhere"),
        lem,
        Path::new("/hf"),
    );
    assert_eq!(id, "HuggingFaceTB/SmolLM2-135M-Instruct");
}

#[test]
fn base_id_from_paths_in_caches_and_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let lem = tmp.path().join("lem");
    let hf = tmp.path().join("hf");
    let g = lem.join("org--m/m.Q4_1.gguf");
    let s = hf.join("models--org--n/snapshots/abc");
    let other = tmp.path().join("work/tiny-f16");
    for d in [g.parent().unwrap(), s.as_path(), other.as_path()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&g, b"x").unwrap();
    let id = |p: &Path| base_model_id(p.to_str().unwrap(), p, &lem, &hf);
    assert_eq!(id(&g), "org/m");
    assert_eq!(id(&s), "org/n");
    assert_eq!(id(&other), "local/tiny");
}

#[test]
fn configs_gguf_llama_cannot_hold_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = crate::model::params::tiny_llama_params();
    p.tie_word_embeddings = true;
    let cfg = p.to_config_json(candle_core::DType::F32);
    let write = |cfg: &serde_json::Value| {
        std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    };
    let open_err = || match Source::open(tmp.path()) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let mut scaled = cfg.clone();
    scaled["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    write(&scaled);
    let e = open_err();
    assert!(e.contains("config.json: `rope_scaling`"), "{e}");
    let mut biased = cfg.clone();
    biased["attention_bias"] = json!(true);
    write(&biased);
    let e = open_err();
    assert!(e.contains("config.json: `attention_bias`: biases"), "{e}");
    let mut mistral = cfg.clone();
    mistral["architectures"] = json!(["MistralForCausalLM"]);
    write(&mistral);
    let e = open_err();
    assert!(e.contains("`MistralForCausalLM` is not supported"), "{e}");
    // The refusal says what is supported.
    assert!(
        e.contains("lem converts LlamaForCausalLM, Qwen2ForCausalLM"),
        "{e}"
    );
    let mut windowed = cfg.clone();
    windowed["architectures"] = json!(["Qwen2ForCausalLM"]);
    windowed["use_sliding_window"] = json!(true);
    windowed["sliding_window"] = json!(32);
    write(&windowed);
    let e = open_err();
    assert!(e.contains("config.json: `use_sliding_window`"), "{e}");
    let mut gpt2 = cfg;
    gpt2["architectures"] = json!(["GPT2LMHeadModel"]);
    write(&gpt2);
    let e = open_err();
    assert!(
        e.contains("config.json: `architectures`: `GPT2LMHeadModel`"),
        "{e}"
    );
}

#[test]
fn an_unsupported_gguf_architecture_is_refused_listing_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        candle_core::quantized::gguf_file::Value::String("phi3".into()),
    )];
    crate::model::gguf::write(&path, &meta, &[]).unwrap();
    let e = match Source::open(&path) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(
            "`general.architecture`: `phi3` is not supported; lem converts `llama`, `qwen2`"
        ),
        "{e}"
    );
}

#[test]
fn tidy_f32_prints_the_decimal_gguf_meant() {
    assert_eq!(source::tidy_f32(9.999999747378752e-06), 1e-5);
    assert_eq!(source::tidy_f32(10000.0), 10000.0);
}
