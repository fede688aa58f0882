//! Tests of the engine choice: `engine: candle` (default) and `engine: openai` with its
//! server section, as parsed, resolved and validated.

use super::test_text::{self, MIN};
use super::*;

fn errors(extra: &str) -> Vec<String> {
    test_text::errors(&format!("{MIN}{extra}"))
}

fn warnings(extra: &str) -> Vec<String> {
    test_text::warnings(&format!("{MIN}{extra}"))
}

fn resolved(extra: &str) -> ExperimentConfig {
    test_text::resolved(&format!("{MIN}{extra}"))
}

const SERVER: &str = "engine: openai
openai:
  endpoint: http://127.0.0.1:8000/v1
  model: smollm2
  api_key_env: LEM_TEST_KEY
  engine_name: llama.cpp
  engine_version: 0.3.16
  max_concurrency: 4
  request_timeout_s: 30
";

#[test]
fn candle_is_the_default_and_has_no_server() {
    let cfg = resolved("");
    assert_eq!(cfg.engine, EngineKind::Candle);
    assert_eq!(cfg.openai, None);
    assert!(errors("").is_empty());
    let json = cfg.to_json();
    assert_eq!(json["engine"], "candle");
    assert!(json["openai"].is_null());
}

#[test]
fn an_openai_config_resolves_into_every_field() {
    assert!(errors(SERVER).is_empty(), "{:?}", errors(SERVER));
    let cfg = resolved(SERVER);
    assert_eq!(cfg.engine, EngineKind::Openai);
    assert_eq!(
        cfg.openai,
        Some(OpenAiServerConfig {
            endpoint: "http://127.0.0.1:8000/v1".into(),
            model: "smollm2".into(),
            api_key_env: Some("LEM_TEST_KEY".into()),
            engine_name: Some("llama.cpp".into()),
            engine_version: Some("0.3.16".into()),
            max_concurrency: Some(4),
            request_timeout_s: 30.0,
        })
    );
    // Optional fields take their defaults.
    let cfg = resolved("engine: openai\nopenai: {endpoint: 'http://h:1/v1', model: x}\n");
    let server = cfg.openai.unwrap();
    assert_eq!(
        (
            server.api_key_env,
            server.max_concurrency,
            server.request_timeout_s
        ),
        (None, None, 300.0)
    );
}

#[test]
fn openai_without_its_server_names_the_missing_fields() {
    let e = errors("engine: openai\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("openai: engine: openai needs an `openai` section"),
        "{e:?}"
    );
    let e = errors("engine: openai\nopenai: {model: x}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("openai.endpoint: missing required field"),
        "{e:?}"
    );
    let e = errors("engine: openai\nopenai: {endpoint: 'http://h:1/v1'}\n");
    assert!(
        e[0].contains("openai.model: missing required field"),
        "{e:?}"
    );
}

#[test]
fn bad_server_values_are_errors_naming_the_field_and_line() {
    let one = |extra: &str, want: &str| {
        let e = errors(extra);
        assert_eq!(e.len(), 1, "{extra}: {e:?}");
        assert!(e[0].contains(want), "{extra}: {} lacks {want}", e[0]);
    };
    one(
        "engine: openai\nopenai:\n  endpoint: https://h/v1\n  model: x\n",
        "configs/a.yaml:5: openai.endpoint: `https://h/v1`: https is not supported yet",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'localhost:8000', model: x}\n",
        "openai.endpoint: `localhost:8000` is not an http:// URL",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http:///v1', model: x}\n",
        "has no host",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1?x=1', model: x}\n",
        "without query",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1', model: ' '}\n",
        "openai.model: must not be empty",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1', model: x, api_key_env: 'sk-123'}\n",
        "openai.api_key_env: `sk-123` is not an environment variable name",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1', model: x, max_concurrency: 0}\n",
        "openai.max_concurrency: must be between 1 and 100000",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1', model: x, request_timeout_s: 0}\n",
        "openai.request_timeout_s: must be greater than 0",
    );
    one(
        "engine: vllm\n",
        "engine: unknown value `vllm` (expected one of: candle, openai)",
    );
    one(
        "engine: openai\nopenai: {endpoint: 'http://h/v1', model: x, edpoint: y}\n",
        "openai.edpoint: unknown field",
    );
}

#[test]
fn a_server_section_under_candle_is_a_warning() {
    let w = warnings("openai: {endpoint: 'http://h/v1', model: x}\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("openai: has no effect with engine: candle"),
        "{w:?}"
    );
    assert!(errors("openai: {endpoint: 'http://h/v1', model: x}\n").is_empty());
}

#[test]
fn the_endpoint_check_accepts_base_urls_with_ports_and_prefixes() {
    for ok in [
        "http://127.0.0.1:8000/v1",
        "http://localhost/v1",
        "http://[::1]:9000/openai/v1",
        "http://h:1",
    ] {
        assert_eq!(validate::check_endpoint(ok), Ok(()), "{ok}");
    }
}

#[test]
fn warmup_until_stable_is_refused_for_a_server() {
    let mut cfg = resolved(SERVER);
    assert!(unsupported(&cfg).is_empty());
    cfg.warmup_until_stable.enabled = true;
    let p = unsupported(&cfg);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field, "warmup_until_stable.enabled");
    cfg.engine = EngineKind::Candle;
    assert!(unsupported(&cfg).is_empty());
}
