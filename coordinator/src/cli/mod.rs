//! The `lem` command line: argument definitions (clap) and a dispatcher to the command
//! handlers. Handlers return an [`Outcome`] or a [`CliError`]; `main` maps them to exit
//! codes.

mod atomic_file;
mod batch;
mod cluster_cmd;
mod compare;
mod completions;
mod config_cmd;
mod doctor;
mod drive;
mod error;
mod experiment;
mod export_cmd;
mod gpu_check;
mod man_page;
mod model_cmd;
mod pivot_cmd;
mod plots;
mod reference;
mod remote;
mod remote_results;
mod remote_store;
mod report_cmd;
mod results;
mod run_display;
mod selection;
mod serve_cmd;
mod serve_config;
mod sweep_cmd;
mod sweep_devices;
mod sweep_grid;
mod table;
mod token_cmd;
mod until_ci_run;
mod user_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

pub use error::{exit, CliError, Outcome};
pub use model_cmd::{ConvertArgs, ModelCommand};

/// The data dir used when neither `--data-dir` nor `LEM_DATA_DIR` names one.
pub const DEFAULT_DATA_DIR: &str = "results";

#[derive(Debug, Parser)]
#[command(
    name = "lem",
    version,
    about = "Measure the energy, throughput, latency and FLOPs of LLM inference",
    long_about = "Measure the energy, throughput, latency and FLOPs of LLM inference.\n\n\
lem runs embedded: coordinator and agent in this process, results in a local store \
(--data-dir, default ./results). In cluster mode `lem serve` is the coordinator and \
`lem --coordinator HOST:PORT` sends sweeps, status, agent and results commands to it."
)]
pub struct Cli {
    /// Where results are stored (used by experiment, batch, results, aggregate).
    #[arg(long, env = "LEM_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// A coordinator (`lem serve`) to send sweep, status, agent, results, report and
    /// aggregate commands to, as HOST:PORT; without it lem runs embedded.
    #[arg(long, env = "LEM_COORDINATOR", value_name = "HOST:PORT")]
    pub coordinator: Option<String>,

    /// CLI credential folder (key.pem, cert.pem, ca.pem) for --coordinator; default: the
    /// data dir's `operator/` when it exists (the coordinator host).
    #[arg(long, env = "LEM_CREDENTIAL", value_name = "DIR")]
    pub credential: Option<PathBuf>,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// `--data-dir` on the commands that use the store, so it may follow the subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct StoreArgs {
    /// Where results are stored (overrides the one before the subcommand and
    /// LEM_DATA_DIR; default ./results).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// This command's data dir: its own flag, else the top-level one (env, default).
    fn resolve(&self, top: &Path) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| top.to_path_buf())
    }
}

/// A count that must be at least 1; negative input gets this message rather than
/// clap's "to pass '-3' as a value, use '-- -3'".
fn positive_u32(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as u32),
        Ok(n) => Err(format!("must be a positive integer, got {n}")),
        Err(_) => Err(format!("must be a positive integer, got `{s}`")),
    }
}

/// A duration in ms that must be above zero (a zero lease TTL would expire at once).
fn positive_ms(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be above 0 ms".into()),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("must be a whole number of milliseconds, got `{s}`")),
    }
}

/// `--cycles`: 1 to 10.
fn cycles_1_to_10(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=10).contains(&n) => Ok(n as u32),
        Ok(n) => Err(format!("must be between 1 and 10, got {n}")),
        Err(_) => Err(format!("must be an integer between 1 and 10, got `{s}`")),
    }
}

