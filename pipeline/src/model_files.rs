//! Loads the embedding model from its folder: the pipeline's job, so that the
//! operators crate only ever sees bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ideaflow_operators::embed::{Embedder, EmbedderOptions, ModelFiles};

use crate::config::ModelConfig;

fn read_model_files(dir: &Path) -> Result<ModelFiles> {
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

fn embedder_options(config: &ModelConfig) -> Result<EmbedderOptions> {
    let blas = crate::blas::load(config)?;
    Ok(EmbedderOptions {
        max_batch: config.max_batch,
        max_batch_tokens: config.max_batch_tokens,
        cache_capacity: config.cache_capacity,
        precision: crate::blas::precision(config, blas.as_ref())?,
        blas,
    })
}

/// Where embedders come from: the model folder and the options to load it
/// with. Each [`ModelSource::load`] reads the files again rather than the run
/// holding their bytes (~90 MB) for a load that may never come: workers load
/// their embedder on first need, and streams that carry vectors never need it.
#[derive(Clone)]
pub struct ModelSource {
    dir: PathBuf,
    options: EmbedderOptions,
}

impl ModelSource {
    /// Loads the model once, so that a missing or broken model fails here,
    /// before any worker starts; returns that embedder too.
    pub fn open(config: &ModelConfig) -> Result<(ModelSource, Embedder)> {
        let source = ModelSource {
            dir: config.dir.clone(),
            options: embedder_options(config)?,
        };
        let embedder = source.load()?;
        Ok((source, embedder))
    }

    pub fn load(&self) -> Result<Embedder> {
        let files = read_model_files(&self.dir)?;
        Embedder::load(&files, self.options.clone()).with_context(|| {
            format!(
                "the embedding model in {} does not load: run scripts/setup.sh to reinstall it",
                self.dir.display()
            )
        })
    }
}

/// An embedder loaded on first use.
pub struct LazyEmbedder {
    source: ModelSource,
    embedder: Option<Embedder>,
}

impl LazyEmbedder {
    pub fn new(source: ModelSource) -> Self {
        LazyEmbedder {
            source,
            embedder: None,
        }
    }

    pub fn get(&mut self) -> Result<&mut Embedder> {
        let embedder = match self.embedder.take() {
            Some(embedder) => embedder,
            None => self.source.load()?,
        };
        Ok(self.embedder.insert(embedder))
    }
}

/// The configured model, loaded (for commands that embed once, up front).
pub fn load_embedder(config: &ModelConfig) -> Result<Embedder> {
    Ok(ModelSource::open(config)?.1)
}
