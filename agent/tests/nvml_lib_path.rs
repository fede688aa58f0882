//! Which NVML library lem loads — an explicit path over `LEM_NVML_LIB` over the system's
//! — and that a library named either way labels its readings simulated. One test in its
//! own binary: it sets the process environment, which no other test here reads.

use lem_agent::meter::nvml::{resolve_lib_path, simulation_reason, NvmlMeter, NVML_LIB_ENV};
use serde_json::json;
use std::path::Path;

mod fake_nvml;
use fake_nvml::Fake;

#[test]
fn explicit_path_beats_env_which_beats_the_default() {
    let fake = Fake::new(&json!({ "time_scale": 0.0,
        "gpus": [ { "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-env", "power": [[0.0, 100.0]] } ] }));
    let explicit = Path::new("/opt/other/libnvidia-ml.so.1");

    std::env::remove_var(NVML_LIB_ENV);
    assert_eq!(
        resolve_lib_path(None),
        None,
        "nothing named: the loader's default"
    );
    assert_eq!(resolve_lib_path(Some(explicit)).as_deref(), Some(explicit));

    std::env::set_var(NVML_LIB_ENV, &fake.path);
    assert_eq!(resolve_lib_path(None).as_deref(), Some(fake.path.as_path()));
    assert_eq!(
        resolve_lib_path(Some(explicit)).as_deref(),
        Some(explicit),
        "an explicit path wins over the environment"
    );
    // Opened through the environment: the fake, labelled simulated by its marker.
    let m = NvmlMeter::open(None).expect("the env's library");
    assert_eq!(m.device_ids(), ["GPU-env"]);
    assert!(m
        .simulation_reason()
        .unwrap()
        .contains("lem_fake_nvml_marker"));
    // A named library without the marker (here: one that does not load) is simulated
    // because it is named.
    let why = simulation_reason(Some(explicit), Some("550.54.15")).unwrap();
    assert!(why.contains("named explicitly"), "{why}");

    // An empty variable counts as unset.
    std::env::set_var(NVML_LIB_ENV, "");
    assert_eq!(resolve_lib_path(None), None);
    assert_eq!(simulation_reason(None, Some("550.54.15")), None);
    assert!(simulation_reason(None, Some("fake-nvml-550.54.15")).is_some());
    std::env::remove_var(NVML_LIB_ENV);
}
