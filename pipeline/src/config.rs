//! The one TOML configuration file. Every key has a default (documented in
//! `config/ideaflow.toml` and `config/README.md`); URLs and paths can be
//! overridden from the environment so secrets never live in the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ideaflow_operators::idea_state::{DedupeParams, WindowParams};
use ideaflow_operators::score::ScoringParams;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}; pass --config with an existing file (see config/ideaflow.toml)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}; every key is documented in config/README.md")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key} is invalid: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub model: ModelConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub classifier: ClassifierConfig,
    /// How the pipeline classifies ideas.
    pub classify: ClassifyConfig,
    /// Category (niche) anchors: name = descriptive text.
    pub categories: BTreeMap<String, String>,
    pub api: ApiConfig,
    pub dedupe: DedupeParams,
    pub windows: WindowParams,
    pub scoring: ScoringParams,
    pub calendar: CalendarConfig,
    /// The marketplace feedback loop: windows, A/B tests, allocations, weight learning.
    pub feedback: ideaflow_operators::feedback::FeedbackParams,
}

/// How ideas get their anchor class and niche category.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    /// `calibrated` (default): classes and categories built from their
    /// texts and labeled examples, calibrated; `seed`: seed 000's anchors
    /// with its threshold, and the nearest category description.
    pub mode: ClassifyMode,
}

/// Seed 000's algorithm, or the calibrated classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassifyMode {
    Seed,
    #[default]
    Calibrated,
}

/// The HTTP API and dashboard `ideaflow run` serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address; empty to serve nothing.
    pub listen: String,
    /// Largest `limit` a list endpoint accepts.
    pub max_limit: usize,
    /// Longest search query, in characters (longer: 422).
    pub max_query_chars: usize,
    /// Bearer tokens allowed to post to the webhook (`POST /api/v1/signals`);
    /// none turns it off. Env: IDEAFLOW_WEBHOOK_TOKENS (comma-separated).
    pub webhook_tokens: Vec<String>,
    /// The bus input accepted records are appended to ("": the first bus input).
    pub webhook_bus: String,
    /// Records a token may post per second on average.
    pub webhook_rate: f64,
    /// Records a token may post in one burst.
    pub webhook_burst: u64,
    /// Largest webhook request body, in bytes.
    pub webhook_max_body_bytes: usize,
    /// Bus records read and not committed past which the webhook answers 503.
    pub webhook_max_lag: u64,
    /// A request's headers not read within this many seconds: the
    /// connection is closed (also the longest an idle keep-alive
    /// connection stays open).
    pub header_read_timeout_secs: u64,
    /// Origins whose pages may call the API from a browser (CORS), e.g.
    /// `https://dash.example.com`; `*` for any; none by default.
    pub cors_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8088".into(),
            max_limit: 500,
            max_query_chars: 2000,
            webhook_tokens: Vec::new(),
            webhook_bus: String::new(),
            webhook_rate: 1000.0,
            webhook_burst: 5000,
            webhook_max_body_bytes: 10 << 20,
            webhook_max_lag: 100_000,
            header_read_timeout_secs: 10,
            cors_origins: Vec::new(),
        }
    }
}

