//! The command line: one binary, one subcommand per job.

use std::path::PathBuf;

pub use crate::config::ClassifyMode;
use clap::{Args, Parser, Subcommand};
use ideaflow_sources::adapters::Adapter;

#[derive(Parser, Debug)]
#[command(
    name = "ideaflow",
    version,
    about = "A stream-processing dataflow engine for trend signals",
    long_about = "ideaflow reads trend signals (Reddit, YouTube, TikTok, Instagram, event calendars, \
webhooks) as continuous streams, and runs them through dedupe, embedding (all-MiniLM-L6-v2, \
in-process), scoring, classification and windowed feedback on timely/differential dataflow.\n\n\
Quick start: scripts/demo.sh runs the bundled sample stream end to end; scripts/test.sh runs \
every test.",
    after_help = "Environment: IDEAFLOW_POSTGRES_URL, IDEAFLOW_REDIS_URL, IDEAFLOW_MODEL_DIR override \
the config file; IDEAFLOW_LOG sets the log filter (e.g. info, ideaflow=debug); \
IDEAFLOW_LOG_FORMAT=json switches logs to JSON."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pipeline: inputs -> validate -> embed -> dedupe, classify, score -> Postgres, Redis, HTTP API and dashboard.
    ///
    /// The inputs (pipeline.inputs or --input: files, standard input, Kafka
    /// topics, Redis streams) are read as one stream in event time. Every
    /// completed epoch is materialized into Postgres/pgvector and Redis in one
    /// transaction each, and only then are its bus records acknowledged. With
    /// pipeline.checkpoint_dir set, the whole state is checkpointed every
    /// pipeline.checkpoint_every_secs, at a stop and at the inputs' end, and
    /// a start resumes from the newest usable checkpoint (the log says which,
    /// or why none); otherwise a start rebuilds the views from the inputs
    /// (buses from their beginning). Either way a restart loses and doubles
    /// nothing, and a redelivered record changes nothing.
    /// Embedded signals go to pipeline.output, refused records to the
    /// dead-letter file with a reason and their position. The HTTP API, the
    /// dashboard, /metrics and /health serve on api.listen. SIGTERM or SIGINT
    /// stops reading, commits the complete epochs and exits 0 (a second one
    /// exits at once); with --exit-at-end the run ends once bounded inputs
    /// end and every bus source has been idle for pipeline.idle_source_secs.
    Run(RunArgs),
    /// Replay streams and write the final state of every view, sorted by key (for analysts and diffs).
    Replay(ReplayArgs),
    /// Embed texts: JSONL {"id","text"} in, JSONL {"id","embedding":[384 floats]} out, in input order.
    Embed(EmbedArgs),
    /// Convert raw platform payloads into canonical Signals (JSON Lines).
    Normalize(NormalizeArgs),
    /// Generate a deterministic, realistic signal stream.
    Gen(GenArgs),
    /// Classify texts into the seed's anchors (Hunch, Wisdom, Nudge, Spell), sentence by sentence.
    Classify(ClassifyArgs),
    /// Show every anchor's similarity to one sentence, and the decision.
    Explain(ExplainArgs),
    /// Check a config file: parse it, apply environment overrides, validate values.
    Validate(ValidateArgs),
    /// Create the Postgres schema and apply the migrations (run and replay --materialize do it too).
    Migrate(MigrateArgs),
    /// Check that Postgres, Redis and the final state of a replay agree exactly.
    Verify(VerifyArgs),
    /// Append JSON Lines to a bus (a Kafka topic or a Redis stream), one record per line, acknowledged by the bus.
    Produce(ProduceArgs),
    /// Watch a running pipeline's sources and progress live in the terminal (reads its /metrics).
    Top(TopArgs),
    /// Look into checkpoints (pipeline.checkpoint_dir).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Print what each checkpoint in DIR holds, newest first: the epoch every
    /// epoch before which it holds, the watermark, each source's position,
    /// resume point (where a restart reads again from) and watermark,
    /// counts of live and archived ideas, vectors, signals remembered for
    /// redeliveries and feedback events waiting, its format version and
    /// whether its checksums hold (without decoding the state). Exits 1 if
    /// the newest is not whole.
    Inspect(CheckpointInspectArgs),
}

