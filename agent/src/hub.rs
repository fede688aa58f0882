//! Model resolution: local path, lem model cache, Hugging Face cache, hub download.
//!
//! A model name is a local path (a `.gguf` file or a model directory) or a Hugging Face
//! repo id, optionally pinned to one GGUF file: `org/name:FILE.gguf` or `org/name:Q4_1`
//! (the `.gguf` whose name contains that quantisation tag, case-insensitive).
//!
//! Places are tried in this order, the first that holds the model wins:
//! 1. the name as a local path;
//! 2. lem's model dir, `<lem_model_dir>/<org>--<name>/` (filled by `scripts/fetch-model.sh`);
//! 3. the Hugging Face cache, `<hf>/models--<org>--<name>/snapshots/<commit>/`, where the
//!    commit is read from `refs/<revision>` (or the revision is the commit itself);
//! 4. unless offline, a download with hf-hub into that same Hugging Face cache.
//!
//! In a directory holding both, GGUF wins over safetensors: GGUF is what the engine runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// Where models are looked for and whether the hub may be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    pub lem_model_dir: PathBuf,
    /// The hub cache itself (the directory holding `models--*`), not `HF_HOME`.
    pub hf_cache_dir: PathBuf,
    pub offline: bool,
    /// Branch, tag or commit hash; `main` by default.
    pub revision: String,
    /// What a leading `~/` in a model path stands for (`HOME`); `None` leaves it as is.
    pub home_dir: Option<PathBuf>,
    /// Token and endpoint for the hub.
    pub access: HubAccess,
}