/// The event calendar seasonality is measured against.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    /// CSV `date,name,locale,topics`; empty for no calendar (seasonality 0).
    pub path: PathBuf,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            path: PathBuf::from("config/calendar.csv"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Timely worker threads (`-w` on the command line overrides).
    pub workers: usize,
    /// Event-time granularity of timely timestamps, in seconds.
    pub epoch_secs: u64,
    /// How far behind the largest event time seen an event may arrive.
    pub allowed_lateness_secs: u64,
    /// How far ahead of the wall clock an event time may be (0: no limit).
    pub max_future_secs: u64,
    /// `max`, or a real-time multiplier such as `60`.
    pub speed: String,
    /// Inputs: JSONL files (plain or .gz) and `-` (standard input), read in
    /// order as one stream, and bus URLs (`kafka://…`, `redis://…?stream=…`,
    /// `fluvio://…`), each read beside them with its own watermark.
    pub inputs: Vec<String>,
    /// Where `run` writes embedded signals (JSON Lines).
    pub output: PathBuf,
    /// Dead-letter file (JSON Lines).
    pub dead_letter: PathBuf,
    /// Most records in flight inside the dataflow before the source waits.
    pub max_in_flight: usize,
    /// While the inputs are a backlog (files read at full speed), how many
    /// ticks a batch of epochs may span: the score rows of a batch are
    /// emitted once, at its end, with each idea's last score (1: every
    /// epoch emits its own, the reference mode).
    pub tick_batch: usize,
    /// How long a failed write to Postgres or Redis is retried before the
    /// pipeline stops (0: stop at the first failure).
    pub sink_retry_secs: u64,
    /// A bus partition with no record for this long stops holding the
    /// watermark back; when every source is idle the watermark follows the
    /// wall clock, and `run --exit-at-end` ends.
    pub idle_source_secs: u64,
    /// How long a stop (SIGTERM, SIGINT) may take to commit the epochs that
    /// are complete before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// Where `run` writes checkpoints of its whole state, and resumes from
    /// the newest usable one at start (empty: no checkpoints; every start
    /// rebuilds the state from the inputs).
    pub checkpoint_dir: PathBuf,
    /// Processing time between two checkpoints, in seconds.
    pub checkpoint_every_secs: u64,
    /// How many checkpoints are kept (the newest; older ones are removed).
    pub checkpoints_kept: usize,
    /// Once a checkpoint is written, Redis stream inputs drop the entries
    /// that no checkpoint kept reads again (`XTRIM MINID`).
    pub trim_sources: bool,
}

