//! The `devices` section: how it loads, what validation refuses (with file, line and
//! key), and that configs without it are unchanged.

use super::test_text::{errors, resolved, warnings, MIN};
use super::*;

/// The 1-based line of the first line of `t` containing `needle`.
fn line_of(t: &str, needle: &str) -> usize {
    t.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_devices_section_loads_into_its_fields() {
    let t = format!(
        "{MIN}devices:\n  gpus: 1\n  gpu_model: NVIDIA A100-SXM4-40GB\n  mig_profile: 1g.10gb\n  exclusive_parent: true\n"
    );
    assert!(errors(&t).is_empty(), "{:?}", errors(&t));
    assert_eq!(
        resolved(&t).devices,
        Some(DeviceRequirements {
            gpus: Some(1),
            gpu_model: Some("NVIDIA A100-SXM4-40GB".into()),
            mig_profile: Some("1g.10gb".into()),
            exclusive_parent: true,
        })
    );
    // Keys left out take their defaults.
    let t = format!("{MIN}devices:\n  gpus: 2\n");
    assert_eq!(
        resolved(&t).devices,
        Some(DeviceRequirements {
            gpus: Some(2),
            ..DeviceRequirements::default()
        })
    );
}

#[test]
fn a_config_without_devices_resolves_as_before() {
    let without = resolved(MIN);
    assert_eq!(without.devices, None);
    // No `devices` key in the JSON that is hashed into job keys and fingerprints.
    assert!(without.to_json().get("devices").is_none());
    // With the section the config is a different experiment.
    let with = resolved(&format!("{MIN}devices:\n  mig_profile: 1g.10gb\n"));
    assert_ne!(
        crate::domain::fingerprint(&with.to_json()),
        crate::domain::fingerprint(&without.to_json())
    );
}

#[test]
fn unknown_keys_in_devices_are_refused_with_a_suggestion() {
    let t = format!("{MIN}devices:\n  mig_profil: 1g.10gb\n");
    assert_eq!(
        errors(&t),
        [format!(
            "configs/a.yaml:{}: devices.mig_profil: unknown field; did you mean `mig_profile`?",
            line_of(&t, "mig_profil")
        )]
    );
}

#[test]
fn empty_names_and_zero_gpus_are_refused_naming_the_key() {
    let t = format!("{MIN}devices:\n  gpu_model: \"  \"\n  mig_profile: \"\"\n  gpus: 0\n");
    let errs = errors(&t);
    let expect = |key: &str, message: &str| {
        format!(
            "configs/a.yaml:{}: devices.{key}: {message}",
            line_of(&t, &format!("{key}:"))
        )
    };
    assert!(
        errs.contains(&expect(
            "gpu_model",
            "must not be empty (leave the key out to accept any)"
        )),
        "{errs:?}"
    );
    assert!(
        errs.contains(&expect(
            "mig_profile",
            "must not be empty (leave the key out to accept any)"
        )),
        "{errs:?}"
    );
    assert!(
        errs.contains(&expect("gpus", "must be at least 1 (found 0)")),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn a_mig_profile_with_more_than_one_gpu_is_refused() {
    let t = format!("{MIN}devices:\n  gpus: 2\n  mig_profile: 1g.10gb\n");
    assert_eq!(
        errors(&t),
        [format!(
            "configs/a.yaml:{}: devices.gpus: a job with mig_profile runs on one MIG slice; gpus must be 1 or left out (found 2)",
            line_of(&t, "gpus:")
        )]
    );
    assert!(errors(&format!(
        "{MIN}devices:\n  gpus: 1\n  mig_profile: 1g.10gb\n"
    ))
    .is_empty());
}

#[test]
fn gpu_needs_on_a_cpu_experiment_are_refused() {
    let t = format!("{MIN}device: cpu\ndevices:\n  gpu_model: NVIDIA H100 80GB HBM3\n");
    assert_eq!(
        errors(&t),
        [format!(
            "configs/a.yaml:{}: devices.gpu_model: device: cpu runs on the CPU packages; remove the GPU needs or set device: cuda",
            line_of(&t, "gpu_model:")
        )]
    );
}

#[test]
fn exclusive_parent_without_a_mig_profile_is_a_warning() {
    let t = format!("{MIN}devices:\n  exclusive_parent: true\n");
    assert!(errors(&t).is_empty());
    assert_eq!(
        warnings(&t),
        [format!(
            "configs/a.yaml:{}: devices.exclusive_parent: has no effect without mig_profile (whole GPUs are always leased exclusively)",
            line_of(&t, "exclusive_parent:")
        )]
    );
}

#[test]
fn devices_keys_can_be_varied() {
    let axis = parse_vary("devices.mig_profile=1g.10gb,2g.20gb").unwrap();
    assert_eq!(axis.path, "devices.mig_profile");
    let e = parse_vary("devices.mig_profil=1g.10gb")
        .unwrap_err()
        .to_string();
    assert!(e.contains("devices.mig_profile"), "{e}");
}

#[test]
fn the_cluster_mig_example_asks_a_slice_with_its_parent() {
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let loaded = load_config(&root.join("configs/examples/cluster-mig.yaml"), &read).unwrap();
    let r = resolve(None, Some(&loaded), &CliOverrides::default()).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let devices = r.config.devices.unwrap();
    assert_eq!(devices.mig_profile.as_deref(), Some("1g.10gb"));
    assert!(devices.exclusive_parent);
    // The rest comes from quick.yaml through `_extends`.
    assert_eq!(r.config.max_output_tokens, 32);
}
