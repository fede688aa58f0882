//! Unit tests of `cli/experiment.rs` that need no model: flags to overrides, config
//! resolution errors, and the search for a run to resume.

use super::*;
use crate::test_fixtures::resolved_config;

#[test]
fn quantization_flags_map_to_one_override() {
    let on = OverrideArgs {
        quantization: true,
        ..Default::default()
    };
    let off = OverrideArgs {
        no_quantization: true,
        batch_size: Some(8),
        ..Default::default()
    };
    assert_eq!(to_cli_overrides(&on, None).quantization, Some(true));
    let o = to_cli_overrides(&off, Some(3));
    assert_eq!(
        (o.quantization, o.batch_size, o.cycles),
        (Some(false), Some(8), Some(3))
    );
    assert_eq!(
        to_cli_overrides(&OverrideArgs::default(), None).quantization,
        None
    );
}

#[test]
fn neither_config_nor_preset_is_a_usage_error() {
    let err = resolve_config(None, None, &CliOverrides::default()).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "give a config file or --preset <name> --model <model> (see `lem presets`)"
    );
}

#[test]
fn a_missing_config_file_is_named_in_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = resolve_config(Some(&path), None, &CliOverrides::default()).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}

#[test]
fn an_interrupted_run_is_found_but_not_resumed_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::new(&dir.path().join("results"));
    let resolved = resolved_config("org/model");
    let mut rec = embedded::create_experiment(&store, &resolved, "x").unwrap();
    embedded::set_status(&store, &mut rec, ExperimentStatus::Interrupted, None).unwrap();
    // Tests run without a terminal on stdin: lem says how to resume and starts fresh.
    assert_eq!(check_incomplete(&store, &resolved, false).unwrap(), None);
    // --fresh does not even look.
    assert_eq!(check_incomplete(&store, &resolved, true).unwrap(), None);
}

#[test]
fn a_model_that_cannot_be_found_fails_preflight_as_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut resolved = resolved_config("org/model");
    resolved.config.model_name = dir.path().join("absent.gguf").display().to_string();
    let mut ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    ctx.resolve = lem_agent::hub::ResolveOptions {
        lem_model_dir: dir.path().join("models"),
        hf_cache_dir: dir.path().join("hf"),
        offline: true,
        revision: "main".into(),
        home_dir: None,
        access: Default::default(),
    };
    let err = preflight(&resolved, &ctx).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("absent.gguf"), "{err}");
}

#[test]
fn a_mig_profile_is_refused_in_embedded_mode_before_the_model_is_looked_up() {
    let mut resolved = resolved_config("org/model-that-does-not-exist");
    resolved.config.devices = Some(lem_common::config::DeviceRequirements {
        mig_profile: Some("1g.10gb".into()),
        ..Default::default()
    });
    let ctx = RunContext::from_env(Arc::new(AtomicBool::new(false)));
    let err = preflight(&resolved, &ctx).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(
        err.to_string().contains("devices.mig_profile (1g.10gb)"),
        "{err}"
    );
}