impl PipelineConfig {
    /// `sink_retry_secs`: how long a failed call to a sink is tried again.
    pub fn sink_retry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.sink_retry_secs)
    }

    /// `max_future_secs` as the source takes it: `None` when 0 (no limit);
    /// capped at a thousand years, which is no limit either.
    pub fn max_future(&self) -> Option<chrono::Duration> {
        const CAP: u64 = 1_000 * 366 * 86_400;
        (self.max_future_secs > 0)
            .then(|| chrono::Duration::seconds(self.max_future_secs.min(CAP) as i64))
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            epoch_secs: 60,
            allowed_lateness_secs: 3600,
            max_future_secs: 31_536_000,
            speed: "max".into(),
            inputs: vec!["config/sample/signals.jsonl".into()],
            output: PathBuf::from("out/run/signals.jsonl"),
            dead_letter: PathBuf::from("out/run/dead_letter.jsonl"),
            max_in_flight: 50_000,
            tick_batch: 24,
            sink_retry_secs: 300,
            idle_source_secs: 30,
            shutdown_timeout_secs: 30,
            checkpoint_dir: PathBuf::new(),
            checkpoint_every_secs: 60,
            checkpoints_kept: 2,
            trim_sources: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Folder with model.safetensors, tokenizer.json, config.json. Env: IDEAFLOW_MODEL_DIR.
    pub dir: PathBuf,
    pub max_batch: usize,
    pub max_batch_tokens: usize,
    pub cache_capacity: usize,
    /// Threads for the model's matrix kernels (0: one per core).
    pub threads: usize,
    /// Dense-layer matrix products: "auto" (MKL when installed), "mkl", "builtin".
    pub blas: String,
    /// Intel MKL runtime library. Env: IDEAFLOW_MKL_LIB.
    pub mkl_lib: PathBuf,
    /// Number format of the dense layers' products: "f32" (default) or
    /// "bf16" (CPUs with AVX-512 BF16 or AMX, through MKL; vectors at cosine
    /// ≥ 0.999 to f32's, but not bit-identical to them).
    pub precision: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            max_batch: 128,
            max_batch_tokens: 16_384,
            cache_capacity: 100_000,
            threads: 0,
            blas: "auto".into(),
            mkl_lib: PathBuf::from("state/mkl/lib/libmkl_rt.so.2"),
            precision: "f32".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Env: IDEAFLOW_POSTGRES_URL.
    pub url: String,
    /// Schema the views live in (`--namespace` overrides it and redis.namespace).
    pub schema: String,
    /// Drop the vector index before a bulk load (a replay, or `run` at speed
    /// max) and build it once the inputs end.
    pub build_index_after_load: bool,
    /// `maintenance_work_mem` for that build.
    pub index_build_memory: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://ideaflow@127.0.0.1:54329/ideaflow".into(),
            schema: "ideaflow".into(),
            build_index_after_load: true,
            index_build_memory: "1GB".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Env: IDEAFLOW_REDIS_URL.
    pub url: String,
    /// Key prefix: `{namespace}:{entity}:{id}`.
    pub namespace: String,
    /// Ideas kept in each category's top sorted set.
    pub top_k: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:63790/".into(),
            namespace: "ideaflow".into(),
            top_k: 100,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Below this best similarity a sentence is a Hunch (seed 000).
    pub confidence_threshold: f32,
    /// Sentences shorter than this (after trimming) are skipped.
    pub min_sentence_chars: usize,
    /// Anchor name = anchor text, in the seed's order.
    pub anchors: Vec<Anchor>,
    /// Labeled sentences (`{"text","label"}` JSONL) the calibrated mode
    /// builds and calibrates its classes from.
    pub examples: PathBuf,
    /// Every this-many-th line of `examples` is held out: never used to
    /// build or calibrate, kept for `classify --evaluate --held-out`.
    pub holdout_every: usize,
    /// Labeled trend posts (`{"text","category"}` JSONL, names from
    /// `[categories]`) the calibrated niche categories are built from (same
    /// held-out rule).
    pub category_examples: PathBuf,
    /// The calibrated anchor classes' trained layer, saved as text by
    /// `classify --train` and used while what it was trained from is
    /// unchanged (else trained at start). Empty: always trained at start.
    pub weights_file: PathBuf,
    /// The same for the calibrated niche categories.
    pub category_weights_file: PathBuf,
    /// How much the words of a sentence count beside its embedding in the
    /// calibrated anchor classes (0: the embedding alone).
    pub lexical_weight: f64,
    /// The same for the calibrated niche categories.
    pub category_lexical_weight: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub name: String,
    pub text: String,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            confidence_threshold: 0.3,
            min_sentence_chars: 10,
            anchors: Vec::new(),
            examples: PathBuf::from("config/labeled/anchor_examples.jsonl"),
            holdout_every: 4,
            category_examples: PathBuf::from("config/labeled/category_examples.jsonl"),
            weights_file: PathBuf::from("config/labeled/anchor_classes.json"),
            category_weights_file: PathBuf::from("config/labeled/categories.json"),
            lexical_weight: 1.0,
            category_lexical_weight: 0.5,
        }
    }
}