/// How lem talks to the Hugging Face hub: `HF_TOKEN` (else the token file beside the
/// hub cache) and `HF_ENDPOINT`, read once with the rest of [`ResolveOptions`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HubAccess {
    pub token: Option<String>,
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for HubAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("HubAccess")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ResolveOptions {
    /// From the environment: `LEM_MODEL_DIR` (default `~/.cache/lem/models`);
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`;
    /// offline when `HF_HUB_OFFLINE` or `LEM_OFFLINE` is `1`/`true`/`yes`/`on`.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// `from_env` with the variables read through `get` (tests pass a map). Also reads
    /// `HF_TOKEN` and `HF_ENDPOINT` ([`HubAccess`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |key: &str| get(key).filter(|v| !v.is_empty());
        // `~/` expands only with HOME set (an empty HOME included, as before).
        let home_dir = get("HOME").map(PathBuf::from);
        let home = set("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let cache = home.join(".cache");
        let lem_model_dir = set("LEM_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("lem").join("models"));
        let hf_cache_dir = set("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| set("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .unwrap_or_else(|| cache.join("huggingface").join("hub"));
        let truthy = |key: &str| {
            set(key).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        };
        Self {
            lem_model_dir,
            hf_cache_dir,
            offline: truthy("HF_HUB_OFFLINE") || truthy("LEM_OFFLINE"),
            revision: "main".to_string(),
            home_dir,
            access: HubAccess {
                token: set("HF_TOKEN"),
                endpoint: get("HF_ENDPOINT"),
            },
        }
    }
}

/// What kind of weights were found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf {
        file: PathBuf,
    },
    /// A directory with `config.json` and one or more `*.safetensors`.
    Safetensors {
        dir: PathBuf,
    },
}

impl ModelFormat {
    /// `gguf` or `safetensors` (the names `ModelInfo::format` uses).
    pub fn name(&self) -> &'static str {
        match self {
            ModelFormat::Gguf { .. } => "gguf",
            ModelFormat::Safetensors { .. } => "safetensors",
        }
    }

    /// The file or directory to load.
    pub fn path(&self) -> &Path {
        match self {
            ModelFormat::Gguf { file } => file,
            ModelFormat::Safetensors { dir } => dir,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub format: ModelFormat,
    /// `local`, `lem-cache`, `hf-cache` or `hf-download`.
    pub resolved_from: &'static str,
    pub tokenizer_json: Option<PathBuf>,
    pub config_json: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "model `{name}` not found{offline}. Looked in:\n{looked}\n{hint}",
        offline = if *.offline { " (offline)" } else { "" },
        looked = bullet_list(.looked),
        hint = fetch_hint(.offline)
    )]
    NotFound {
        name: String,
        offline: bool,
        /// One line per place: the path and what was (not) there.
        looked: Vec<String>,
    },
    #[error("model `{name}`: local path {} {reason}", .path.display())]
    UnusableLocal {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "model `{name}`: {place} holds several GGUF files; pin one with `{base}:FILE.gguf` \
         or `{base}:QUANT` (e.g. `{base}:Q4_1`):\n{candidates}",
        candidates = bullet_list(.candidates)
    )]
    AmbiguousGguf {
        name: String,
        base: String,
        place: String,
        candidates: Vec<String>,
    },
    #[error(
        "model `{name}`: repo {repo} on the Hugging Face hub has no GGUF file matching \
         `{selector}`{available}",
        available = available_list(.available)
    )]
    NoMatchingGguf {
        name: String,
        repo: String,
        selector: String,
        available: Vec<String>,
    },
    #[error(
        "model `{name}`: repo {repo} on the Hugging Face hub has neither config.json with \
         *.safetensors nor a .gguf file{available}",
        available = available_list(.available)
    )]
    NothingLoadable {
        name: String,
        repo: String,
        available: Vec<String>,
    },
    #[error(
        "model `{name}`: downloading {what} of {repo} from the Hugging Face hub failed: \
         {source}\nAlready looked in:\n{looked}\n{hint}",
        looked = bullet_list(.looked),
        hint = fetch_hint(&false)
    )]
    Download {
        name: String,
        repo: String,
        /// The file, or `the file list`.
        what: String,
        looked: Vec<String>,
        #[source]
        source: Box<ApiError>,
    },
}

fn bullet_list(items: &[String]) -> String {
    let mut s = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let _ = write!(s, "  - {item}");
    }
    s
}

fn available_list(items: &[String]) -> String {
    if items.is_empty() {
        return " (the repo lists no files)".to_string();
    }
    const SHOWN: usize = 20;
    let mut s = format!("; it has {}", items[..items.len().min(SHOWN)].join(", "));
    if items.len() > SHOWN {
        let _ = write!(s, " and {} more", items.len() - SHOWN);
    }
    s
}

fn fetch_hint(offline: &bool) -> String {
    let mut s = String::from(
        "To fetch it: `scripts/fetch-model.sh` installs SmolLM2-135M-Instruct (Q4_1 GGUF) \
         into lem's model dir; any other .gguf can be copied to <LEM_MODEL_DIR>/<org>--<name>/",
    );
    if *offline {
        s.push_str(
            "; or unset HF_HUB_OFFLINE / LEM_OFFLINE where the Hugging Face hub is reachable",
        );
    }
    s.push('.');
    s
}

/// A model found in lem's model dir or the Hugging Face cache (for `lem models`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    pub repo_id: String,
    /// The `.gguf` file, or the safetensors directory.
    pub path: PathBuf,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// File size; for safetensors, the sum of the weight files.
    pub size_bytes: u64,
    /// `lem-cache` or `hf-cache`.
    pub from: &'static str,
}

/// How a name pins one GGUF file among several.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// `org/name:FILE.gguf`: a file name (or path inside the repo).
    File(String),
    /// `org/name:Q4_1`: a quantisation tag contained in the file name.
    Quant(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::File(s) | Selector::Quant(s) => f.write_str(s),
        }
    }
}

/// Splits `base:SELECTOR`; a part after the last `:` holding a `/` is not a selector.
fn split_selector(name: &str) -> (&str, Option<Selector>) {
    match name.rsplit_once(':') {
        Some((base, sel)) if !base.is_empty() && !sel.is_empty() && !sel.contains('/') => {
            let selector = if sel.to_ascii_lowercase().ends_with(".gguf") {
                Selector::File(sel.to_string())
            } else {
                Selector::Quant(sel.to_string())
            };
            (base, Some(selector))
        }
        _ => (name, None),
    }
}

fn expand_home(name: &str, home_dir: Option<&Path>) -> PathBuf {
    match (name.strip_prefix("~/"), home_dir) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(name),
    }
}

/// Hugging Face repo id rules, loosely: `name` or `org/name` of `[A-Za-z0-9._-]`.
pub(crate) fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && !s.contains("..")
        && !s.to_ascii_lowercase().ends_with(".gguf")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// Folder name of a repo in the Hugging Face cache (`models--org--name`).
pub(crate) fn hf_repo_folder(kind: RepoType, repo_id: &str) -> String {
    Repo::new(repo_id.to_string(), kind).folder_name()
}

/// The snapshot directory of `repo_id` at `revision` in the Hugging Face cache.
/// On failure, says what was looked at (for "not found" messages).
pub(crate) fn hf_snapshot(
    hf_cache_dir: &Path,
    kind: RepoType,
    repo_id: &str,
    revision: &str,
) -> Result<PathBuf, String> {
    let repo_dir = hf_cache_dir.join(hf_repo_folder(kind, repo_id));
    // A commit hash names its snapshot directly.
    let direct = repo_dir.join("snapshots").join(revision);
    if !revision.is_empty() && !revision.contains('/') && direct.is_dir() {
        return Ok(direct);
    }
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(c) => c.trim().to_string(),
        Err(_) => {
            return Err(format!(
                "Hugging Face cache {}: {}",
                ref_file.display(),
                if repo_dir.is_dir() {
                    format!("no ref `{revision}`")
                } else {
                    "does not exist".to_string()
                }
            ))
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if commit.is_empty() || !snapshot.is_dir() {
        return Err(format!(
            "Hugging Face cache {}: refs/{revision} points to `{commit}`, which has no snapshot",
            repo_dir.display()
        ));
    }
    Ok(snapshot)
}

/// Model files found in one directory.
#[derive(Debug, Default)]
struct DirContents {
    /// Paths relative to the directory, sorted.
    ggufs: Vec<String>,
    safetensors: Vec<PathBuf>,
    config_json: Option<PathBuf>,
    tokenizer_json: Option<PathBuf>,
}

/// GGUF files may sit one level down (repos with a folder per quantisation).
fn inspect_dir(dir: &Path) -> DirContents {
    let mut found = DirContents::default();
    let file = |p: &Path| p.is_file().then(|| p.to_path_buf());
    found.config_json = file(&dir.join("config.json"));
    found.tokenizer_json = file(&dir.join("tokenizer.json"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // `is_file`/`is_dir` follow symlinks: HF snapshots link into blobs/.
        if path.is_file() {
            if is_weight_gguf(&name) {
                found.ggufs.push(name);
            } else if name.ends_with(".safetensors") {
                found.safetensors.push(path);
            }
        } else if path.is_dir() {
            for sub in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let sub_name = sub.file_name().to_string_lossy().into_owned();
                if is_weight_gguf(&sub_name) && sub.path().is_file() {
                    found.ggufs.push(format!("{name}/{sub_name}"));
                }
            }
        }
    }
    found.ggufs.sort();
    found.safetensors.sort();
    found
}

/// Vision projectors (`mmproj-*.gguf`) ship beside language weights but are not a model.
fn is_weight_gguf(file_name: &str) -> bool {
    let lower = file_name.to_ascii_lowercase();
    lower.ends_with(".gguf") && !lower.starts_with("mmproj")
}

fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

#[derive(Debug, PartialEq, Eq)]
enum GgufPick {
    One(String),
    Ambiguous(Vec<String>),
    /// There are GGUF files, but none fits the selector (or none at all).
    NoMatch,
}

/// Chooses one GGUF among `candidates` (paths relative to a snapshot or repo root).
fn pick_gguf(candidates: &[String], selector: Option<&Selector>) -> GgufPick {
    let matching: Vec<&String> = match selector {
        None => candidates.iter().collect(),
        Some(Selector::File(f)) => candidates
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(f) || base_name(c).eq_ignore_ascii_case(f))
            .collect(),
        Some(Selector::Quant(tag)) => {
            let tag = tag.to_ascii_lowercase();
            let containing: Vec<&String> = candidates
                .iter()
                .filter(|c| base_name(c).to_ascii_lowercase().contains(&tag))
                .collect();
            // `F16` is inside `BF16` and `Q4_0` inside `Q4_0_4_4`: prefer files where the
            // tag stands alone between separators, when that narrows the choice.
            let standalone: Vec<&String> = containing
                .iter()
                .copied()
                .filter(|c| tag_stands_alone(&base_name(c).to_ascii_lowercase(), &tag))
                .collect();
            if standalone.is_empty() {
                containing
            } else {
                standalone
            }
        }
    };
    match matching.as_slice() {
        [] => GgufPick::NoMatch,
        [one] => GgufPick::One((*one).clone()),
        many => GgufPick::Ambiguous(many.iter().map(|s| (*s).clone()).collect()),
    }
}

fn tag_stands_alone(name: &str, tag: &str) -> bool {
    let is_sep = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
    name.match_indices(tag).any(|(i, _)| {
        is_sep(name[..i].chars().next_back()) && is_sep(name[i + tag.len()..].chars().next())
    })
}

/// What a directory yields: a model, or why not.
enum DirOutcome {
    Found(ResolvedModel),
    Missing(String),
}

/// One line of the "looked in" list.
fn looked_line(place: &str, dir: &Path, why: &str) -> String {
    format!("{place} {}: {why}", dir.display())
}

struct Request<'a> {
    name: &'a str,
    base: &'a str,
    selector: Option<&'a Selector>,
}

fn resolve_in_dir(
    dir: &Path,
    req: &Request<'_>,
    place: &str,
    from: &'static str,
) -> Result<DirOutcome, HubError> {
    if !dir.is_dir() {
        return Ok(DirOutcome::Missing("does not exist".to_string()));
    }
    let found = inspect_dir(dir);
    let with_extras = |format: ModelFormat| {
        let beside = |file: &str, root: &Option<PathBuf>| {
            // A GGUF in a sub-folder: its own folder first, then the root.
            let own = format.path().parent().map(|p| p.join(file));
            own.filter(|p| p.is_file()).or_else(|| root.clone())
        };
        let (tokenizer_json, config_json) = match &format {
            ModelFormat::Gguf { .. } => (
                beside("tokenizer.json", &found.tokenizer_json),
                beside("config.json", &found.config_json),
            ),
            ModelFormat::Safetensors { .. } => {
                (found.tokenizer_json.clone(), found.config_json.clone())
            }
        };
        DirOutcome::Found(ResolvedModel {
            format,
            resolved_from: from,
            tokenizer_json,
            config_json,
        })
    };
    let pick = pick_gguf(&found.ggufs, req.selector);
    match (pick, req.selector) {
        (GgufPick::One(rel), _) => Ok(with_extras(ModelFormat::Gguf {
            file: dir.join(rel),
        })),
        (GgufPick::Ambiguous(candidates), _) => Err(HubError::AmbiguousGguf {
            name: req.name.to_string(),
            base: req.base.to_string(),
            place: format!("{place} {}", dir.display()),
            candidates,
        }),
        (GgufPick::NoMatch, Some(sel)) => Ok(DirOutcome::Missing(format!(
            "no GGUF file matching `{sel}`{}",
            if found.ggufs.is_empty() {
                String::new()
            } else {
                format!(" (has {})", found.ggufs.join(", "))
            }
        ))),
        (GgufPick::NoMatch, None) => {
            if found.config_json.is_some() && !found.safetensors.is_empty() {
                Ok(with_extras(ModelFormat::Safetensors {
                    dir: dir.to_path_buf(),
                }))
            } else {
                Ok(DirOutcome::Missing(
                    "no .gguf file and no config.json with *.safetensors".to_string(),
                ))
            }
        }
    }
}

/// Finds (or, when allowed, downloads) the model `name`. See the module docs for the order.
pub fn resolve_model(name: &str, opts: &ResolveOptions) -> Result<ResolvedModel, HubError> {
    let name = name.trim();
    let mut looked = Vec::new();

    // 1. A local path, whole or with a `:selector` suffix.
    let (base, selector) = if expand_home(name, opts.home_dir.as_deref()).exists() {
        (name, None)
    } else {
        split_selector(name)
    };
    let req = Request {
        name,
        base,
        selector: selector.as_ref(),
    };
    let local = expand_home(base, opts.home_dir.as_deref());
    if local.is_file() {
        let lower = base.to_ascii_lowercase();
        if !lower.ends_with(".gguf") {
            return Err(HubError::UnusableLocal {
                name: name.to_string(),
                path: local,
                reason: "is a file but not a .gguf file".to_string(),
            });
        }
        let dir = local.parent().unwrap_or(Path::new("."));
        let sibling = |f: &str| Some(dir.join(f)).filter(|p| p.is_file());
        return Ok(ResolvedModel {
            tokenizer_json: sibling("tokenizer.json"),
            config_json: sibling("config.json"),
            format: ModelFormat::Gguf { file: local },
            resolved_from: "local",
        });
    }
    if local.is_dir() {
        return match resolve_in_dir(&local, &req, "local directory", "local")? {
            DirOutcome::Found(m) => Ok(m),
            DirOutcome::Missing(reason) => Err(HubError::UnusableLocal {
                name: name.to_string(),
                path: local,
                reason: format!("holds {reason}"),
            }),
        };
    }
    looked.push(format!("local path {}: does not exist", local.display()));
    if !is_repo_id(base) {
        // Not a repo id either: nothing else can hold it.
        return Err(HubError::NotFound {
            name: name.to_string(),
            offline: opts.offline,
            looked,
        });
    }

    // 2. lem's model dir.
    let lem_dir = opts.lem_model_dir.join(base.replace('/', "--"));
    match resolve_in_dir(&lem_dir, &req, "lem model dir", "lem-cache")? {
        DirOutcome::Found(m) => return Ok(m),
        DirOutcome::Missing(why) => looked.push(looked_line("lem model dir", &lem_dir, &why)),
    }

    // 3. The Hugging Face cache.
    match hf_snapshot(&opts.hf_cache_dir, RepoType::Model, base, &opts.revision) {
        Ok(snapshot) => match resolve_in_dir(&snapshot, &req, "Hugging Face cache", "hf-cache")? {
            DirOutcome::Found(m) => return Ok(m),
            DirOutcome::Missing(why) => {
                looked.push(looked_line("Hugging Face cache", &snapshot, &why))
            }
        },
        Err(why) => looked.push(why),
    }

    // 4. The hub.
    if opts.offline {
        return Err(HubError::NotFound {
            name: name.to_string(),
            offline: true,
            looked,
        });
    }
    download_model(&req, opts, looked)
}

/// Files to fetch from a repo, chosen from its file list.
#[derive(Debug, PartialEq, Eq)]
struct DownloadPlan {
    /// The GGUF file, or the safetensors weights (with their index).
    weights: Vec<String>,
    gguf: bool,
    /// `config.json`, `tokenizer.json` and friends, where the repo has them.
    extras: Vec<String>,
}

/// Safetensors + config.json for a plain repo; one GGUF when pinned or when the repo only
/// has GGUF files.
fn plan_download(req: &Request<'_>, files: &[String]) -> Result<DownloadPlan, HubError> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let extras_from = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|n| has(n))
            .map(|n| n.to_string())
            .collect()
    };
    let ggufs: Vec<String> = files
        .iter()
        .filter(|f| is_weight_gguf(base_name(f)))
        .cloned()
        .collect();
    let top_safetensors: Vec<String> = files
        .iter()
        .filter(|f| !f.contains('/') && f.ends_with(".safetensors"))
        .cloned()
        .collect();
    let plain = has("config.json") && !top_safetensors.is_empty();
    if req.selector.is_none() && plain {
        let mut weights = top_safetensors;
        weights.extend(extras_from(&["model.safetensors.index.json"]));
        return Ok(DownloadPlan {
            weights,
            gguf: false,
            extras: extras_from(&[
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
            ]),
        });
    }
    match pick_gguf(&ggufs, req.selector) {
        GgufPick::One(file) => Ok(DownloadPlan {
            weights: vec![file],
            gguf: true,
            extras: extras_from(&["config.json", "tokenizer.json"]),
        }),
        GgufPick::Ambiguous(candidates) => Err(HubError::AmbiguousGguf {
            name: req.name.to_string(),
            base: req.base.to_string(),
            place: format!("repo {} on the Hugging Face hub", req.base),
            candidates,
        }),
        GgufPick::NoMatch => match req.selector {
            Some(sel) => Err(HubError::NoMatchingGguf {
                name: req.name.to_string(),
                repo: req.base.to_string(),
                selector: sel.to_string(),
                available: ggufs,
            }),
            None => Err(HubError::NothingLoadable {
                name: req.name.to_string(),
                repo: req.base.to_string(),
                available: files.to_vec(),
            }),
        },
    }
}

/// An hf-hub client writing into `hf_cache_dir`, with the user's token and endpoint.
pub(crate) fn api_builder(hf_cache_dir: &Path, access: &HubAccess) -> ApiBuilder {
    let mut builder = ApiBuilder::new().with_cache_dir(hf_cache_dir.to_path_buf());
    // The token file sits beside the hub cache (`$HF_HOME/token`); `HF_TOKEN` wins.
    let token = access
        .token
        .clone()
        .or_else(|| Cache::new(hf_cache_dir.to_path_buf()).token());
    if token.is_some() {
        builder = builder.with_token(token);
    }
    if let Some(endpoint) = &access.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    builder
}

/// Downloads into the Hugging Face cache with hf-hub, so a later offline run finds it there.
fn download_model(
    req: &Request<'_>,
    opts: &ResolveOptions,
    looked: Vec<String>,
) -> Result<ResolvedModel, HubError> {
    let fail = |what: &str, looked: &[String], e: ApiError| HubError::Download {
        name: req.name.to_string(),
        repo: req.base.to_string(),
        what: what.to_string(),
        looked: looked.to_vec(),
        source: Box::new(e),
    };
    let api = api_builder(&opts.hf_cache_dir, &opts.access)
        .build()
        .map_err(|e| fail("the file list", &looked, e))?;
    let repo = api.repo(Repo::with_revision(
        req.base.to_string(),
        RepoType::Model,
        opts.revision.clone(),
    ));
    let info = repo.info().map_err(|e| fail("the file list", &looked, e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let plan = plan_download(req, &files)?;
    tracing::info!(repo = req.base, files = ?plan.weights, "downloading model from the Hugging Face hub");

    let mut fetched = Vec::new();
    for file in plan.weights.iter().chain(&plan.extras) {
        let path = repo.get(file).map_err(|e| fail(file, &looked, e))?;
        fetched.push((file.as_str(), path));
    }
    let path_of = |f: &str| {
        fetched
            .iter()
            .find(|(name, _)| *name == f)
            .map(|(_, p)| p.clone())
    };
    let first = fetched[0].1.clone();
    let format = if plan.gguf {
        ModelFormat::Gguf { file: first }
    } else {
        ModelFormat::Safetensors {
            dir: first.parent().map(Path::to_path_buf).unwrap_or(first),
        }
    };
    Ok(ResolvedModel {
        format,
        resolved_from: "hf-download",
        tokenizer_json: path_of("tokenizer.json"),
        config_json: path_of("config.json"),
    })
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn models_in_dir(dir: &Path, repo_id: &str, from: &'static str, out: &mut Vec<CachedModel>) {
    let found = inspect_dir(dir);
    for rel in &found.ggufs {
        let path = dir.join(rel);
        out.push(CachedModel {
            repo_id: repo_id.to_string(),
            size_bytes: file_size(&path),
            path,
            format: "gguf",
            from,
        });
    }
    if found.config_json.is_some() && !found.safetensors.is_empty() {
        out.push(CachedModel {
            repo_id: repo_id.to_string(),
            path: dir.to_path_buf(),
            format: "safetensors",
            size_bytes: found.safetensors.iter().map(|p| file_size(p)).sum(),
            from,
        });
    }
}

fn sorted_subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    dirs.sort();
    dirs
}

/// Every model in lem's model dir and in the Hugging Face cache (all snapshots), lem's first.
pub fn list_cached_models(opts: &ResolveOptions) -> Vec<CachedModel> {
    let mut out = Vec::new();
    for (folder, path) in sorted_subdirs(&opts.lem_model_dir) {
        models_in_dir(&path, &folder.replace("--", "/"), "lem-cache", &mut out);
    }
    for (folder, path) in sorted_subdirs(&opts.hf_cache_dir) {
        let Some(repo) = folder.strip_prefix("models--") else {
            continue;
        };
        let repo_id = repo.replace("--", "/");
        for (_, snapshot) in sorted_subdirs(&path.join("snapshots")) {
            models_in_dir(&snapshot, &repo_id, "hf-cache", &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    struct Caches {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        opts: ResolveOptions,
    }

    fn caches(offline: bool) -> Caches {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let opts = ResolveOptions {
            lem_model_dir: root.join("lem"),
            hf_cache_dir: root.join("hf"),
            offline,
            revision: "main".into(),
            home_dir: None,
            access: HubAccess::default(),
        };
        Caches {
            _tmp: tmp,
            root,
            opts,
        }
    }

    fn touch(path: &Path, bytes: usize) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![7u8; bytes]).unwrap();
    }

    /// An HF cache entry: refs/main -> snapshots/HASH/<files>.
    fn hf_repo(c: &Caches, repo: &str, files: &[&str]) -> PathBuf {
        let dir = c
            .opts
            .hf_cache_dir
            .join(hf_repo_folder(RepoType::Model, repo));
        fs::create_dir_all(dir.join("refs")).unwrap();
        fs::write(dir.join("refs/main"), format!("{HASH}\n")).unwrap();
        let snap = dir.join("snapshots").join(HASH);
        for f in files {
            touch(&snap.join(f), 10);
        }
        snap
    }

    fn lem_repo(c: &Caches, repo: &str, files: &[&str]) -> PathBuf {
        let dir = c.opts.lem_model_dir.join(repo.replace('/', "--"));
        for f in files {
            touch(&dir.join(f), 10);
        }
        dir
    }

    #[test]
    fn options_from_env_follow_hf_precedence() {
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ResolveOptions::from_lookup(move |k| m.get(k).cloned())
        };
        let o = env(&[("HOME", "/h")]);
        assert_eq!(o.lem_model_dir, PathBuf::from("/h/.cache/lem/models"));
        assert_eq!(o.hf_cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert!(!o.offline);
        assert_eq!(o.revision, "main");
        let o = env(&[("HOME", "/h"), ("HF_HOME", "/hf"), ("HF_HUB_OFFLINE", "1")]);
        assert_eq!(o.hf_cache_dir, PathBuf::from("/hf/hub"));
        assert!(o.offline);
        let o = env(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("LEM_MODEL_DIR", "/m"),
            ("LEM_OFFLINE", "TRUE"),
        ]);
        assert_eq!(o.hf_cache_dir, PathBuf::from("/cache"));
        assert_eq!(o.lem_model_dir, PathBuf::from("/m"));
        assert!(o.offline);
        assert!(!env(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn local_gguf_file_with_tokenizer_beside() {
        let c = caches(true);
        let file = c.root.join("m/model.Q8_0.gguf");
        touch(&file, 5);
        touch(&c.root.join("m/tokenizer.json"), 5);
        let r = resolve_model(file.to_str().unwrap(), &c.opts).unwrap();
        assert_eq!(r.resolved_from, "local");
        assert_eq!(r.format, ModelFormat::Gguf { file: file.clone() });
        assert_eq!(r.tokenizer_json, Some(c.root.join("m/tokenizer.json")));
        assert_eq!(r.config_json, None);
    }

    #[test]
    fn local_dirs_gguf_safetensors_and_selector() {
        let c = caches(true);
        let st = c.root.join("st");
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            touch(&st.join(f), 3);
        }
        let r = resolve_model(st.to_str().unwrap(), &c.opts).unwrap();
        assert_eq!(r.format, ModelFormat::Safetensors { dir: st.clone() });
        assert_eq!(r.config_json, Some(st.join("config.json")));
        assert_eq!(r.tokenizer_json, Some(st.join("tokenizer.json")));

        let g = c.root.join("g");
        touch(&g.join("a-Q4_1.gguf"), 3);
        touch(&g.join("a-Q8_0.gguf"), 3);
        let name = format!("{}:q8_0", g.display());
        let r = resolve_model(&name, &c.opts).unwrap();
        assert_eq!(r.format.path(), g.join("a-Q8_0.gguf"));
        assert_eq!(r.resolved_from, "local");

        let empty = c.root.join("empty");
        fs::create_dir_all(&empty).unwrap();
        let e = resolve_model(empty.to_str().unwrap(), &c.opts).unwrap_err();
        assert!(matches!(e, HubError::UnusableLocal { .. }), "{e}");
        assert!(e.to_string().contains("no .gguf file"), "{e}");
        let txt = c.root.join("notes.txt");
        touch(&txt, 1);
        let e = resolve_model(txt.to_str().unwrap(), &c.opts).unwrap_err();
        assert!(e.to_string().contains("not a .gguf file"), "{e}");
    }

    #[test]
    fn lem_cache_gguf_with_optional_tokenizer() {
        let c = caches(true);
        let dir = lem_repo(
            &c,
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        );
        let r = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", &c.opts).unwrap();
        assert_eq!(r.resolved_from, "lem-cache");
        assert_eq!(r.format.path(), dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(r.format.name(), "gguf");
        assert_eq!(r.tokenizer_json, None);
        touch(&dir.join("tokenizer.json"), 2);
        let r = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1", &c.opts).unwrap();
        assert_eq!(r.tokenizer_json, Some(dir.join("tokenizer.json")));
    }

    #[test]
    fn hf_cache_by_ref_and_by_hash_gguf_and_safetensors() {
        let mut c = caches(true);
        let snap = hf_repo(
            &c,
            "org/plain",
            &["config.json", "model.safetensors", "tokenizer.json"],
        );
        let r = resolve_model("org/plain", &c.opts).unwrap();
        assert_eq!(r.resolved_from, "hf-cache");
        assert_eq!(r.format, ModelFormat::Safetensors { dir: snap.clone() });
        assert_eq!(r.tokenizer_json, Some(snap.join("tokenizer.json")));

        let snap = hf_repo(
            &c,
            "org/quant-GGUF",
            &["Q4_1/m-Q4_1.gguf", "tokenizer.json"],
        );
        let r = resolve_model("org/quant-GGUF", &c.opts).unwrap();
        assert_eq!(r.format.path(), snap.join("Q4_1/m-Q4_1.gguf"));
        assert_eq!(r.tokenizer_json, Some(snap.join("tokenizer.json")));

        // A revision that is itself a commit hash needs no ref.
        c.opts.revision = HASH.to_string();
        fs::remove_file(
            c.opts
                .hf_cache_dir
                .join("models--org--quant-GGUF/refs/main"),
        )
        .unwrap();
        let r = resolve_model("org/quant-GGUF", &c.opts).unwrap();
        assert_eq!(r.resolved_from, "hf-cache");
        // An unknown branch is not found, and the message names the ref looked for.
        c.opts.revision = "dev".to_string();
        let e = resolve_model("org/quant-GGUF", &c.opts).unwrap_err();
        assert!(e.to_string().contains("no ref `dev`"), "{e}");
    }

    #[test]
    fn precedence_local_then_lem_cache_then_hf_cache() {
        let c = caches(true);
        let repo = "org/m";
        hf_repo(&c, repo, &["m.Q4_1.gguf"]);
        assert_eq!(
            resolve_model(repo, &c.opts).unwrap().resolved_from,
            "hf-cache"
        );
        lem_repo(&c, repo, &["m.Q4_1.gguf"]);
        assert_eq!(
            resolve_model(repo, &c.opts).unwrap().resolved_from,
            "lem-cache"
        );
        // An existing path is taken before either cache is consulted.
        let cwd = c.root.join("cwd");
        touch(&cwd.join(repo).join("m.Q4_1.gguf"), 1);
        let local = cwd.join(repo);
        let r = resolve_model(local.to_str().unwrap(), &c.opts).unwrap();
        assert_eq!(r.resolved_from, "local");
    }

    #[test]
    fn quant_tag_selection_falls_through_places() {
        let c = caches(true);
        lem_repo(&c, "org/m", &["m.Q4_1.gguf"]);
        let snap = hf_repo(&c, "org/m", &["m.Q8_0.gguf", "m.Q4_1.gguf"]);
        // lem's dir lacks Q8_0, the HF cache has it.
        let r = resolve_model("org/m:Q8_0", &c.opts).unwrap();
        assert_eq!(r.resolved_from, "hf-cache");
        assert_eq!(r.format.path(), snap.join("m.Q8_0.gguf"));
        let r = resolve_model("org/m:m.Q8_0.gguf", &c.opts).unwrap();
        assert_eq!(r.format.path(), snap.join("m.Q8_0.gguf"));
    }

    #[test]
    fn pick_gguf_prefers_standalone_tags() {
        let files: Vec<String> = [
            "m-bf16.gguf",
            "m-f16.gguf",
            "m-Q4_0.gguf",
            "m-Q4_0_4_4.gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let q = |t: &str| pick_gguf(&files, Some(&Selector::Quant(t.into())));
        assert_eq!(q("F16"), GgufPick::One("m-f16.gguf".into()));
        assert_eq!(q("bf16"), GgufPick::One("m-bf16.gguf".into()));
        assert_eq!(q("q4_0"), GgufPick::One("m-Q4_0.gguf".into()));
        assert_eq!(q("Q4_0_4"), GgufPick::One("m-Q4_0_4_4.gguf".into()));
        assert_eq!(q("Q5_K"), GgufPick::NoMatch);
        assert!(matches!(pick_gguf(&files, None), GgufPick::Ambiguous(v) if v.len() == 4));
        assert_eq!(
            split_selector("org/m:Q4_1").1,
            Some(Selector::Quant("Q4_1".into()))
        );
        assert_eq!(
            split_selector("org/m:x.GGUF"),
            (("org/m"), Some(Selector::File("x.GGUF".into())))
        );
        assert_eq!(split_selector("org/m"), ("org/m", None));
    }

    #[test]
    fn several_ggufs_without_tag_is_an_error_listing_them() {
        let c = caches(true);
        lem_repo(
            &c,
            "org/m",
            &["m.Q4_1.gguf", "m.Q8_0.gguf", "mmproj-m-f16.gguf"],
        );
        let e = resolve_model("org/m", &c.opts).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, HubError::AmbiguousGguf { .. }), "{msg}");
        assert!(
            msg.contains("m.Q4_1.gguf") && msg.contains("m.Q8_0.gguf"),
            "{msg}"
        );
        assert!(
            !msg.contains("mmproj"),
            "a projector is not a candidate: {msg}"
        );
        assert!(msg.contains("`org/m:Q4_1`"), "{msg}");
    }

    #[test]
    fn offline_not_found_lists_every_place_and_how_to_fetch() {
        let c = caches(true);
        let e = resolve_model("org/missing:Q4_1", &c.opts).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, HubError::NotFound { offline: true, .. }),
            "{msg}"
        );
        assert!(msg.contains("not found (offline)"), "{msg}");
        assert!(
            msg.contains("local path org/missing: does not exist"),
            "{msg}"
        );
        let lem = c.opts.lem_model_dir.join("org--missing");
        assert!(
            msg.contains(&format!("lem model dir {}", lem.display())),
            "{msg}"
        );
        let hf_ref = c.opts.hf_cache_dir.join("models--org--missing/refs/main");
        assert!(msg.contains(&hf_ref.display().to_string()), "{msg}");
        assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
        assert!(msg.contains("unset HF_HUB_OFFLINE"), "{msg}");
        // A dir that exists but lacks the tag is reported as such.
        lem_repo(&c, "org/missing", &["m.Q8_0.gguf"]);
        let msg = resolve_model("org/missing:Q4_1", &c.opts)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no GGUF file matching `Q4_1` (has m.Q8_0.gguf)"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_path_that_is_no_repo_id_is_not_downloaded() {
        // Online, but `./x/y/z.gguf` cannot be a repo id: fail without touching the network.
        let c = caches(false);
        let e = resolve_model("./x/y/z.gguf", &c.opts).unwrap_err();
        assert!(
            matches!(e, HubError::NotFound { offline: false, .. }),
            "{e}"
        );
        assert!(is_repo_id("gsm8k") && is_repo_id("org/Na-me_1.5"));
        assert!(!is_repo_id("a/b/c") && !is_repo_id("/abs") && !is_repo_id("a/../b"));
    }

    #[test]
    fn download_plan_prefers_safetensors_or_single_gguf() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plain_req = Request {
            name: "org/m",
            base: "org/m",
            selector: None,
        };
        let q = Selector::Quant("q4_1".into());
        let pinned_req = Request {
            selector: Some(&q),
            ..plain_req
        };
        let plain = names(&[
            "README.md",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "onnx/model.onnx",
            "m.Q4_1.gguf",
        ]);
        let p = plan_download(&plain_req, &plain).unwrap();
        assert!(!p.gguf);
        assert_eq!(p.weights, names(&["model.safetensors"]));
        assert_eq!(p.extras, names(&["config.json", "tokenizer.json"]));
        // A pin selects the GGUF even in a plain repo.
        let p = plan_download(&pinned_req, &plain).unwrap();
        assert!(p.gguf);
        assert_eq!(p.weights, names(&["m.Q4_1.gguf"]));

        let gguf_only = names(&["README.md", "m.Q4_1.gguf"]);
        let p = plan_download(&plain_req, &gguf_only).unwrap();
        assert_eq!((p.gguf, p.weights), (true, names(&["m.Q4_1.gguf"])));
        let two = names(&["a.Q4_1.gguf", "a.Q8_0.gguf"]);
        assert!(matches!(
            plan_download(&plain_req, &two),
            Err(HubError::AmbiguousGguf { .. })
        ));
        let e = plan_download(&pinned_req, &names(&["a.Q8_0.gguf"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("no GGUF file matching `q4_1`; it has a.Q8_0.gguf"),
            "{e}"
        );
        let e = plan_download(&plain_req, &names(&["README.md"])).unwrap_err();
        assert!(e.to_string().contains("neither config.json"), "{e}");
    }

    #[test]
    fn list_cached_models_reports_both_caches() {
        let c = caches(true);
        lem_repo(&c, "HuggingFaceTB/SmolLM2-135M-Instruct", &["s.Q4_1.gguf"]);
        let snap = hf_repo(&c, "org/plain", &["config.json", "a.safetensors"]);
        touch(&snap.join("b.safetensors"), 5);
        let list = list_cached_models(&c.opts);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].repo_id, "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!((list[0].format, list[0].from), ("gguf", "lem-cache"));
        assert_eq!(list[0].size_bytes, 10);
        assert_eq!(list[1].repo_id, "org/plain");
        assert_eq!((list[1].format, list[1].from), ("safetensors", "hf-cache"));
        assert_eq!(list[1].size_bytes, 15);
        assert_eq!(list[1].path, snap);
    }
}
