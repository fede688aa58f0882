//! The `lem` command line: argument definitions (clap) and a dispatcher to the command
//! handlers. Handlers return an [`ExitCode`]-like integer; `main` only maps it.

mod batch;
mod config_cmd;
mod experiment;
mod gpu_check;
mod model_cmd;
mod reference;
mod results;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub use model_cmd::{ConvertArgs, ModelCommand};

/// Exit codes, stable for scripts.
pub mod exit {
    pub const OK: i32 = 0;
    /// The run or command failed (model, IO, store, inference).
    pub const FAILURE: i32 = 1;
    /// Bad usage or invalid config (also clap's own code).
    pub const USAGE: i32 = 2;
    /// Finished, but something asked for is incomplete (partial aggregate, invalid grid
    /// points written, some batch configs failed).
    pub const PARTIAL: i32 = 3;
    /// Interrupted by Ctrl+C / SIGTERM; state saved, resumable.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, Parser)]
#[command(
    name = "lem",
    version,
    about = "Measure the energy, throughput, latency and FLOPs of LLM inference",
    long_about = "Measure the energy, throughput, latency and FLOPs of LLM inference.\n\n\
Without --coordinator, lem runs embedded: coordinator and agent in this process, results \
in a local store (--data-dir, default ./results)."
)]
pub struct Cli {
    /// Where results are stored.
    #[arg(long, global = true, env = "LEM_DATA_DIR", default_value = "results")]
    pub data_dir: PathBuf,

    /// A remote coordinator (host:port). Not yet available: lem runs embedded.
    #[arg(long, global = true, env = "LEM_COORDINATOR")]
    pub coordinator: Option<String>,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment (config file, or --preset with --model).
    Experiment(ExperimentArgs),
    /// Run several experiment configs.
    Batch(BatchArgs),
    /// Validate, show, create configs; generate parameter grids.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List built-in presets.
    Presets(JsonFlag),
    /// List built-in prompt datasets.
    Datasets(JsonFlag),
    /// Show GPU topology (NVML: index, name, UUID, memory, power limit, MIG mode).
    Gpus(GpusArgs),
    /// Hardware probes of GPU metering (used by scripts/gpu-check.sh).
    #[command(subcommand, name = "gpu-check")]
    GpuCheck(gpu_check::GpuCheckCommand),
    /// Aggregate raw results (late aggregation).
    Aggregate(AggregateArgs),
    /// List and inspect results.
    #[command(subcommand)]
    Results(ResultsCommand),
    /// List the models lem's model dir and the Hugging Face cache hold.
    Models(JsonFlag),
    /// Convert models between GGUF and safetensors at a chosen precision.
    #[command(subcommand)]
    Model(ModelCommand),
}

#[derive(Debug, Args, Clone)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GpusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// NVML library to load instead of the system's libnvidia-ml.so.1.
    #[arg(long, env = "LEM_NVML_LIB", value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
}

/// Flags that override config values (precedence: CLI > config file > preset > defaults).
#[derive(Debug, Args, Clone, Default)]
pub struct OverrideArgs {
    /// Model: Hugging Face repo id or local path (required with --preset).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Prompt dataset: alias (alpaca, gsm8k, mmlu, sharegpt), HF repo id, or a file.
    #[arg(long, short = 'd')]
    pub dataset: Option<String>,
    /// Number of prompts.
    #[arg(short = 'n', long = "num-prompts")]
    pub num_prompts: Option<u32>,
    #[arg(long, short = 'b')]
    pub batch_size: Option<u32>,
    /// float32 | float16 | bfloat16
    #[arg(long)]
    pub precision: Option<String>,
    /// Maximum output tokens per prompt.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub num_processes: Option<u32>,
    /// Comma-separated GPU indices.
    #[arg(long, value_delimiter = ',')]
    pub gpu_list: Option<Vec<u32>>,
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Enable quantisation (4-bit unless the config picks 8-bit).
    #[arg(long, overrides_with = "no_quantization")]
    pub quantization: bool,
    #[arg(long, overrides_with = "quantization")]
    pub no_quantization: bool,
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment config (YAML or JSON).
    pub config: Option<PathBuf>,
    /// Built-in preset (quick-test, benchmark, throughput).
    #[arg(long)]
    pub preset: Option<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Number of cycles (1-10) for statistics across repeated runs.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u32).range(1..=10))]
    pub cycles: Option<u32>,
    /// Do not aggregate after the run.
    #[arg(long)]
    pub no_aggregate: bool,
    /// Ignore incomplete experiments with the same config and start a new one.
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    /// Resume an interrupted experiment by id (completed cycles are not re-run).
    #[arg(long)]
    pub resume: Option<String>,
    /// Print the result summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Experiment configs.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Experiments run at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u32).range(1..=10))]
    pub cycles: Option<u32>,
    #[arg(long)]
    pub no_aggregate: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config; errors name file, line and field.
    Validate { config: PathBuf },
    /// Print the effective config (after inheritance, preset and defaults).
    Show {
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print (or write) a new commented config.
    New {
        #[arg(long)]
        preset: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Write one config per point of a parameter grid.
    GenerateGrid {
        base: PathBuf,
        /// key=v1,v2,... (repeatable); e.g. batch_size=1,2,4 or decoder_config.temperature=0,0.7
        #[arg(long, required = true)]
        vary: Vec<String>,
        #[arg(long, short = 'o', default_value = "grid")]
        output_dir: PathBuf,
        /// Skip invalid combinations instead of writing them.
        #[arg(long, conflicts_with = "strict")]
        validate: bool,
        /// Fail (write nothing) if any combination is invalid.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// Experiment id (or unique prefix).
    #[arg(required_unless_present = "all")]
    pub id: Option<String>,
    /// Aggregate every experiment.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Aggregate even when cycles are missing (partial) or an aggregate exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ResultsCommand {
    /// List experiments (completed ones; --all includes incomplete).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one experiment's results.
    Show {
        id: String,
        /// Per-cycle raw results instead of the aggregate.
        #[arg(long)]
        raw: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if let Some(addr) = &cli.coordinator {
        eprintln!(
            "error: remote coordinators ({addr}) are not supported yet; run without --coordinator (embedded mode)"
        );
        return exit::USAGE;
    }
    let data_dir = cli.data_dir.clone();
    match cli.command {
        Command::Experiment(args) => experiment::run_experiment(&data_dir, args),
        Command::Batch(args) => batch::run_batch(&data_dir, args),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Presets(f) => reference::presets(f.json),
        Command::Datasets(f) => reference::datasets(f.json),
        Command::Gpus(a) => reference::gpus(a.json, a.nvml_lib.as_deref()),
        Command::GpuCheck(cmd) => gpu_check::run(cmd),
        Command::Aggregate(args) => results::aggregate(&data_dir, args),
        Command::Results(cmd) => results::run(&data_dir, cmd),
        Command::Models(f) => model_cmd::models(f.json),
        Command::Model(cmd) => model_cmd::run(cmd),
    }
}
