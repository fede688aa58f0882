//! Hugging Face datasets, read through the hub cache layout
//! (`<hf>/datasets--<org>--<name>/snapshots/<commit>/...`) and downloaded with hf-hub
//! when missing and the hub may be asked.
//!
//! A split's files are found by name the way the `datasets` library infers them: under the
//! subset's folder (`<subset>/...`, `data/<subset>/...`), files or folders naming the split
//! (`train-00000-of-00001.parquet`, `data/train.jsonl`, `default/train/0000.parquet` as on
//! the `refs/convert/parquet` branch); for `train`, files naming no split at all (ShareGPT's
//! single JSON). Several formats for one split: parquet, then JSONL, JSON, CSV, text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};
use lem_common::config::datasets::{dataset_alias, DATASET_ALIASES};

use super::files::{self, format_of};
use super::{Collector, PromptContext, PromptError};
use crate::hub;

/// The parquet conversion the hub makes of every dataset (`revision="refs/convert/parquet"`).
const CONVERT_REVISION: &str = "refs/convert/parquet";

/// Split names and the spellings that mean them in file names.
const SPLIT_SYNONYMS: &[&[&str]] = &[
    &["train", "training"],
    &["validation", "valid", "val", "dev"],
    &["test", "testing", "eval", "evaluation"],
];

/// JSON files in dataset repos that describe the data rather than hold it.
const METADATA_FILES: &[&str] = &[
    "dataset_infos.json",
    "dataset_info.json",
    "dataset_dict.json",
    "state.json",
];

/// What to read, after alias expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatasetRequest {
    /// As given (an alias or a repo id).
    pub asked: String,
    pub repo: String,
    pub split: String,
    pub subset: Option<String>,
    pub column: Option<String>,
}

impl DatasetRequest {
    /// Fields given explicitly win over the alias's.
    pub(crate) fn new(
        dataset: &str,
        split: Option<&str>,
        subset: Option<&str>,
        column: Option<&str>,
    ) -> Self {
        let alias = dataset_alias(dataset);
        Self {
            asked: dataset.to_string(),
            repo: alias.map_or(dataset, |a| a.repo).to_string(),
            split: split
                .or(alias.map(|a| a.split))
                .unwrap_or("train")
                .to_string(),
            subset: subset.or(alias.and_then(|a| a.subset)).map(str::to_string),
            column: column.or(alias.map(|a| a.column)).map(str::to_string),
        }
    }

    fn describe(&self, column: Option<&str>) -> String {
        let mut s = format!("huggingface {}", self.repo);
        if let Some(sub) = &self.subset {
            s.push_str(&format!(" subset {sub}"));
        }
        s.push_str(&format!(" split {}", self.split));
        if let Some(c) = column {
            s.push_str(&format!(" column {c}"));
        }
        s
    }
}

/// Why no files were selected in one file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SelectError {
    NoDataFiles,
    NoSubset {
        subset: String,
        available: Vec<String>,
    },
    AmbiguousSubset {
        available: Vec<String>,
    },
    NoSplit {
        split: String,
        files: Vec<String>,
    },
}

fn short_list(items: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

impl std::fmt::Display for SelectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectError::NoDataFiles => {
                f.write_str("no data files (.parquet, .jsonl, .json, .csv, .txt)")
            }
            SelectError::NoSubset { subset, available } => write!(
                f,
                "no subset \"{subset}\" (subsets: {})",
                short_list(available)
            ),
            SelectError::AmbiguousSubset { available } => write!(
                f,
                "several subsets ({}); set `subset` to pick one",
                short_list(available)
            ),
            SelectError::NoSplit { split, files } => write!(
                f,
                "no files for split \"{split}\" (data files: {})",
                short_list(files)
            ),
        }
    }
}

fn is_data_file(rel: &str) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    format_of(base).is_some()
        && !METADATA_FILES.contains(&base)
        && !rel.split('/').any(|c| c.starts_with('.'))
}