#[derive(Args, Debug)]
pub struct CheckpointInspectArgs {
    /// A checkpoint directory (pipeline.checkpoint_dir), or one checkpoint file.
    pub dir: PathBuf,
    /// One JSON object per checkpoint instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Configuration file (postgres.url, postgres.schema).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// Schema (and Redis namespace) to migrate; replaces postgres.schema.
    #[arg(long)]
    pub namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Configuration file (postgres.*, redis.*, and the pipeline settings of the replay).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// The `--out` folder of the replay to compare with. Without it and without
    /// --input: the --out (or else the inputs) the last `replay --materialize`
    /// into this namespace recorded; inputs are replayed again in memory (the
    /// final state is deterministic).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Inputs to replay in memory when --out is absent; default pipeline.inputs.
    #[arg(short, long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Postgres schema and Redis namespace the replay wrote into.
    #[arg(long)]
    pub namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Input JSONL with {"id","text"} per line; standard input when absent or `-`.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Output JSONL {"id","routed_content","analytics"}, one line per input line in input order
    /// (blank lines skipped); a line that is not an {"id","text"} object gets
    /// "analytics": {"error": "line N: why"}, as the seed answers a text it cannot analyze.
    /// Standard output when absent.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Configuration file (anchors, threshold, model).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// `seed`: seed 000's exact algorithm (anchor texts alone, Hunch below
    /// the confidence threshold). `calibrated`: each class's prototype (its
    /// anchor text with `classifier.examples`) and a linear layer trained on
    /// those examples over the embedding and the sentence's words (saved in
    /// `classifier.weights_file`, see --train), Hunch only between classes.
    #[arg(long, value_enum, default_value_t = ClassifyMode::Seed)]
    pub mode: ClassifyMode,
    /// Instead of classifying: measure both modes on this labeled JSONL
    /// (`{"text","label"}` per line) and print accuracy, per-class
    /// precision and recall, and the confusion matrix of each.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "out"])]
    pub evaluate: Option<PathBuf>,
    /// With --evaluate: only the held-out lines (every
    /// `classifier.holdout_every`-th), which calibration never saw.
    #[arg(long, requires = "evaluate")]
    pub held_out: bool,
    /// With --evaluate: print one JSON object instead of tables.
    #[arg(long, requires = "evaluate")]
    pub json: bool,
    /// With --evaluate: the niche categories instead of the anchor classes
    /// (seed = the nearest category description, calibrated = descriptions
    /// plus `classifier.category_examples`). Implied when FILE's lines are
    /// `{"text","category"}`.
    #[arg(long, requires = "evaluate")]
    pub categories: bool,
    /// Instead of classifying: train the calibrated anchor classes and niche
    /// categories from their examples (held-out lines excluded) and save them
    /// to `classifier.weights_file` and `classifier.category_weights_file`,
    /// which starts then use while the examples, texts, settings and model
    /// stay the same. Run it after editing an examples file.
    #[arg(long, conflicts_with_all = ["input", "out", "evaluate"])]
    pub train: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The sentence to explain.
    pub sentence: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Configuration file (anchors, threshold, model).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// `seed` (seed 000's algorithm) or `calibrated` (see `classify --help`).
    #[arg(long, value_enum, default_value_t = ClassifyMode::Seed)]
    pub mode: ClassifyMode,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// Inputs; replaces pipeline.inputs. Files (plain or .gz JSONL) and `-`
    /// (standard input, read as lines arrive) are read in order as one
    /// stream; bus URLs are read beside them, each partition with its own
    /// watermark: `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[?group=G]`,
    /// `redis://HOST:PORT[/DB]?stream=S[&group=G][&consumer=C]`,
    /// `fluvio://HOST:PORT/TOPIC`. Bus records are acknowledged once every
    /// sink committed their epoch.
    #[arg(short, long, num_args = 1..)]
    pub input: Vec<String>,
    /// Output JSONL; replaces pipeline.output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Dead-letter JSONL; replaces pipeline.dead_letter.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Timely worker threads; replaces pipeline.workers.
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Replay speed: `max` or a real-time multiplier (e.g. 60); replaces pipeline.speed.
    #[arg(long)]
    pub speed: Option<String>,
    /// Postgres schema and Redis key prefix of the views; replaces postgres.schema and redis.namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// HTTP API and dashboard address; replaces api.listen ("" serves nothing).
    #[arg(long)]
    pub listen: Option<String>,
    /// Exit when the inputs end instead of serving the API until SIGTERM or
    /// Ctrl-C: files at their end, bus sources once every one has been idle
    /// for pipeline.idle_source_secs (a catch-up job, a test).
    #[arg(long)]
    pub exit_at_end: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Configuration file.
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// Input files (plain or .gz JSONL; `-` is standard input), replayed in order as
    /// one stream.
    #[arg(short, long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output folder: ideas.jsonl (with factors and score), signals.jsonl, centroids.jsonl,
    /// topic_counts.jsonl, distinct_counts.jsonl, dead_letters.jsonl, dead_letter_counts.jsonl;
    /// each sorted by key.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Timely worker threads; results do not depend on it.
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Replay speed: `max` or a real-time multiplier; results do not depend on it.
    #[arg(long)]
    pub speed: Option<String>,
    /// Also materialize the views into Postgres and Redis (emptied first), as
    /// `run` does: whole epochs, one transaction per batch; the HNSW index is
    /// built once the inputs end (`postgres.build_index_after_load`).
    #[arg(long)]
    pub materialize: bool,
    /// Postgres schema and Redis key prefix to materialize into; replaces
    /// postgres.schema and redis.namespace (a replay can write beside the live views).
    #[arg(long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Timely's cluster mode: one dataflow over several processes (machines).
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Processes in the cluster (timely's -n). Every process runs the same
    /// command with its own --process; results do not depend on it.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0 to processes - 1 (timely's -p). Process 0
    /// reads the inputs, owns the idea state and writes every output (files,
    /// Postgres, Redis, the API); the others embed and prepare signals for it
    /// and exit when it is done. -w sets each process's worker threads.
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// With --processes > 1: a file with one host:port per line, line i for
    /// process i (timely's hostfile; blank lines and # comments skipped).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Input JSONL with {"id","text"} per line; standard input when absent or `-`.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Output JSONL; standard output when absent or `-`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Configuration file (for model.*).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
    /// Texts embedded per call (the embedder batches within it).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
}

fn parse_adapter(name: &str) -> Result<Adapter, String> {
    Adapter::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Adapter::ALL.iter().map(|a| a.name()).collect();
        format!("unknown adapter {name:?}; use one of {}", names.join(", "))
    })
}

