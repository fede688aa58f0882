//! `sweep submit BASE.yaml --vary key=v1,v2 ...`: the base config expanded into the
//! cartesian grid by the same code as `lem config generate-grid`, each point resolved as a
//! config file is (same override flags), named as generate-grid names its files.

use lem_common::config::{self, CliOverrides, ResolvedConfig};
use std::path::Path;

/// One grid point, ready to submit.
#[derive(Debug)]
pub struct GridExperiment {
    /// The point's file name without `.yaml` (`base__batch_size-4`).
    pub name: String,
    pub resolved: ResolvedConfig,
}

/// Every point of `base` × `vary`, first axis slowest. Any invalid point refuses the
/// whole grid, naming each point and problem.
pub fn expand_base(
    base: &Path,
    vary: &[String],
    overrides: &CliOverrides,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Vec<GridExperiment>, String> {
    let axes = vary
        .iter()
        .map(|spec| config::parse_vary(spec).map_err(|e| format!("--vary {spec}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let loaded = config::load_config(base, read).map_err(|e| e.to_string())?;
    let points = config::expand_grid(&loaded, &axes);
    let invalid: Vec<String> = points
        .iter()
        .flat_map(|p| p.problems.iter().map(|problem| format!("  {problem}")))
        .collect();
    if !invalid.is_empty() {
        return Err(format!(
            "{} of {} grid points are invalid:\n{}",
            points.iter().filter(|p| !p.problems.is_empty()).count(),
            points.len(),
            invalid.join("\n")
        ));
    }
    points
        .into_iter()
        .map(|point| {
            let name = point
                .file_name
                .strip_suffix(".yaml")
                .unwrap_or(&point.file_name)
                .to_owned();
            let loaded = config::parse_config_str(&point.file_name, &point.yaml)
                .map_err(|e| e.to_string())?;
            let resolved = config::resolve(None, Some(&loaded), overrides)
                .map_err(|e| format!("grid point {name}: {e}"))?;
            Ok(GridExperiment { name, resolved })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "config_name: base-exp\nmodel_name: m\nfp_precision: float32\n";

    fn read_base(path: &Path) -> std::io::Result<String> {
        if path.ends_with("base.yaml") {
            Ok(BASE.to_owned())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "absent"))
        }
    }

    fn vary(specs: &[&str]) -> Vec<String> {
        specs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_grid_is_cartesian_first_axis_slowest_with_generate_grid_names() {
        let specs = vary(&["batch_size=1,4", "devices.mig_profile=1g.10gb,3g.40gb"]);
        let grid = expand_base(
            Path::new("configs/base.yaml"),
            &specs,
            &CliOverrides::default(),
            &read_base,
        )
        .unwrap();
        // Expected order and values, written out from the axes.
        let expected = [
            (1, "1g.10gb"),
            (1, "3g.40gb"),
            (4, "1g.10gb"),
            (4, "3g.40gb"),
        ];
        assert_eq!(grid.len(), expected.len());
        for (point, (batch, profile)) in grid.iter().zip(expected) {
            let suffix = format!("__batch_size-{batch}__devices.mig_profile-{profile}");
            assert_eq!(point.name, format!("base{suffix}"));
            let c = &point.resolved.config;
            assert_eq!(c.config_name, format!("base-exp{suffix}"));
            assert_eq!(c.batching_options.batch_size, batch);
            assert_eq!(
                c.devices.as_ref().and_then(|d| d.mig_profile.as_deref()),
                Some(profile)
            );
            // The base's own values are kept.
            assert_eq!(c.fp_precision, config::Precision::Float32);
        }
        // The names are exactly generate-grid's file names without `.yaml`.
        let loaded = config::load_config(Path::new("configs/base.yaml"), &read_base).unwrap();
        let axes: Vec<_> = specs
            .iter()
            .map(|s| config::parse_vary(s).unwrap())
            .collect();
        let files: Vec<String> = config::expand_grid(&loaded, &axes)
            .into_iter()
            .map(|p| p.file_name)
            .collect();
        let names: Vec<String> = grid.iter().map(|g| format!("{}.yaml", g.name)).collect();
        assert_eq!(names, files);
    }

    #[test]
    fn override_flags_apply_to_every_point() {
        let overrides = CliOverrides {
            max_tokens: Some(3),
            ..CliOverrides::default()
        };
        let grid = expand_base(
            Path::new("configs/base.yaml"),
            &vary(&["batch_size=1,2"]),
            &overrides,
            &read_base,
        )
        .unwrap();
        assert!(grid
            .iter()
            .all(|g| g.resolved.config.max_output_tokens == 3));
    }

    #[test]
    fn bad_axes_missing_bases_and_invalid_points_are_refused() {
        let none = CliOverrides::default();
        let err = expand_base(
            Path::new("configs/base.yaml"),
            &vary(&["batch_sise=1,2"]),
            &none,
            &read_base,
        )
        .unwrap_err();
        assert!(
            err.starts_with("--vary batch_sise=1,2: unknown field"),
            "{err}"
        );
        let err = expand_base(
            Path::new("configs/gone.yaml"),
            &vary(&["batch_size=1"]),
            &none,
            &read_base,
        )
        .unwrap_err();
        assert!(err.contains("configs/gone.yaml"), "{err}");
        let err = expand_base(
            Path::new("configs/base.yaml"),
            &vary(&["devices.gpus=1,2", "devices.mig_profile=1g.10gb"]),
            &none,
            &read_base,
        )
        .unwrap_err();
        assert!(err.starts_with("1 of 2 grid points are invalid"), "{err}");
        assert!(
            err.contains("base__devices.gpus-2__devices.mig_profile-1g.10gb.yaml"),
            "{err}"
        );
    }
}