impl Config {
    /// Reads `path`, then applies environment overrides, then checks values.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let table = read_table(path, 0)?;
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        config.apply_env()?;
        config.check()?;
        Ok(config)
    }

    /// Command-line overrides shared by `run` and `replay`, then a re-check.
    pub fn override_run(
        &mut self,
        workers: Option<usize>,
        speed: Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(w) = workers {
            self.pipeline.workers = w;
        }
        if let Some(s) = speed {
            self.pipeline.speed = s;
        }
        self.check()
    }

    /// `pipeline.inputs`, parsed: files, `-`, and bus URLs.
    pub fn input_specs(&self) -> Result<Vec<ideaflow_sources::input::InputSpec>, ConfigError> {
        self.pipeline
            .inputs
            .iter()
            .map(|i| {
                ideaflow_sources::input::InputSpec::parse(i).map_err(|e| ConfigError::Invalid {
                    key: "pipeline.inputs",
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// `--namespace`: the Postgres schema and the Redis key prefix at once.
    pub fn set_namespace(&mut self, namespace: &str) -> Result<(), ConfigError> {
        if !ideaflow_sinks::postgres::valid_schema(namespace) {
            return Err(ConfigError::Invalid {
                key: "--namespace",
                message: format!(
                    "{namespace:?}: use lowercase letters, digits and _, starting with a letter"
                ),
            });
        }
        self.postgres.schema = namespace.to_owned();
        self.redis.namespace = namespace.to_owned();
        Ok(())
    }

    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Ok(v) = std::env::var("IDEAFLOW_MODEL_DIR") {
            self.model.dir = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("IDEAFLOW_POSTGRES_URL") {
            self.postgres.url = v;
        }
        if let Ok(v) = std::env::var("IDEAFLOW_REDIS_URL") {
            self.redis.url = v;
        }
        if let Ok(v) = std::env::var("IDEAFLOW_WEBHOOK_TOKENS") {
            self.api.webhook_tokens = v
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
        }
        // Seed 004 §7 names these two.
        if let Ok(v) = std::env::var("SLA_THRESHOLD_HOURS") {
            self.feedback.sla_threshold_hours =
                v.trim().parse().map_err(|_| ConfigError::Invalid {
                    key: "SLA_THRESHOLD_HOURS",
                    message: format!("{v:?} is not a number of hours"),
                })?;
        }
        if let Ok(v) = std::env::var("SLA_ALERT_COOLDOWN_MINUTES") {
            self.feedback.sla_alert_cooldown_minutes =
                v.trim().parse().map_err(|_| ConfigError::Invalid {
                    key: "SLA_ALERT_COOLDOWN_MINUTES",
                    message: format!("{v:?} is not a whole number of minutes"),
                })?;
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.pipeline.workers == 0 {
            return invalid("pipeline.workers", "must be at least 1");
        }
        if self.pipeline.checkpoint_every_secs == 0 {
            return invalid(
                "pipeline.checkpoint_every_secs",
                "must be at least 1 second",
            );
        }
        if self.pipeline.checkpoints_kept == 0 {
            return invalid("pipeline.checkpoints_kept", "must be at least 1");
        }
        if self.pipeline.tick_batch == 0 {
            return invalid(
                "pipeline.tick_batch",
                "must be at least 1 (1: every epoch emits its own score rows)",
            );
        }
        if self.pipeline.epoch_secs == 0 {
            return invalid("pipeline.epoch_secs", "must be at least 1 second");
        }
        self.input_specs()?;
        if self.api.webhook_tokens.iter().any(|t| t.len() < 16) {
            return invalid(
                "api.webhook_tokens",
                "a token shorter than 16 characters is too easy to guess; use e.g. `openssl rand -hex 32`",
            );
        }
        if !self.api.webhook_rate.is_finite()
            || self.api.webhook_rate <= 0.0
            || self.api.webhook_burst == 0
        {
            return invalid(
                "api.webhook_rate",
                "webhook_rate and webhook_burst must be positive",
            );
        }
        if let Err(e) = self
            .pipeline
            .speed
            .parse::<ideaflow_sources::replay::Speed>()
        {
            return invalid("pipeline.speed", &e);
        }
        if self.model.max_batch == 0 || self.model.max_batch_tokens == 0 {
            return invalid("model.max_batch", "batch limits must be positive");
        }
        if !["auto", "mkl", "builtin"].contains(&self.model.blas.as_str()) {
            return invalid("model.blas", "must be \"auto\", \"mkl\" or \"builtin\"");
        }
        if !(0.0..=1.0).contains(&self.classifier.confidence_threshold) {
            return invalid("classifier.confidence_threshold", "must be within [0, 1]");
        }
        for (key, w) in [
            ("classifier.lexical_weight", self.classifier.lexical_weight),
            (
                "classifier.category_lexical_weight",
                self.classifier.category_lexical_weight,
            ),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return invalid(key, "must be a number ≥ 0 (0: the embedding alone)");
            }
        }
        if !ideaflow_sinks::postgres::valid_schema(&self.postgres.schema) {
            return invalid(
                "postgres.schema",
                "use lowercase letters, digits and _, starting with a letter",
            );
        }
        if !is_memory_size(&self.postgres.index_build_memory) {
            return invalid(
                "postgres.index_build_memory",
                "a PostgreSQL memory size such as \"512MB\" or \"1GB\" (units kB, MB, GB, TB)",
            );
        }
        if self.redis.top_k == 0 {
            return invalid("redis.top_k", "must be at least 1");
        }
        let d = &self.dedupe;
        if !(d.near_threshold > 0.0 && d.near_threshold <= 1.0) {
            return invalid("dedupe.near_threshold", "must be within (0, 1]");
        }
        if d.retention_secs <= 0 {
            return invalid("dedupe.retention_secs", "must be positive");
        }
        if d.forget_archived_secs < 0 {
            return invalid(
                "dedupe.forget_archived_secs",
                "must be 0 (never forget) or positive",
            );
        }
        if !(d.bloom_fp_rate > 0.0 && d.bloom_fp_rate < 0.5) || d.bloom_capacity == 0 {
            return invalid(
                "dedupe.bloom_fp_rate",
                "bloom_fp_rate must be within (0, 0.5) and bloom_capacity positive",
            );
        }
        if d.bloom_generations < 2 {
            return invalid("dedupe.bloom_generations", "must be at least 2");
        }
        if !(1..=4096).contains(&d.lsh_bands) || !(1..=32).contains(&d.lsh_bits) {
            return invalid(
                "dedupe.lsh_bands",
                "lsh_bands must be 1..=4096 and lsh_bits 1..=32",
            );
        }
        let w = &self.windows;
        if w.window_secs <= 0 || w.distinct_window_secs <= 0 || w.tick_secs <= 0 {
            return invalid(
                "windows.window_secs",
                "window_secs, distinct_window_secs and tick_secs must be positive",
            );
        }
        if !(w.distinct_error_rate > 0.0 && w.distinct_error_rate < 0.3) {
            return invalid("windows.distinct_error_rate", "must be within (0, 0.3)");
        }
        let p = &self.scoring;
        if p.freshness_scale_hours <= 0.0 || p.season_decay_days <= 0.0 || p.mad_scale <= 0.0 {
            return invalid(
                "scoring.freshness_scale_hours",
                "freshness_scale_hours, season_decay_days and mad_scale must be positive",
            );
        }
        let weights = p.weights.as_array();
        if weights.iter().any(|x| !x.is_finite() || *x < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return invalid(
                "scoring.weights",
                "weights must be non-negative with a positive sum (they are normalized to 1)",
            );
        }
        Ok(())
    }
}

/// A PostgreSQL memory setting: a positive integer, then optionally kB, MB,
/// GB or TB.
/// The file's table, on top of the file its `extends` key names (relative
/// to the file's folder), merged table by table: a profile such as
/// `config/live.toml` sets only what differs from `config/ideaflow.toml`.
fn read_table(path: &Path, depth: usize) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let Some(base) = base.as_str() else {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            message: "`extends` must be a file name, such as \"ideaflow.toml\"".into(),
        });
    };
    if depth >= 8 {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            message: "`extends` goes more than 8 files deep: is there a loop?".into(),
        });
    }
    let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
    let mut merged = read_table(&base_path, depth + 1)?;
    merge(&mut merged, table);
    Ok(merged)
}