/// `--seed`: a non-negative integer.
fn seed_u64(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("must be a non-negative integer, got `{s}`"))
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
    /// What lem can measure on this machine and why not (NVML, GPUs/MIG, RAPL, caches,
    /// data dir, store); exit 1 only on an error line.
    Doctor(DoctorArgs),
    /// Print a shell completion script (e.g. `lem completions bash > ~/.local/share/bash-completion/completions/lem`).
    Completions(CompletionsArgs),
    /// Print the lem(1) man page (roff), or write one page per command with --out-dir.
    Man(ManArgs),
    /// Write one self-contained HTML report with plots of stored results (docs/report.md).
    Report(ReportArgs),
    /// Join tokens that admit an agent to this data dir's cluster (docs/protocol.md).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the coordinator daemon: agents and CLIs connect over QUIC (docs/protocol.md).
    Serve(ServeArgs),
    /// Sweeps on a coordinator (needs --coordinator).
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Agents, leases, queue and sweep progress of a coordinator (needs --coordinator).
    Status(StatusArgs),
    /// Agents of a coordinator (needs --coordinator).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// CLI credentials for a coordinator (run on the coordinator host).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The coordinator's data dir (store, cluster CA, operator credential, serve.addr).
    #[command(flatten)]
    pub store: StoreArgs,
    /// A YAML file with any of listen, server_names, lease_ttl_ms, agent_timeout_ms,
    /// restart_grace_ms; a flag or LEM_* variable overrides it, unknown keys are refused.
    #[arg(long = "config", env = "LEM_SERVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (UDP; default 0.0.0.0:7443); port 0 picks one, written to
    /// <data-dir>/serve.addr.
    #[arg(long, env = "LEM_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// A name or address agents and CLIs dial, put in the server certificate
    /// (repeatable; default localhost and 127.0.0.1).
    #[arg(
        long = "server-name",
        env = "LEM_SERVER_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub server_names: Vec<String>,
    /// How long a lease lives without a heartbeat renewing it, in ms (default 30000).
    #[arg(long, env = "LEM_LEASE_TTL_MS", value_name = "MS", value_parser = positive_ms)]
    pub lease_ttl_ms: Option<u64>,
    /// An agent silent this long (ms) is lost and its jobs are queued again (default
    /// 20000).
    #[arg(long, env = "LEM_AGENT_TIMEOUT_MS", value_name = "MS", value_parser = positive_ms)]
    pub agent_timeout_ms: Option<u64>,
    /// After a restart, how long (ms) a recovered lease waits for its agent to announce
    /// it (default 60000); above the 10 s QUIC idle timeout, so an agent that notices the
    /// restart only by its connection timing out still reclaims its leases.
    #[arg(long, env = "LEM_RESTART_GRACE_MS", value_name = "MS", value_parser = positive_ms)]
    pub restart_grace_ms: Option<u64>,
    /// Serve Prometheus metrics (agents, leases, queue, ingest counters, per-device
    /// energy and power as accepted results report them) at http://ADDR/metrics, e.g.
    /// 0.0.0.0:9464; off by default. The bound address goes to <data-dir>/metrics.addr.
    #[arg(long, env = "LEM_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Submit configs as one sweep: every config × every cycle is a job.
    Submit(Box<SweepArgsSubmit>),
    /// Every sweep with its progress.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One sweep's jobs and their states.
    Show {
        /// The sweep (sweep-3 or 3).
        #[arg(value_name = "SWEEP", value_parser = sweep_cmd::parse_sweep_id)]
        sweep: sweep_cmd::SweepRef,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a sweep's open jobs.
    Cancel {
        /// The sweep (sweep-3 or 3).
        #[arg(value_name = "SWEEP", value_parser = sweep_cmd::parse_sweep_id)]
        sweep: sweep_cmd::SweepRef,
    },
    /// Queue a sweep's cancelled and failed jobs again.
    Resume {
        /// The sweep (sweep-3 or 3).
        #[arg(value_name = "SWEEP", value_parser = sweep_cmd::parse_sweep_id)]
        sweep: sweep_cmd::SweepRef,
    },
}

