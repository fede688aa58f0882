//! Unit tests of `cli/doctor.rs`: RAPL trees built in a temp dir (readable, denied
//! through an injected reader as a non-root user would see it, absent), the data dir
//! and the store. NVML is covered by `tests/cli_doctor.rs` against the fake library.

use super::*;
use std::collections::HashSet;
use std::io;

/// Writes a powercap zone directory as the kernel lays it out.
fn zone(root: &Path, dir: &str, name: &str, energy_uj: u64) {
    let d = root.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(d.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
    std::fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
}

/// EACCES for chosen files, as `energy_uj` is for non-root users since Linux 5.10.
struct DenyFs(HashSet<PathBuf>);

impl SysfsRead for DenyFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        if self.0.contains(path) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        StdFs.read(path)
    }
}

#[test]
fn readable_rapl_zones_are_ok_one_line_each() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    zone(root, "intel-rapl:0", "package-0", 10);
    zone(root, "intel-rapl:0:0", "dram", 20);
    zone(root, "intel-rapl:1", "package-1", 30);
    let checks = rapl_checks(root, Box::new(StdFs));
    let ids = ["package-0", "package-0/dram", "package-1"];
    assert_eq!(checks.len(), ids.len(), "{checks:?}");
    for (c, id) in checks.iter().zip(ids) {
        assert_eq!(c.area, "rapl");
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.message.starts_with(&format!("{id}: ")), "{c:?}");
        assert!(c.remedy.is_none());
    }
}

#[test]
fn a_root_only_counter_is_a_warning_with_the_chmod_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    zone(root, "intel-rapl:0", "package-0", 10);
    zone(root, "intel-rapl:0:0", "dram", 20);
    let denied = root.join("intel-rapl:0/energy_uj");
    let checks = rapl_checks(root, Box::new(DenyFs(HashSet::from([denied.clone()]))));
    assert_eq!(checks.len(), 2, "{checks:?}");
    let pkg = &checks[0];
    assert_eq!(pkg.status, Status::Warning);
    assert!(pkg.message.contains("permission denied"), "{pkg:?}");
    let remedy = pkg.remedy.as_deref().unwrap();
    assert!(
        remedy.contains(&format!("chmod a+r {}", denied.display())),
        "{remedy}"
    );
    // The readable DRAM zone is unaffected.
    assert_eq!(checks[1].status, Status::Ok);
    assert!(checks[1].message.starts_with("package-0/dram: "));
}

#[test]
fn a_garbage_counter_is_a_warning_without_the_chmod_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    zone(root, "intel-rapl:0", "package-0", 10);
    std::fs::write(root.join("intel-rapl:0/energy_uj"), "not a number\n").unwrap();
    let checks = rapl_checks(root, Box::new(StdFs));
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Warning);
    assert!(checks[0].message.contains("cannot parse"), "{checks:?}");
    assert!(!checks[0].remedy.as_deref().unwrap().contains("chmod"));
}

#[test]
fn no_powercap_tree_is_one_warning_naming_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("absent");
    let checks = rapl_checks(&root, Box::new(StdFs));
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Warning);
    assert!(checks[0].message.contains(&root.display().to_string()));
    assert!(checks[0]
        .remedy
        .as_deref()
        .unwrap()
        .contains("LEM_POWERCAP_ROOT"));
}

#[test]
fn a_missing_data_dir_is_ok_and_is_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("results");
    let checks = data_dir_checks(&dir);
    assert!(!dir.exists(), "doctor created {}", dir.display());
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(checks[0].area, "data_dir");
    assert!(
        checks[0].message.contains("does not exist yet"),
        "{checks:?}"
    );
    assert_eq!(checks[1].area, "store");
    assert_eq!(checks[1].status, Status::Ok, "{checks:?}");
}

#[test]
fn a_store_with_records_reports_their_count() {
    use crate::store::Store;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, Duration::ZERO).unwrap();
    drop(store);
    let c = store_check(dir);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c.message.contains("0 experiment(s)"), "{c:?}");
}

#[test]
fn a_corrupt_store_is_an_error_with_a_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store_dir = dir.join("lem.sled");
    std::fs::create_dir_all(&store_dir).unwrap();
    // sled's config file with garbage in it.
    std::fs::write(store_dir.join("conf"), b"\xff\x00not a sled config").unwrap();
    std::fs::write(store_dir.join("db"), b"garbage").unwrap();
    let c = store_check(dir);
    assert_eq!(c.status, Status::Error, "{c:?}");
    assert!(c.remedy.as_deref().unwrap().contains("aside"), "{c:?}");
}

#[test]
fn free_space_matches_statvfs_of_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let free = free_bytes(tmp.path()).unwrap();
    assert!(free > 0);
    assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    assert_eq!(human_bytes(512 << 20), "512 MiB");
}

#[test]
fn hub_reachability_is_never_tested_only_the_offline_setting_reported() {
    let offline = ResolveOptions::from_lookup(|k| (k == "HF_HUB_OFFLINE").then(|| "1".into()));
    assert!(hub_check(&offline).message.contains("offline"));
    let online = ResolveOptions::from_lookup(|_| None);
    assert!(hub_check(&online).message.contains("not tested"));
}
