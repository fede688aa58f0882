//! Checks before anything is stored that a config can run here.

use super::notes::refuse_unsupported;
use super::{RunContext, RunError};
use crate::engine::Engine;
use crate::hub::{self, ModelFormat};
use crate::prompts;
use lem_common::config::{EngineKind, ExperimentConfig, PromptSource};
use lem_common::shipped_prompt;
use std::path::PathBuf;

/// Checks before anything is stored that `cfg` can run here: nothing it asks for is
/// refused, a prompt file opens, and its model resolves, opens and has an architecture
/// the engine runs.
/// Reads headers only; the weights load when the job runs.
pub fn preflight(cfg: &ExperimentConfig, ctx: &RunContext) -> Result<(), RunError> {
    refuse_unsupported(cfg)?;
    if cfg.engine == EngineKind::Openai {
        // The server must be up; the model is read for its tokenizer, not its weights.
        crate::openai::job::preflight(cfg, &ctx.env)?;
    }
    // A prompt file that cannot be opened is the user's input too, found before a record
    // exists; its content is checked when the prompts load.
    if let Some(PromptSource::File { path, sha256, .. }) = &cfg.prompt_source {
        let file = PathBuf::from(path);
        if let Err(source) = std::fs::File::open(&file) {
            return Err(RunError::Prompts(prompts::PromptError::Io {
                path: file,
                source,
            }));
        }
        // A pinned (or shipped) hash: the run uses exactly those bytes or none.
        if let Some(expected) = sha256 {
            let bytes = std::fs::read(&file).map_err(|source| {
                RunError::Prompts(prompts::PromptError::Io {
                    path: file.clone(),
                    source,
                })
            })?;
            shipped_prompt::check_hash(path, expected, &bytes)
                .map_err(|e| RunError::Prompts(e.into()))?;
        }
    }
    let model = cfg.model_name.as_str();
    let resolved = hub::resolve_model(model, &ctx.resolve).map_err(|source| RunError::Model {
        model: model.to_string(),
        source: Box::new(source),
    })?;
    match &resolved.format {
        ModelFormat::Gguf { file } => Engine::check_gguf(file),
        ModelFormat::Safetensors { dir } => Engine::check_safetensors(dir),
    }
    .map_err(|source| RunError::Engine {
        model: model.to_string(),
        source,
    })?;
    Ok(())
}