#[derive(Args, Debug)]
pub struct NormalizeArgs {
    /// Payload format: reddit (listing JSON), youtube (videos.list response), tiktok
    /// (hashtag-trend JSONL), instagram (top-media JSONL), calendar (CSV
    /// date,name,locale,topics), archive (topic/year JSONL). Shapes: config/adapters.md.
    #[arg(short, long, value_parser = parse_adapter)]
    pub adapter: Adapter,
    /// Raw payload file; standard input when absent or `-`.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Signals JSONL; standard output when absent or `-`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Dead-letter JSONL for records that cannot be converted; standard error when absent.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Capture time (RFC 3339) for payloads that carry none; default: each record's publication time.
    #[arg(long)]
    pub captured_at: Option<String>,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Number of signals.
    #[arg(long, default_value_t = 1000)]
    pub signals: u64,
    /// RNG seed: same seed and flags, same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also emit listing.published and feedback.received events for generated ideas.
    #[arg(long)]
    pub feedback: bool,
    /// Also emit classification.corrected events: one original in 25 re-labelled by a
    /// user, each niche toward one anchor (Wisdom, Nudge or Spell), rated 3 to 5.
    #[arg(long)]
    pub corrections: bool,
    /// Attach each signal's embedding, computed with the model.
    #[arg(long, conflicts_with = "synthetic_embeddings")]
    pub with_embeddings: bool,
    /// Attach synthetic unit vectors clustered by category (for large benchmark streams).
    #[arg(long)]
    pub synthetic_embeddings: bool,
    /// Write synthetic embeddings as base64 of 384 little-endian f32 (2 KB a line
    /// instead of ~3.5 KB, and much cheaper to parse); needs --synthetic-embeddings.
    #[arg(long, requires = "synthetic_embeddings")]
    pub base64_embeddings: bool,
    /// Days of event time the stream spans.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// First event time (RFC 3339).
    #[arg(long, default_value = "2024-10-01T00:00:00Z")]
    pub start: String,
    /// Largest arrival delay in seconds (keep it below pipeline.allowed_lateness_secs).
    #[arg(long, default_value_t = 1800)]
    pub max_delay_secs: u64,
    /// Output file (`-` for standard output); `.gz` compresses.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Configuration file (for model.* with --with-embeddings).
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Configuration file.
    #[arg(short, long, default_value = "config/ideaflow.toml")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The bus: `kafka://HOST:PORT/TOPIC` (created with one partition if
    /// missing) or `redis://HOST:PORT[/DB]?stream=S` (each line becomes the
    /// entry's `data` field).
    pub to: String,
    /// JSON Lines to append (plain or .gz); standard input when absent or `-`.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Lines per append (one round trip and one acknowledgement each).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Lines per second at most (0: as fast as the bus takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The running pipeline's address (its api.listen).
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    pub url: String,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one snapshot and exit (for scripts), instead of refreshing.
    #[arg(long)]
    pub once: bool,
}