fn split_words(split: &str) -> Vec<&str> {
    SPLIT_SYNONYMS
        .iter()
        .find(|words| words.contains(&split))
        .map_or_else(|| vec![split], |words| words.to_vec())
}

/// `word` occurs in `hay` between non-alphanumeric characters. `strict` also refuses a `_`
/// after it, so `train` does not claim `train_sft-*.parquet` when exact names exist.
fn mentions(hay: &str, word: &str, strict: bool) -> bool {
    let hay = hay.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    hay.match_indices(&word).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + word.len()..].chars().next();
        before.is_none_or(|c| !c.is_ascii_alphanumeric())
            && after.is_none_or(|c| !(c.is_ascii_alphanumeric() || (strict && c == '_')))
    })
}

fn is_split_word(s: &str, split: &str) -> bool {
    s.eq_ignore_ascii_case(split)
        || SPLIT_SYNONYMS
            .iter()
            .flat_map(|w| w.iter())
            .any(|w| s.eq_ignore_ascii_case(w))
}

/// The subset a file belongs to (its first folder below an optional `data/`, unless that
/// folder names a split), and the rest of its path.
fn subset_of<'a>(rel: &'a str, split: &str) -> (&'a str, &'a str) {
    let rest = rel.strip_prefix("data/").unwrap_or(rel);
    match rest.split_once('/') {
        Some((dir, tail)) if !is_split_word(dir, split) => (dir, tail),
        _ => ("", rest),
    }
}

/// The files holding `split` of `subset` among `files` (paths relative to the repo root).
pub(crate) fn select_split_files(
    files: &[String],
    subset: Option<&str>,
    split: &str,
) -> Result<Vec<String>, SelectError> {
    let mut groups: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for rel in files.iter().filter(|f| is_data_file(f)) {
        let (group, rest) = subset_of(rel, split);
        groups.entry(group).or_default().push((rel, rest));
    }
    if groups.is_empty() {
        return Err(SelectError::NoDataFiles);
    }
    let names = || -> Vec<String> {
        groups
            .keys()
            .map(|g| if g.is_empty() { "(none)" } else { g }.to_string())
            .collect()
    };
    let group = match subset {
        Some(s) if groups.contains_key(s) => s,
        // `default` is the name of the only subset of a dataset without folders.
        Some("default") if groups.contains_key("") => "",
        Some(s) => {
            return Err(SelectError::NoSubset {
                subset: s.to_string(),
                available: names(),
            })
        }
        None if groups.contains_key("") => "",
        None if groups.len() == 1 => groups.keys().next().copied().unwrap_or_default(),
        None if groups.contains_key("default") => "default",
        None => {
            return Err(SelectError::AmbiguousSubset { available: names() });
        }
    };
    let members = &groups[group];
    let words = split_words(split);
    let naming = |strict: bool| -> Vec<&str> {
        members
            .iter()
            .filter(|(_, rest)| words.iter().any(|w| mentions(rest, w, strict)))
            .map(|(rel, _)| *rel)
            .collect()
    };
    let mut chosen = naming(true);
    if chosen.is_empty() {
        chosen = naming(false);
    }
    if chosen.is_empty() && words.contains(&"train") {
        // Files that name no split are the train split.
        chosen = members
            .iter()
            .filter(|(_, rest)| {
                !SPLIT_SYNONYMS
                    .iter()
                    .flat_map(|w| w.iter())
                    .any(|w| mentions(rest, w, false))
            })
            .map(|(rel, _)| *rel)
            .collect();
    }
    let Some(best) = chosen.iter().filter_map(|f| format_of(f)).min() else {
        return Err(SelectError::NoSplit {
            split: split.to_string(),
            files: members.iter().map(|(rel, _)| rel.to_string()).collect(),
        });
    };
    let mut out: Vec<String> = chosen
        .into_iter()
        .filter(|f| format_of(f) == Some(best))
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
}

