//! Loads the embedding model from its folder: the pipeline's job, so that the
//! operators crate only ever sees bytes.

use std::path::Path;

use anyhow::{Context, Result};
use ideaflow_operators::embed::{Embedder, EmbedderOptions, ModelFiles};

use crate::config::ModelConfig;

pub fn read_model_files(dir: &Path) -> Result<ModelFiles> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {}: run scripts/setup.sh to install the model, or set model.dir / IDEAFLOW_MODEL_DIR",
                path.display()
            )
        })
    };
    Ok(ModelFiles {
        config_json: read("config.json")?,
        tokenizer_json: read("tokenizer.json")?,
        weights_safetensors: read("model.safetensors")?,
    })
}

pub fn embedder_options(config: &ModelConfig) -> Result<EmbedderOptions> {
    Ok(EmbedderOptions {
        max_batch: config.max_batch,
        max_batch_tokens: config.max_batch_tokens,
        cache_capacity: config.cache_capacity,
        blas: crate::blas::load(config)?,
    })
}

pub fn load_embedder(config: &ModelConfig) -> Result<Embedder> {
    let files = read_model_files(&config.dir)?;
    Ok(Embedder::load(&files, embedder_options(config)?)?)
}