/// `over` on top of `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn is_memory_size(value: &str) -> bool {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    number.parse::<u64>().is_ok_and(|n| n > 0)
        && ["", "kB", "MB", "GB", "TB"].contains(&unit.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_config_parses_and_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ideaflow.toml");
        let config = Config::load(&path).expect("bundled config loads");
        assert_eq!(config.classifier.anchors.len(), 4);
        // Every key of the defaults appears in the documented file.
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::to_string(&Config::default()).unwrap();
        // (Empty lists, like the anchors, are documented as tables instead.)
        for line in defaults
            .lines()
            .filter(|l| l.contains(" = ") && !l.ends_with("= []"))
        {
            let key = line.split(" = ").next().unwrap().trim();
            assert!(
                text.contains(&format!("{key} =")),
                "config/ideaflow.toml does not document {key}"
            );
        }
    }

    #[test]
    fn index_build_memory_takes_postgres_sizes() {
        for ok in ["1GB", "512MB", "65536", "64 kB"] {
            assert!(is_memory_size(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "1gb",
            "GB",
            "1.5GB",
            "-1GB",
            "1GB; DROP TABLE ideas",
        ] {
            assert!(!is_memory_size(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[pipeline]\nworkerz = 2\n").unwrap_err();
        assert!(err.to_string().contains("workerz"));
    }
}