/// Every file below `dir`, as `/`-separated relative paths (snapshots link into blobs/).
fn list_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 6 {
                walk(root, &path, depth + 1, out);
            } else if path.is_file() {
                if let Ok(rel) = path.strip_prefix(root) {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(parts.join("/"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out);
    out.sort();
    out
}

/// `train-00000-of-00003.parquet` without its siblings: an incomplete cache copy.
fn missing_shards(files: &[String]) -> Option<String> {
    let mut by_total: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for f in files {
        let base = f.rsplit('/').next().unwrap_or(f);
        let Some((head, tail)) = base.split_once("-of-") else {
            continue;
        };
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let prefix = head.trim_end_matches(|c: char| c.is_ascii_digit());
        if let Ok(total) = digits.parse::<usize>() {
            *by_total.entry((prefix.to_string(), total)).or_default() += 1;
        }
    }
    by_total
        .into_iter()
        .find(|((_, total), have)| have < total)
        .map(|((prefix, total), have)| {
            format!("only {have} of {total} `{prefix}*` shards are in the cache; reading those")
        })
}

/// Reads the prompts of `req` into `out`. Returns a description of the source and warnings.
pub(crate) fn read_dataset(
    req: &DatasetRequest,
    ctx: &PromptContext<'_>,
    out: &mut Collector,
) -> Result<(String, Vec<String>), PromptError> {
    if !hub::is_repo_id(&req.repo) {
        let aliases: Vec<&str> = DATASET_ALIASES.iter().map(|a| a.alias).collect();
        return Err(PromptError::Dataset {
            dataset: req.asked.clone(),
            message: format!(
                "neither a built-in alias ({}) nor a Hugging Face dataset id (`org/name`)",
                aliases.join(", ")
            ),
        });
    }
    let mut looked = Vec::new();
    let mut warnings = Vec::new();
    for revision in ["main", CONVERT_REVISION] {
        match hub::hf_snapshot(&ctx.hf_cache_dir, RepoType::Dataset, &req.repo, revision) {
            Ok(snapshot) => {
                let listed = list_files(&snapshot);
                match select_split_files(&listed, req.subset.as_deref(), &req.split) {
                    Ok(selected) => {
                        warnings.extend(missing_shards(&selected));
                        let paths: Vec<PathBuf> =
                            selected.iter().map(|f| snapshot.join(f)).collect();
                        let from = format!("hf-cache {revision}");
                        return read_selected(req, &paths, &from, out).map(|desc| (desc, warnings));
                    }
                    Err(e @ SelectError::AmbiguousSubset { .. }) => {
                        return Err(PromptError::Dataset {
                            dataset: req.asked.clone(),
                            message: format!("{}: {e}", snapshot.display()),
                        })
                    }
                    Err(e) => {
                        looked.push(format!("Hugging Face cache {}: {e}", snapshot.display()))
                    }
                }
            }
            // The conversion branch only matters when the repo is cached at all.
            Err(_)
                if revision == CONVERT_REVISION
                    && looked.iter().any(|l| l.ends_with("does not exist")) => {}
            Err(why) => looked.push(why),
        }
    }
    if ctx.offline {
        return Err(PromptError::DatasetNotFound {
            dataset: req.asked.clone(),
            offline: true,
            looked,
        });
    }
    let paths = download(req, ctx, &looked)?;
    read_selected(req, &paths, "hf-download", out).map(|desc| (desc, warnings))
}

fn read_selected(
    req: &DatasetRequest,
    paths: &[PathBuf],
    from: &str,
    out: &mut Collector,
) -> Result<String, PromptError> {
    let mut column = None;
    for path in paths {
        if out.full() {
            break;
        }
        let used = files::read_file(path, req.column.as_deref(), out)?;
        column = column.or(used);
    }
    Ok(format!(
        "{} ({from}: {} file{})",
        req.describe(column.as_deref().or(req.column.as_deref())),
        paths.len(),
        if paths.len() == 1 { "" } else { "s" }
    ))
}

/// Lists the repo on the hub (main, then the parquet conversion) and fetches the split's
/// files into the Hugging Face cache, where the next run finds them offline.
fn download(
    req: &DatasetRequest,
    ctx: &PromptContext<'_>,
    looked: &[String],
) -> Result<Vec<PathBuf>, PromptError> {
    let fail = |what: &str, e| PromptError::Download {
        dataset: req.asked.clone(),
        what: what.to_string(),
        looked: looked.to_vec(),
        source: Box::new(e),
    };
    let api = hub::api_builder(&ctx.hf_cache_dir, &ctx.hub_access)
        .build()
        .map_err(|e| fail("the file list", e))?;
    let mut problems = Vec::new();
    for revision in ["main", CONVERT_REVISION] {
        let repo = api.repo(Repo::with_revision(
            req.repo.clone(),
            RepoType::Dataset,
            revision.to_string(),
        ));
        let info = match repo.info() {
            Ok(info) => info,
            Err(e) if revision == "main" => return Err(fail("the file list", e)),
            // Not every dataset has a parquet conversion.
            Err(_) => break,
        };
        let listed: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        match select_split_files(&listed, req.subset.as_deref(), &req.split) {
            Ok(selected) => {
                tracing::info!(dataset = %req.repo, revision, files = ?selected, "downloading dataset files");
                return selected
                    .iter()
                    .map(|f| repo.get(f).map_err(|e| fail(f, e)))
                    .collect();
            }
            Err(e @ SelectError::AmbiguousSubset { .. }) => {
                return Err(PromptError::Dataset {
                    dataset: req.asked.clone(),
                    message: format!("on the Hugging Face hub: {e}"),
                })
            }
            Err(e) => problems.push(format!("{}@{revision} on the hub: {e}", req.repo)),
        }
    }
    Err(PromptError::Dataset {
        dataset: req.asked.clone(),
        message: problems.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::files::tests::write_parquet;
    use crate::prompts::{load_prompts, PromptSpec, Sampling};
    use std::fs;

    const HASH: &str = "aaaabbbbccccddddeeeeffff0000111122223333";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A dataset in the HF cache: refs/main -> snapshots/HASH. Returns the snapshot.
    fn cached_dataset(hf: &Path, repo: &str) -> PathBuf {
        let dir = hf.join(hub::hf_repo_folder(RepoType::Dataset, repo));
        fs::create_dir_all(dir.join("refs")).unwrap();
        fs::write(dir.join("refs/main"), HASH).unwrap();
        let snap = dir.join("snapshots").join(HASH);
        fs::create_dir_all(&snap).unwrap();
        fs::write(snap.join("README.md"), "---\n---\n").unwrap();
        snap
    }

    fn put(path: PathBuf, body: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    fn whitespace(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn load(
        hf: &Path,
        dataset: &str,
        split: Option<&str>,
        subset: Option<&str>,
        column: Option<&str>,
        sampling: &Sampling,
        count: Option<u32>,
    ) -> Result<crate::prompts::LoadedPrompts, PromptError> {
        let ctx = PromptContext {
            hf_cache_dir: hf.to_path_buf(),
            offline: true,
            hub_access: Default::default(),
            count_tokens: &whitespace,
        };
        let spec = PromptSpec::HuggingFace {
            dataset: dataset.into(),
            split: split.map(Into::into),
            subset: subset.map(Into::into),
            column: column.map(Into::into),
        };
        load_prompts(&spec, sampling, count, &ctx)
    }

    #[test]
    fn alias_expansion_keeps_explicit_fields() {
        let r = DatasetRequest::new("gsm8k", None, None, None);
        assert_eq!(
            (
                r.repo.as_str(),
                r.split.as_str(),
                r.subset.as_deref(),
                r.column.as_deref()
            ),
            ("gsm8k", "train", Some("main"), Some("question"))
        );
        let r = DatasetRequest::new("mmlu", Some("validation"), None, Some("answer"));
        assert_eq!(
            (r.repo.as_str(), r.split.as_str()),
            ("cais/mmlu", "validation")
        );
        assert_eq!(
            (r.subset.as_deref(), r.column.as_deref()),
            (Some("all"), Some("answer"))
        );
        let r = DatasetRequest::new("org/custom", None, None, None);
        assert_eq!((r.repo.as_str(), r.split.as_str()), ("org/custom", "train"));
        assert_eq!((r.subset, r.column), (None, None));
    }

    #[test]
    fn split_file_selection_follows_hub_layouts() {
        let sel = |files: &[&str], subset, split| select_split_files(&names(files), subset, split);
        // alpaca: data/<split>-*.parquet
        let alpaca = ["README.md", "data/train-00000-of-00001-a09b74b3.parquet"];
        assert_eq!(sel(&alpaca, None, "train").unwrap(), names(&alpaca[1..]));
        // gsm8k: <subset>/<split>-*.parquet with two subsets
        let gsm = [
            "main/train-00000-of-00001.parquet",
            "main/test-00000-of-00001.parquet",
            "socratic/train-00000-of-00001.parquet",
        ];
        assert_eq!(sel(&gsm, Some("main"), "test").unwrap(), names(&gsm[1..2]));
        assert!(matches!(
            sel(&gsm, None, "train"),
            Err(SelectError::AmbiguousSubset { .. })
        ));
        let e = sel(&gsm, Some("all"), "train").unwrap_err().to_string();
        assert_eq!(e, "no subset \"all\" (subsets: main, socratic)");
        // refs/convert/parquet: <subset>/<split>/NNNN.parquet
        let conv = [
            "default/train/0000.parquet",
            "default/train/0001.parquet",
            "default/validation/0000.parquet",
        ];
        assert_eq!(sel(&conv, None, "train").unwrap(), names(&conv[..2]));
        assert_eq!(
            sel(&conv, Some("default"), "valid").unwrap(),
            names(&conv[2..])
        );
        // split folders are not subsets; synonyms; parquet preferred over JSON.
        let dirs = ["train/a.jsonl", "dev/a.jsonl", "train/a.parquet"];
        assert_eq!(
            sel(&dirs, None, "validation").unwrap(),
            names(&["dev/a.jsonl"])
        );
        assert_eq!(
            sel(&dirs, None, "train").unwrap(),
            names(&["train/a.parquet"])
        );
        // exact split names beat prefixes; train_sft is its own split.
        let sft = [
            "data/train_sft-0.parquet",
            "data/train-0.parquet",
            "data/test_gen-0.parquet",
        ];
        assert_eq!(
            sel(&sft, None, "train").unwrap(),
            names(&["data/train-0.parquet"])
        );
        assert_eq!(
            sel(&sft, None, "train_sft").unwrap(),
            names(&["data/train_sft-0.parquet"])
        );
        // ShareGPT: JSON naming no split is the train split; metadata JSON is not data.
        let share = [
            "ShareGPT_V3_unfiltered_cleaned_split.json",
            "dataset_infos.json",
            "HTML_cleaned_raw_dataset/sg_90k_part1.html",
        ];
        assert_eq!(sel(&share, None, "train").unwrap(), names(&share[..1]));
        let e = sel(&share, None, "test").unwrap_err().to_string();
        assert!(
            e.starts_with("no files for split \"test\" (data files: ShareGPT_V3"),
            "{e}"
        );
        assert_eq!(
            sel(&["README.md"], None, "train"),
            Err(SelectError::NoDataFiles)
        );
    }

    #[test]
    fn alpaca_alias_reads_parquet_from_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let snap = cached_dataset(&hf, "tatsu-lab/alpaca");
        write_parquet(
            &snap.join("data/train-00000-of-00001-a09b74b3ef9c3b56.parquet"),
            &[
                Some("Give three tips."),
                Some("What is 2+2?"),
                None,
                Some("Name a colour."),
            ],
        );
        let got = load(&hf, "alpaca", None, None, None, &Sampling::default(), None).unwrap();
        assert_eq!(
            got.prompts,
            ["Give three tips.", "What is 2+2?", "Name a colour."]
        );
        assert_eq!(
            got.source,
            "huggingface tatsu-lab/alpaca split train column instruction (hf-cache main: 1 file)"
        );
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        // The int column is refused with the file and row named.
        let e = load(
            &hf,
            "alpaca",
            None,
            None,
            Some("id"),
            &Sampling::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "train-00000-of-00001-a09b74b3ef9c3b56.parquet, row 1: column \"id\" is a number"
            ),
            "{e}"
        );
    }

    #[test]
    fn subsets_splits_jsonl_csv_and_auto_columns() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let snap = cached_dataset(&hf, "gsm8k");
        put(snap.join("main/train.jsonl"), "{\"question\": \"q1\", \"answer\": \"a\"}\n{\"question\": \"q2\", \"answer\": \"b\"}\n");
        put(
            snap.join("main/test.jsonl"),
            "{\"question\": \"t1\", \"answer\": \"a\"}\n",
        );
        put(
            snap.join("socratic/train.jsonl"),
            "{\"question\": \"s1\", \"answer\": \"a\"}\n",
        );
        let s = Sampling::default();
        assert_eq!(
            load(&hf, "gsm8k", None, None, None, &s, None)
                .unwrap()
                .prompts,
            ["q1", "q2"]
        );
        assert_eq!(
            load(&hf, "gsm8k", Some("test"), None, None, &s, None)
                .unwrap()
                .prompts,
            ["t1"]
        );
        let got = load(
            &hf,
            "gsm8k",
            None,
            Some("socratic"),
            Some("answer"),
            &s,
            None,
        )
        .unwrap();
        assert_eq!(got.prompts, ["a"]);
        // A repo id without alias: CSV, column auto-detected (`prompt`).
        let snap = cached_dataset(&hf, "org/csvset");
        put(snap.join("data/train.csv"), "id,prompt\n1,hello\n2,world\n");
        put(snap.join("data/validation.csv"), "id,prompt\n1,val\n");
        let got = load(&hf, "org/csvset", None, None, None, &s, None).unwrap();
        assert_eq!(got.prompts, ["hello", "world"]);
        assert!(got.source.contains("column prompt"), "{}", got.source);
        assert_eq!(
            load(&hf, "org/csvset", Some("validation"), None, None, &s, None)
                .unwrap()
                .prompts,
            ["val"]
        );
        let e = load(&hf, "org/csvset", Some("test"), None, None, &s, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no files for split \"test\""), "{e}");
    }

    #[test]
    fn sharegpt_alias_takes_the_first_human_turn() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let snap = cached_dataset(&hf, "anon8231489123/ShareGPT_Vicuna_unfiltered");
        put(
            snap.join("ShareGPT_V3_unfiltered_cleaned_split.json"),
            r#"[{"id": "x1", "conversations": [{"from": "human", "value": "Plan a trip."}, {"from": "gpt", "value": "Sure."}]},
                {"id": "x2", "conversations": [{"from": "gpt", "value": "orphan"}]},
                {"id": "x3", "conversations": [{"from": "human", "value": "Tell a joke."}]}]"#,
        );
        let got = load(
            &hf,
            "sharegpt",
            None,
            None,
            None,
            &Sampling::default(),
            None,
        )
        .unwrap();
        assert_eq!(got.prompts, ["Plan a trip.", "Tell a joke."]);
    }

    #[test]
    fn convert_branch_and_shard_warning() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let snap = cached_dataset(&hf, "org/big");
        // main has only a loading script; the parquet conversion has the data.
        put(snap.join("big.py"), "# script");
        let dir = hf.join("datasets--org--big");
        let conv_hash = "9999999999999999999999999999999999999999";
        put(dir.join("refs/refs/convert/parquet"), conv_hash);
        write_parquet(
            &dir.join("snapshots")
                .join(conv_hash)
                .join("default/train/0000.parquet"),
            &[Some("converted")],
        );
        let got = load(&hf, "org/big", None, None, None, &Sampling::default(), None).unwrap();
        assert_eq!(got.prompts, ["converted"]);
        assert!(
            got.source.contains("hf-cache refs/convert/parquet"),
            "{}",
            got.source
        );

        let snap = cached_dataset(&hf, "org/sharded");
        write_parquet(
            &snap.join("data/train-00000-of-00002.parquet"),
            &[Some("p")],
        );
        let got = load(
            &hf,
            "org/sharded",
            None,
            None,
            None,
            &Sampling::default(),
            None,
        )
        .unwrap();
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert!(
            got.warnings[0].contains("only 1 of 2"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn sampling_is_deterministic_per_seed() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let snap = cached_dataset(&hf, "org/many");
        let rows: Vec<String> = (0..50).map(|i| format!("prompt {i}")).collect();
        let refs: Vec<Option<&str>> = rows.iter().map(|r| Some(r.as_str())).collect();
        write_parquet(&snap.join("data/train-0.parquet"), &refs);
        let s = |seed| Sampling {
            sample_size: Some(20),
            shuffle: true,
            seed,
        };
        let a = load(&hf, "org/many", None, None, None, &s(42), Some(10))
            .unwrap()
            .prompts;
        let b = load(&hf, "org/many", None, None, None, &s(42), Some(10))
            .unwrap()
            .prompts;
        let c = load(&hf, "org/many", None, None, None, &s(43), Some(10))
            .unwrap()
            .prompts;
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
        assert_ne!(a, c);
        assert_ne!(a, rows[..10], "shuffled");
        let plain = Sampling {
            sample_size: Some(3),
            ..Sampling::default()
        };
        let p = load(&hf, "org/many", None, None, None, &plain, None)
            .unwrap()
            .prompts;
        assert_eq!(p, rows[..3]);
    }

    #[test]
    fn not_found_offline_lists_where_it_looked() {
        let d = tempfile::tempdir().unwrap();
        let hf = d.path().join("hub");
        let e = load(&hf, "mmlu", None, None, None, &Sampling::default(), None).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, PromptError::DatasetNotFound { offline: true, .. }),
            "{msg}"
        );
        assert!(
            msg.starts_with("dataset `mmlu` not found (offline). Looked in:"),
            "{msg}"
        );
        let refs = hf.join("datasets--cais--mmlu/refs/main");
        assert!(
            msg.contains(&format!(
                "Hugging Face cache {}: does not exist",
                refs.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("Unset HF_HUB_OFFLINE"), "{msg}");
        // Cached, but the subset is missing: the snapshot and the subsets are named.
        let snap = cached_dataset(&hf, "cais/mmlu");
        put(
            snap.join("abstract_algebra/test.jsonl"),
            "{\"question\": \"q\"}\n",
        );
        let msg = load(&hf, "mmlu", None, None, None, &Sampling::default(), None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&snap.display().to_string()), "{msg}");
        assert!(
            msg.contains("no subset \"all\" (subsets: abstract_algebra)"),
            "{msg}"
        );
        let e = load(
            &hf,
            "not a/valid/name",
            None,
            None,
            None,
            &Sampling::default(),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("neither a built-in alias (alpaca, gsm8k, mmlu, sharegpt)"),
            "{e}"
        );
    }
}
