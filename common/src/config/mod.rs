//! Experiment config: schema, presets, inheritance, overrides, validation, grids.
//!
//! The flow: `load_config` (file + `_extends`, raw tree with origins) -> `resolve`
//! (defaults < preset < file < CLI flags; validated; typed `ExperimentConfig`) ->
//! `unsupported` (what lem refuses to run). `expand_grid` and `new_config_yaml` serve
//! `lem config generate-grid|new`. No IO: file reading is passed in.

pub mod datasets;
mod error;
pub mod grid;
mod lines;
pub mod load;
pub mod overrides;
pub mod presets;
pub mod schema;
mod spec;
mod template;
mod tree;
pub mod validate;

pub use error::{ConfigError, Origin, Origins, Problem};
pub use grid::{expand_grid, parse_vary, GridPoint, VaryAxis};
pub use load::{load_config, parse_config_str, LoadedConfig};
pub use overrides::{resolve, CliOverrides, ResolvedConfig};
pub use presets::{preset, presets, Preset};
pub use schema::{
    Backend, BatchingOptions, BatchingStrategy, CarbonConfig, DecoderConfig, DecoderPreset, Device,
    DeviceRequirements, EngineKind, ExperimentConfig, LatencyMode, LatencySimulation,
    OpenAiServerConfig, Precision, PromptSource, QuantizationConfig, ShardingConfig,
    ShardingStrategy, SteadyWarmupConfig,
};
pub use template::new_config_yaml;
pub use validate::{unsupported, validate, validate_tree, Validation};

#[cfg(test)]
mod devices_tests;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod test_text;
#[cfg(test)]
mod tests;
