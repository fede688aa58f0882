//! The `engine: openai` example configs load (with `_extends`), validate without
//! warnings, and resolve to the server settings their files state.

use lem_common::config::{load_config, resolve, CliOverrides, EngineKind};
use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name)
}

fn read(p: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(p)
}

#[test]
fn the_openai_examples_resolve_to_their_servers() {
    for (file, model, engine_name, concurrency, arrivals) in [
        (
            "openai-llama-cpp.yaml",
            "smollm2",
            "llama-cpp-python",
            1,
            false,
        ),
        (
            "openai-vllm.yaml",
            "meta-llama/Llama-3.2-1B-Instruct",
            "vllm",
            16,
            true,
        ),
    ] {
        let loaded = load_config(&example(file), &read).unwrap();
        let resolved = resolve(None, Some(&loaded), &CliOverrides::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            resolved.warnings.is_empty(),
            "{file}: {:?}",
            resolved.warnings
        );
        let cfg = resolved.config;
        assert_eq!(cfg.engine, EngineKind::Openai, "{file}");
        assert!(lem_common::config::unsupported(&cfg).is_empty(), "{file}");
        let server = cfg.openai.unwrap();
        assert_eq!(server.endpoint, "http://127.0.0.1:8000/v1", "{file}");
        assert_eq!(server.model, model, "{file}");
        assert_eq!(server.engine_name.as_deref(), Some(engine_name), "{file}");
        assert_eq!(server.max_concurrency, Some(concurrency), "{file}");
        assert_eq!(cfg.latency_simulation.enabled, arrivals, "{file}");
    }
}