#[derive(Debug, Args)]
pub struct SweepArgsSubmit {
    /// Experiment configs, resolved here as `lem batch` resolves them.
    #[arg(required = true, value_name = "CONFIG")]
    pub configs: Vec<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Number of cycles (1-10) of every experiment (default: the configs' largest).
    #[arg(long, short = 'c', value_name = "N", value_parser = cycles_1_to_10, allow_negative_numbers = true)]
    pub cycles: Option<u32>,
    /// The sweep's name (default: the first config's file name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Expand each config into the grid of these values (repeatable, cartesian, the
    /// first axis slowest), one experiment per point named as `config generate-grid`
    /// names its files; e.g. --vary batch_size=1,4 --vary devices.mig_profile=1g.10gb,3g.40gb
    #[arg(long, value_name = "KEY=V1,V2")]
    pub vary: Vec<String>,
    #[command(flatten)]
    pub devices: SweepDeviceArgs,
    /// Let one experiment's cycles run on different GPU models (default: all its cycles
    /// on the model its first cycle ran on).
    #[arg(long, alias = "allow-mixed-gpu-models")]
    pub mixed_device_models: bool,
}

/// Device needs for every experiment of a sweep, over the configs' `devices` sections.
#[derive(Debug, Args, Default, Clone)]
pub struct SweepDeviceArgs {
    /// Run on GPUs of this product name, exactly as NVML reports it (`lem gpus`), e.g.
    /// "NVIDIA H100 80GB HBM3".
    #[arg(long, value_name = "NAME", value_parser = non_blank)]
    pub gpu_model: Option<String>,
    /// Run each job on one MIG slice of this profile (e.g. 1g.10gb) instead of whole GPUs.
    #[arg(long, value_name = "PROFILE", value_parser = non_blank)]
    pub mig_profile: Option<String>,
    /// With a MIG profile: lease each slice's whole parent GPU, so the parent's energy
    /// counter measures that job alone (energy-exact; fewer jobs at once).
    #[arg(long)]
    pub exclusive_parent: bool,
}

fn non_blank(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_owned())
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output (with --watch: one JSON object per line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh every 2 s with each sweep's ETA, until every sweep has finished.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Every agent with its devices.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The agent finishes what it holds and takes no new jobs.
    Drain {
        /// The agent's id (as `agent list` shows it).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Issue a CLI credential from the data dir's cluster CA.
    Add {
        /// The user's name (letters, digits, `-`, `_`, `.`).
        #[arg(value_name = "NAME")]
        name: String,
        /// viewer (read-only) or operator (submit, cancel, drain).
        #[arg(long, value_parser = parse_user_role)]
        role: lem_net::Role,
        /// Folder to write key.pem (0600), cert.pem and ca.pem into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_user_role(text: &str) -> Result<lem_net::Role, String> {
    match text {
        "viewer" => Ok(lem_net::Role::Viewer),
        "operator" => Ok(lem_net::Role::Operator),
        other => Err(format!("`{other}` is not a user role: viewer or operator")),
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token, print it once, and store only its hash (creates the cluster
    /// CA in the data dir on first use). Single-use unless --uses says more.
    Create {
        /// How long the token admits agents: a number with s, m, h or d (at most 7d).
        #[arg(long, value_name = "TTL", default_value = "15m", value_parser = token_cmd::parse_ttl)]
        ttl: std::time::Duration,
        /// How many agents may enroll with it (1 to 10000): one token for many nodes,
        /// e.g. a Kubernetes DaemonSet reading it from a Secret. Counted in the store;
        /// once used up, or expired, it is refused.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = token_cmd::parse_uses)]
        uses: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One row per join token: id, created, expires, uses left of total, state (never
    /// the secret). Expired, used-up and revoked tokens only with --all.
    List {
        /// Also the tokens that admit no one any more (expired, used up, revoked).
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a join token by its id (from `lem token list`; a unique prefix of at least
    /// 4 digits will do): no agent enrolls with it afterwards. Agents already enrolled
    /// keep their certificates. Revoking a revoked token changes nothing.
    Revoke {
        /// The token's id, as `lem token list` shows it.
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
#[command(mut_arg("ids", |a| a.help(REPORT_IDS_HELP)))]
pub struct ReportArgs {
    #[command(flatten)]
    pub select: SelectionArgs,
    /// The HTML file to write (replaced whole, never half-written).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `lem report`'s words for its ids: a report of several also compares them.
const REPORT_IDS_HELP: &str = "Experiment ids (or unique prefixes); two or more are also compared";

/// Which experiments `report`, `results export` and `results table` take: ids, `--all`
/// or `--sweep` (one of them). `selection.rs` resolves them.
#[derive(Debug, Args, Clone)]
pub struct SelectionArgs {
    /// Experiment ids (or unique prefixes).
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["all", "sweep"],
        conflicts_with_all = ["all", "sweep"]
    )]
    pub ids: Vec<String>,
    /// Every experiment that has an aggregate; the others are named on stderr.
    #[arg(long, conflicts_with = "sweep")]
    pub all: bool,
    /// The experiments of a sweep: config name NAME or NAME__… (how `lem config
    /// generate-grid` names the points of a grid made from config NAME).
    #[arg(long, value_name = "NAME")]
    pub sweep: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// Machine-readable output: a list of {area, status, message, remedy}.
    #[arg(long)]
    pub json: bool,
    /// NVML library to load instead of the system's libnvidia-ml.so.1.
    #[arg(long, env = "LEM_NVML_LIB", value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args, Clone)]
pub struct ManArgs {
    /// Write lem.1 and a page per command (lem-config-validate.1, ...) into this folder
    /// instead of printing lem.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
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
    /// Model: Hugging Face repo id (optionally `:QUANT` or `:FILE.gguf`) or a local path
    /// (required with --preset).
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<String>,
    /// Prompt dataset: alias (alpaca, gsm8k, mmlu, sharegpt), HF repo id, or a file.
    #[arg(long, short = 'd', value_name = "DATASET")]
    pub dataset: Option<String>,
    /// Number of prompts.
    #[arg(short = 'n', long = "num-prompts", value_name = "N", value_parser = positive_u32, allow_negative_numbers = true)]
    pub num_prompts: Option<u32>,
    /// Prompts per batch (batching_options.batch_size).
    #[arg(long, short = 'b', value_name = "N", value_parser = positive_u32, allow_negative_numbers = true)]
    pub batch_size: Option<u32>,
    /// Weight and compute precision for safetensors models: float32 | float16 | bfloat16
    /// (GGUF models compute as their quantisation allows; the summary says how).
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// Maximum output tokens per prompt.
    #[arg(long, value_name = "N", value_parser = positive_u32, allow_negative_numbers = true)]
    pub max_tokens: Option<u32>,
    /// Random seed for prompt sampling, shuffles and sampled decoding (random_seed).
    #[arg(long, value_name = "N", value_parser = seed_u64, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Inference processes (num_processes); lem runs one and refuses more.
    #[arg(long, value_name = "N", value_parser = positive_u32, allow_negative_numbers = true)]
    pub num_processes: Option<u32>,
    /// Comma-separated GPU indices.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub gpu_list: Option<Vec<u32>>,
    /// Sampling temperature (decoder_config.temperature; 0 = greedy).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Enable quantisation (4-bit unless the config picks 8-bit).
    #[arg(long, overrides_with = "no_quantization")]
    pub quantization: bool,
    /// Disable quantisation even if the config enables it.
    #[arg(long, overrides_with = "quantization")]
    pub no_quantization: bool,
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment config (YAML or JSON).
    pub config: Option<PathBuf>,
    /// Built-in preset (quick-test, benchmark, throughput; see `lem presets`).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Number of cycles (1-10) for statistics across repeated runs.
    #[arg(long, short = 'c', value_name = "N", value_parser = cycles_1_to_10, allow_negative_numbers = true)]
    pub cycles: Option<u32>,
    /// Do not aggregate after the run (`lem aggregate <ID>` later).
    #[arg(long)]
    pub no_aggregate: bool,
    /// Ignore interrupted experiments with the same config and start a new one.
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    /// Resume an interrupted experiment by id (completed cycles are not re-run).
    #[arg(long, value_name = "ID")]
    pub resume: Option<String>,
    /// Print the result summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep adding cycles (one at a time, from --cycles or 3) until the 95% CI
    /// half-width of --metric is within this percentage of its mean, e.g. 2%, or
    /// --max-cycles is reached; the rule and how it ended are stored with the result.
    #[arg(long, value_name = "PCT", value_parser = crate::until_ci::parse_percent, conflicts_with = "resume")]
    pub until_ci: Option<f64>,
    /// The statistic --until-ci watches (a name in `lem results show --json`'s stats).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "j_per_output_token",
        requires = "until_ci"
    )]
    pub metric: String,
    /// The most cycles --until-ci runs.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = positive_u32, allow_negative_numbers = true, requires = "until_ci")]
    pub max_cycles: u32,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Experiment configs, run in the order given.
    #[arg(required = true, value_name = "CONFIG")]
    pub configs: Vec<PathBuf>,
    /// Experiments run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Number of cycles (1-10) of every experiment, for statistics across repeated runs.
    #[arg(long, short = 'c', value_name = "N", value_parser = cycles_1_to_10, allow_negative_numbers = true)]
    pub cycles: Option<u32>,
    /// Do not aggregate after each run (`lem aggregate --all` later).
    #[arg(long)]
    pub no_aggregate: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config; errors name file, line and field.
    Validate {
        /// The config file (YAML or JSON).
        config: PathBuf,
    },
    /// Print the effective config (after inheritance, preset and defaults).
    Show {
        /// The config file (YAML or JSON).
        config: PathBuf,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Print (or write) a new commented config.
    New {
        /// Start from a built-in preset (see `lem presets`).
        #[arg(long, value_name = "NAME")]
        preset: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write one config per point of a parameter grid.
    GenerateGrid {
        /// The config every point starts from.
        base: PathBuf,
        /// key=v1,v2,... (repeatable); e.g. batch_size=1,2,4 or decoder_config.temperature=0,0.7
        #[arg(long, required = true, value_name = "KEY=V1,V2")]
        vary: Vec<String>,
        /// Folder to write the configs into; it must be empty or new (see --force).
        #[arg(long, short = 'o', default_value = "grid", value_name = "DIR")]
        output_dir: PathBuf,
        /// Clear the folder's existing .yaml files first, so no stale config is left
        /// for `lem batch DIR/*.yaml` to run.
        #[arg(long)]
        force: bool,
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
    #[arg(required_unless_present = "all", value_name = "ID")]
    pub id: Option<String>,
    /// Aggregate every experiment that has results; report the ones skipped.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Aggregate even when cycles are missing (partial) or an aggregate exists.
    #[arg(long)]
    pub force: bool,
    /// Print what happened to each experiment as a JSON array instead of text lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum ResultsCommand {
    /// List experiments (completed ones; --all includes failed and incomplete).
    List {
        /// Include failed, interrupted and running experiments.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one experiment's results (or why it failed).
    Show {
        /// Experiment id (or unique prefix).
        #[arg(value_name = "ID")]
        id: String,
        /// Per-cycle raw results instead of the aggregate.
        #[arg(long)]
        raw: bool,
        /// Machine-readable output (the aggregate, or the raw results with --raw).
        #[arg(long)]
        json: bool,
        /// No per-cycle sparklines or phase bar (drawn only when stdout is a terminal).
        #[arg(long)]
        no_plots: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Compare two experiments metric by metric: B − A, its 95% CI and whether it is
    /// significant (Welch's t-test on per-cycle values).
    Compare {
        /// The baseline experiment (id or unique prefix).
        #[arg(value_name = "A")]
        a: String,
        /// The experiment compared with it.
        #[arg(value_name = "B")]
        b: String,
        /// Only this metric (repeatable; default: every metric either side has).
        #[arg(long = "metric", value_name = "NAME")]
        metrics: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Export results as CSV, JSON Lines or Parquet for pandas and other tools (columns:
    /// docs/export.md).
    Export(ExportArgs),
    /// One statistic of many experiments as a table: rows and columns are config fields
    /// that differ between them (batch size, precision, ...), cells mean ± 95% CI.
    Table(TableArgs),
}

/// How `lem results table` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    /// Aligned columns, notes below.
    Text,
    /// Mean, CI half-width and cycles in their own columns; notes on stderr.
    Csv,
    /// A GitHub-flavoured Markdown table, notes below.
    Markdown,
}

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub select: SelectionArgs,
    /// Config field down the rows: a short name (batch_size, precision, quantization,
    /// arrival_rate, temperature, model, ...) or a dotted path (decoder_config.top_p).
    #[arg(long, value_name = "FIELD")]
    pub rows: String,
    /// Config field across the columns (as --rows).
    #[arg(long, value_name = "FIELD")]
    pub cols: String,
    /// The statistic in the cells (a name `lem results show --json` has in `stats`,
    /// e.g. j_per_output_token, output_tokens_per_s, ttft_p90_ms).
    #[arg(long, value_name = "NAME")]
    pub metric: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Text)]
    pub format: TableFormat,
    /// Machine-readable output: axes, cells (mean, CI half-width, cycles, experiment,
    /// note) and notes.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub select: SelectionArgs,
    /// CSV (null = empty cell), JSON Lines (null = `null`) or Parquet (typed, nullable
    /// columns; binary, best with --out).
    #[arg(long, value_enum)]
    pub format: crate::export::ExportFormat,
    /// One row per request, per cycle, per experiment, or per power-trace sample of each
    /// device (trace).
    #[arg(long, value_enum)]
    pub level: crate::export::ExportLevel,
    /// Write to this file (replaced whole, never half-written) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome, CliError> {
    let top = cli.data_dir.clone();
    if let Some(target) = cli.coordinator.as_deref() {
        return run_remote(target, cli.credential.as_deref(), &top, cli.command);
    }
    match cli.command {
        Command::Experiment(args) => experiment::run_experiment(&args.store.resolve(&top), args),
        Command::Batch(args) => batch::run_batch(&args.store.resolve(&top), args),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Presets(f) => reference::presets(f.json),
        Command::Datasets(f) => reference::datasets(f.json),
        Command::Gpus(a) => reference::gpus(a.json, a.nvml_lib.as_deref()),
        Command::GpuCheck(cmd) => gpu_check::run(cmd),
        Command::Aggregate(args) => results::aggregate(&args.store.resolve(&top), args),
        Command::Results(cmd) => {
            let dir = match &cmd {
                ResultsCommand::List { store, .. }
                | ResultsCommand::Show { store, .. }
                | ResultsCommand::Compare { store, .. }
                | ResultsCommand::Export(ExportArgs { store, .. })
                | ResultsCommand::Table(TableArgs { store, .. }) => store.resolve(&top),
            };
            results::run(&dir, cmd)
        }
        Command::Models(f) => model_cmd::models(f.json),
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Doctor(a) => doctor::run(&a.store.resolve(&top), a.nvml_lib.as_deref(), a.json),
        Command::Completions(a) => completions::run(a.shell),
        Command::Man(a) => man_page::run(a.out_dir.as_deref()),
        Command::Report(a) => report_cmd::run(&a.store.resolve(&top), a),
        Command::Token(TokenCommand::Create { ttl, uses, store }) => {
            token_cmd::create(&store.resolve(&top), ttl, uses)
        }
        Command::Token(TokenCommand::List { all, json, store }) => {
            token_cmd::list(&store.resolve(&top), all, json)
        }
        Command::Token(TokenCommand::Revoke { id, store }) => {
            token_cmd::revoke(&store.resolve(&top), &id)
        }
        Command::Serve(args) => serve_cmd::run(args.store.resolve(&top), args),
        Command::User(UserCommand::Add {
            name,
            role,
            out,
            store,
        }) => user_cmd::add(&store.resolve(&top), &name, role, &out),
        Command::Sweep(_) | Command::Status(_) | Command::Agent(_) => Err(CliError::usage(
            "this command talks to a coordinator: give --coordinator HOST:PORT (or \
             LEM_COORDINATOR)",
        )),
    }
}

/// A command sent to the coordinator at `target`; the ones that only run embedded say so.
fn run_remote(
    target: &str,
    credential: Option<&Path>,
    data_dir: &Path,
    command: Command,
) -> Result<Outcome, CliError> {
    let remote = || remote::Remote::new(target, credential, data_dir);
    match command {
        Command::Sweep(cmd) => sweep_cmd::run(&remote()?, cmd),
        Command::Status(a) => cluster_cmd::status(&remote()?, a.json, a.watch),
        Command::Agent(cmd) => cluster_cmd::agent(&remote()?, cmd),
        Command::Results(ResultsCommand::List { all, json, .. }) => {
            remote_results::list(&remote()?, all, json)
        }
        Command::Results(cmd @ ResultsCommand::Show { raw: false, .. }) => {
            remote_results::show(&remote()?, cmd)
        }
        Command::Results(
            cmd @ (ResultsCommand::Show { .. }
            | ResultsCommand::Compare { .. }
            | ResultsCommand::Export(_)
            | ResultsCommand::Table(_)),
        ) => remote_results::read_command(&remote()?, remote_results::ReadCommand::Results(cmd)),
        Command::Report(args) => {
            remote_results::read_command(&remote()?, remote_results::ReadCommand::Report(args))
        }
        Command::Aggregate(a) => remote_results::aggregate(&remote()?, a),
        Command::Token(TokenCommand::Create { ttl, uses, .. }) => {
            token_cmd::create_remote(&remote()?, ttl, uses)
        }
        Command::Token(TokenCommand::List { all, json, .. }) => {
            token_cmd::list_remote(&remote()?, all, json)
        }
        Command::Token(TokenCommand::Revoke { id, .. }) => {
            token_cmd::revoke_remote(&remote()?, &id)
        }
        _ => Err(CliError::usage(format!(
            "--coordinator {target}: this command runs embedded only; through a coordinator \
             lem offers sweep, status, agent, results (list, show, compare, export, table), \
             report, aggregate and token (create, list, revoke) \
             (drop --coordinator, or unset LEM_COORDINATOR)"
        ))),
    }
}

/// A hint for `store`: `lem --coordinator ADDR rest` for a coordinator's records, else
/// [`lem_hint`] with its data dir.
pub(crate) fn store_hint(store: &crate::embedded::StoreHandle, rest: &str) -> String {
    match &store.coordinator {
        Some(addr) => format!("lem --coordinator {addr} {rest}"),
        None => lem_hint(&store.data_dir, rest),
    }
}

/// Where `store`'s results live, for messages: its data dir, or the coordinator.
pub(crate) fn store_place(store: &crate::embedded::StoreHandle) -> String {
    match &store.coordinator {
        Some(addr) => format!("the coordinator at {addr}"),
        None => store.data_dir.display().to_string(),
    }
}

/// A `lem` command line to print as a hint, with the data dir this run used, so it works
/// as printed from the same directory.
pub(crate) fn lem_hint(data_dir: &Path, rest: &str) -> String {
    let dir = data_dir.display().to_string();
    let quoted = if dir
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        dir
    } else {
        format!("'{}'", dir.replace('\'', "'\\''"))
    };
    format!("lem --data-dir {quoted} {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refuse_zero_and_negatives_in_words() {
        assert_eq!(positive_u32("8"), Ok(8));
        assert_eq!(
            positive_u32("-3"),
            Err("must be a positive integer, got -3".to_string())
        );
        assert!(positive_u32("0").is_err());
        assert!(cycles_1_to_10("11").is_err());
        assert_eq!(cycles_1_to_10("10"), Ok(10));
        assert_eq!(positive_ms("250"), Ok(250));
        assert!(positive_ms("0").is_err());
        assert!(positive_ms("1s").unwrap_err().contains("1s"));
    }

    /// Every subcommand, with its path (`config generate-grid`).
    fn all_commands() -> Vec<(String, clap::Command)> {
        use clap::CommandFactory;
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), Cli::command())];
        while let Some((path, cmd)) = stack.pop() {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name()).trim().to_string();
                stack.push((name, sub.clone()));
            }
            out.push((path, cmd));
        }
        out
    }

    #[test]
    fn every_flag_and_argument_has_help() {
        let mut missing = Vec::new();
        for (path, cmd) in all_commands() {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("lem {path}: {id}"));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn data_dir_is_offered_only_where_the_store_is_used_and_coordinator_at_the_top() {
        let store_users = [
            "",
            "experiment",
            "batch",
            "aggregate",
            "results list",
            "results show",
            "doctor",
            "results compare",
            "results export",
            "results table",
            "report",
            "token create",
            "token list",
            "token revoke",
            "user add",
            "serve",
        ];
        for (path, cmd) in all_commands() {
            let mut cmd = cmd;
            cmd.build();
            let shown = |long: &str| {
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(long) && !a.is_hide_set())
            };
            assert_eq!(
                shown("data-dir"),
                store_users.contains(&path.as_str()),
                "`lem {path}` and --data-dir"
            );
            // `lem --coordinator X sweep ...`: given before the subcommand, like --data-dir.
            assert_eq!(
                shown("coordinator"),
                path.is_empty(),
                "`lem {path}` and --coordinator"
            );
        }
    }

    #[test]
    fn hints_quote_a_data_dir_the_shell_would_split() {
        assert_eq!(
            lem_hint(Path::new("results"), "results list"),
            "lem --data-dir results results list"
        );
        assert_eq!(
            lem_hint(Path::new("/tmp/my runs"), "results list"),
            "lem --data-dir '/tmp/my runs' results list"
        );
    }
}
