//! Checkpoints under faults: `ideaflow run` killed (SIGKILL or SIGTERM) at
//! random moments and restarted, resuming from its checkpoints each time,
//! ends with Postgres rows, Redis keys, the output file and the dead
//! letters identical to an uninterrupted run's; a corrupt or truncated
//! newest checkpoint is passed over for the one before it.
//!
//! The suite runs a short variant (`IDEAFLOW_FAULT_KILLS`, default 3 kills
//! per test); `scripts/fault-test.sh` runs the long one (20 kills).
//! Needs scripts/test.sh's servers.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

fn kills() -> usize {
    std::env::var("IDEAFLOW_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn unique(test: &str) -> String {
    format!("t_ckpt_{}_{}", std::process::id(), test)
}

fn redis_url() -> String {
    std::env::var("IDEAFLOW_REDIS_URL").expect("IDEAFLOW_REDIS_URL unset: run scripts/test.sh")
}

fn redis() -> redis::Connection {
    redis_at(&redis_url())
}

fn redis_at(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn stream_url(stream: &str) -> String {
    let port = redis_url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    format!("redis://127.0.0.1:{port}/0?stream={stream}")
}

/// A config with checkpoints every second into `dir` (none when `None`),
/// Redis stream inputs trimmed up to the oldest kept checkpoint.
fn config(dir: &Path, name: &str, checkpoints: Option<&Path>) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let mut text = format!(
        "extends = {:?}\n[pipeline]\nidle_source_secs = 2\nshutdown_timeout_secs = 20\n",
        repo_root().join("config/ideaflow.toml")
    );
    if let Some(c) = checkpoints {
        text.push_str(&format!(
            "checkpoint_dir = {c:?}\ncheckpoint_every_secs = 1\ncheckpoints_kept = 2\ntrim_sources = true\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A config without checkpoints, with `pipeline` keys added (`extra`).
fn config_with(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = config(dir, name, None);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    path
}

/// Generated signals with feedback and synthetic vectors, a few lines
/// delivered twice, some delivered again a day later (late by then: dead
/// letters whose text names the watermark they were behind), and two bad
/// lines.
fn stream(dir: &Path, signals: u32, seed: u64) -> PathBuf {
    let generated = dir.join("generated.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", &signals.to_string()])
        .args(["--seed", &seed.to_string(), "--days", "4"])
        .args(["--feedback", "--synthetic-embeddings", "--out"])
        .arg(&generated));
    let text = std::fs::read_to_string(&generated).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i % 97 == 0 {
            out.push_str(line);
            out.push('\n');
        }
        if i >= 3000 && i % 389 == 0 {
            out.push_str(lines[i - 3000]);
            out.push('\n');
        }
        if i == 1000 {
            out.push_str("{\"broken json\n{\"id\":\"x\",\"source\":\"reddit\"}\n");
        }
    }
    let input = dir.join("input.jsonl");
    std::fs::write(&input, out).unwrap();
    input
}

/// `ideaflow run` of `input` into namespace `ns`, its files in `dir`.
fn run_cmd(config: &Path, input: &str, ns: &str, dir: &Path) -> Command {
    run_cmd_listening(config, input, ns, dir, "")
}

/// The same with the API at `listen` (empty: none).
fn run_cmd_listening(config: &Path, input: &str, ns: &str, dir: &Path, listen: &str) -> Command {
    let mut cmd = run_cmd_serving(config, input, ns, dir, listen);
    cmd.arg("--exit-at-end");
    cmd
}

/// The same, serving and reading on after its inputs are idle.
fn run_cmd_serving(config: &Path, input: &str, ns: &str, dir: &Path, listen: &str) -> Command {
    let mut cmd = ideaflow();
    cmd.env("IDEAFLOW_LOG", "info")
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--input", input, "--namespace", ns, "--listen", listen])
        .arg("--out")
        .arg(dir.join(format!("{ns}.out.jsonl")))
        .arg("--dead-letter")
        .arg(dir.join(format!("{ns}.dead.jsonl")));
    cmd
}

/// Starts `cmd`, its log into `log`.
fn spawn_logging(mut cmd: Command, log: &Path) -> Server {
    Server(
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Runs `cmd` to its end, its log into `log`.
fn run_to_end(mut cmd: Command, log: &Path) {
    let status = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// When a run is interrupted.
#[derive(Clone, Copy)]
enum Moment {
    /// A random moment within 3 s after its first checkpoint is written
    /// (so that every run makes progress however loaded the machine is).
    Random,
    /// Right after it took its second checkpoint, which is written only
    /// once the sinks hold its epochs: during the sinks' commit or the
    /// checkpoint's write.
    AtCheckpoint,
}

/// Starts `cmd`, waits for `moment` (or until it ends) and sends it
/// `signal`; returns its log.
fn interrupt(
    mut cmd: Command,
    log: &Path,
    signal: &str,
    moment: Moment,
    rng: &mut impl Rng,
) -> String {
    let mut child = Server(
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let after = Duration::from_millis(rng.random_range(0..3000));
    let mut written: Option<Instant> = None;
    let started = Instant::now();
    loop {
        if child.0.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let due = match moment {
            Moment::Random => {
                if written.is_none() && text.contains("checkpoint written") {
                    written = Some(Instant::now());
                }
                written.is_some_and(|w| w.elapsed() >= after)
            }
            Moment::AtCheckpoint => text.matches("checkpoint taken").count() >= 2,
        };
        if due {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if child.0.try_wait().unwrap().is_none() {
        ok(Command::new("kill").args([&format!("-{signal}"), &child.0.id().to_string()]));
    }
    let status = child.0.wait().unwrap();
    if signal == "TERM" {
        assert!(status.success(), "SIGTERM exits 0: {status:?}");
    }
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Every view row in Postgres and every key in Redis of namespace `ns`,
/// namespace-free, without the wall-clock times of commits and refusals
/// and, for bus inputs (`positions`), without where records sat on the bus.
fn dump(ns: &str, positions: bool, stores: &Stores) -> BTreeMap<String, String> {
    let query = |sql: &str| psql_at(&stores.postgres, sql);
    let mut all = BTreeMap::new();
    let tables = query(&format!(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = '{ns}' \
         AND table_name NOT IN ('_sqlx_migrations') ORDER BY 1"
    ));
    // When rows were written (wall clock), not what they say.
    let mut skipped = vec![
        ("pipeline_progress", "committed_at"),
        ("dead_letters", "at"),
        // A serial: a refusal written again takes a number and is dropped.
        ("dead_letters", "id"),
        ("idea_rows", "updated_at"),
        ("ideas", "updated_at"),
        ("signals", "created_at"),
    ];
    if !positions {
        skipped.extend([
            ("dead_letters", "file"),
            ("dead_letters", "line"),
            ("dead_letters", "byte_offset"),
            ("dead_letters", "raw"),
            ("pipeline_progress", "source_positions"),
        ]);
    }
    for table in tables.lines() {
        let columns: Vec<String> = query(&format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = '{ns}' \
             AND table_name = '{table}' ORDER BY ordinal_position"
        ))
        .lines()
        .filter(|c| !skipped.contains(&(table, *c)))
        .map(|c| format!("\"{c}\""))
        .collect();
        let list = columns.join(", ");
        let rows = query(&format!(
            "SELECT {list} FROM {ns}.{table} ORDER BY {}",
            (1..=columns.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        all.insert(format!("postgres {table}"), rows);
    }
    let mut r = redis_at(&stores.redis);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query(&mut r)
        .unwrap();
    for key in keys {
        let short = key[ns.len() + 1..].to_owned();
        if !positions && (short == "positions" || short == "signals") {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut r).unwrap();
        let value = match kind.as_str() {
            "string" => format!("{:?}", redis::cmd("GET").arg(&key).query::<String>(&mut r)),
            "hash" => format!(
                "{:?}",
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<BTreeMap<String, String>>(&mut r)
            ),
            "zset" => format!(
                "{:?}",
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query::<Vec<(String, String)>>(&mut r)
            ),
            // Entry ids are wall-clock times: the entries, in order.
            "stream" => {
                let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query(&mut r)
                    .unwrap();
                entries
                    .iter()
                    .map(|(_, fields)| format!("{fields:?}\n"))
                    .collect()
            }
            other => other.to_owned(),
        };
        all.insert(format!("redis {short}"), value.replace(ns, "NS"));
    }
    all
}

/// Dead letters without their positions (a bus gives other positions than
/// a file for the same record).
fn dead_letters(path: &Path, positions: bool) -> Vec<serde_json::Value> {
    read_jsonl(path)
        .into_iter()
        .map(|mut d| {
            if !positions {
                d.as_object_mut().unwrap().remove("position");
            }
            d
        })
        .collect()
}

/// Where a run's views are.
struct Stores {
    postgres: String,
    redis: String,
}

impl Stores {
    /// The servers the tests share.
    fn shared() -> Self {
        Stores {
            postgres: std::env::var("IDEAFLOW_TEST_POSTGRES_URL").expect("run scripts/test.sh"),
            redis: redis_url(),
        }
    }
}

fn assert_same(reference: &str, ns: &str, dir: &Path, positions: bool) {
    assert_same_at(&Stores::shared(), reference, ns, dir, positions)
}

/// [`assert_same`] with the views in `stores`.
fn assert_same_at(stores: &Stores, reference: &str, ns: &str, dir: &Path, positions: bool) {
    let (want, got) = (
        dump(reference, positions, stores),
        dump(ns, positions, stores),
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same tables and keys"
    );
    for (key, rows) in &want {
        assert!(
            got[key] == *rows,
            "{key} differs from the uninterrupted run's"
        );
    }
    let file = |ns: &str, what: &str| dir.join(format!("{ns}.{what}.jsonl"));
    assert!(
        std::fs::read(file(reference, "out")).unwrap() == std::fs::read(file(ns, "out")).unwrap(),
        "the output files differ"
    );
    assert_eq!(
        dead_letters(&file(reference, "dead"), positions),
        dead_letters(&file(ns, "dead"), positions),
        "the dead letters differ"
    );
    // The same: the two runs' tables (~100 MB each: vectors, idea rows,
    // feedback windows, scores) are not needed any more; a failure keeps them.
    for schema in [reference, ns] {
        psql_at(
            &stores.postgres,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        );
    }
}

/// How the restarts of a test went.
#[derive(Debug, Default)]
struct Restarts {
    /// Resumed from a checkpoint.
    resumed: usize,
    /// Of those, read a source from a resume point past its start.
    sought: usize,
}

impl Restarts {
    fn note(&mut self, log: &str) {
        if log.contains("resuming from a checkpoint") {
            self.resumed += 1;
            let file_passed_over = log
                .split("passed_over=")
                .skip(1)
                .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit() && c != '0'));
            self.sought += usize::from(file_passed_over || log.contains(": after "));
        }
    }

    /// Some restart resumed, and some read from past a source's start.
    fn check(&self) {
        assert!(self.resumed > 0, "no restart resumed from a checkpoint");
        assert!(
            self.sought > 0,
            "no restart read a source from its resume point: {self:?}"
        );
    }
}

/// The uninterrupted run without checkpoints (one worker), then the same
/// input run with checkpoints on `workers` workers and `signal` sent
/// `kills()` times, then to its end: the final state must be the
/// uninterrupted run's.
fn kill_and_compare(
    test: &str,
    input: &str,
    file_input: &Path,
    signal: &str,
    seed: u64,
    workers: u32,
) -> Restarts {
    let dir = tempfile::tempdir().unwrap();
    let reference = unique(&format!("{test}_ref"));
    let plain = config(dir.path(), "plain", None);
    run_to_end(
        run_cmd(
            &plain,
            &file_input.to_string_lossy(),
            &reference,
            dir.path(),
        ),
        &dir.path().join("ref.log"),
    );
    let ns = unique(test);
    let checkpoints = dir.path().join("checkpoints");
    let with = config(dir.path(), "with", Some(&checkpoints));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut restarts = Restarts::default();
    for i in 0..kills() {
        let moment = if i % 3 == 1 {
            Moment::AtCheckpoint
        } else {
            Moment::Random
        };
        let mut cmd = run_cmd(&with, input, &ns, dir.path());
        cmd.args(["--workers", &workers.to_string()]);
        let log = interrupt(
            cmd,
            &dir.path().join(format!("run{i}.log")),
            signal,
            moment,
            &mut rng,
        );
        restarts.note(&log);
    }
    let last = dir.path().join("last.log");
    run_to_end(run_cmd(&with, input, &ns, dir.path()), &last);
    restarts.note(&std::fs::read_to_string(&last).unwrap());
    assert_same(
        &reference,
        &ns,
        dir.path(),
        input == file_input.to_string_lossy(),
    );
    if restarts.sought == 0 {
        for i in 0..kills() {
            let log = std::fs::read_to_string(dir.path().join(format!("run{i}.log")));
            eprintln!("run {i}: {}", log.unwrap_or_default());
        }
    }
    restarts
}

/// The reference mode (`pipeline.tick_batch = 1`: every epoch emits its
/// own score rows) on one worker, and the default (a file run's epochs in
/// batches of up to 24 ticks, each idea's score row once per batch) on two:
/// the same views, top sets and `idea.scored` events, output and dead
/// letters.
#[test]
fn batches_of_epochs_materialize_what_epochs_one_by_one_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 6_000, 43);
    let input = input.to_string_lossy();
    let reference_config = config_with(dir.path(), "reference", "tick_batch = 1\n");
    let reference = unique("batches_ref");
    run_to_end(
        run_cmd(&reference_config, &input, &reference, dir.path()),
        &dir.path().join("ref.log"),
    );
    let ns = unique("batches");
    let mut batched = run_cmd(&config(dir.path(), "plain", None), &input, &ns, dir.path());
    batched.args(["--workers", "2"]);
    run_to_end(batched, &dir.path().join("batched.log"));
    assert_same(&reference, &ns, dir.path(), true);
}

#[test]
fn kill_9_of_a_file_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 12_000, 31);
    kill_and_compare("file_kill", &input.to_string_lossy(), &input, "KILL", 1, 1).check();
}

/// On two workers: the checkpoints' state is the same whatever the worker
/// count, and so is the final state.
#[test]
fn sigterm_of_a_file_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 12_000, 32);
    kill_and_compare("file_term", &input.to_string_lossy(), &input, "TERM", 2, 2).check();
}

#[test]
fn kill_9_of_a_redis_stream_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 12_000, 33);
    let ns = unique("stream_kill");
    // The bus stream inside the run's namespace: a start must keep it.
    let url = stream_url(&format!("{ns}:signals"));
    ok(ideaflow().args(["produce", &url, "--input"]).arg(&input));
    kill_and_compare("stream_kill", &url, &input, "KILL", 3, 1).check();
    // pipeline.trim_sources: the stream dropped what no kept checkpoint
    // reads again, and the final state above is still the reference's.
    let produced = std::fs::read_to_string(&input).unwrap().lines().count();
    let left: usize = redis::cmd("XLEN")
        .arg(format!("{ns}:signals"))
        .query(&mut redis())
        .unwrap();
    assert!(
        left < produced,
        "the stream was not trimmed: {left} of {produced} entries left"
    );
    // Entries pending when a run was killed are acknowledged by the next
    // start (read again, or held by its checkpoint): none is left pending.
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(format!("{ns}:signals"))
        .arg("ideaflow")
        .query(&mut redis())
        .unwrap();
    assert_eq!(pending.0, 0, "entries left pending in the consumer group");
    // Read to its end after resumes past its start and trims: nothing is
    // behind. (A group set to a resume point with 0 entries read would
    // count every entry before that point as unread, for good.)
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::Commands::xinfo_groups(&mut redis(), format!("{ns}:signals")).unwrap();
    let lag = groups
        .groups
        .iter()
        .find(|g| g.name == "ideaflow")
        .unwrap()
        .lag;
    assert_eq!(lag, Some(0), "the group's lag once the stream is read");
}

#[test]
fn kill_9_of_a_kafka_topic_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 12_000, 35);
    let kafka = std::env::var("IDEAFLOW_KAFKA_BOOTSTRAP").expect(
        "IDEAFLOW_KAFKA_BOOTSTRAP unset: run scripts/test.sh (scripts/setup.sh starts the broker)",
    );
    let url = format!("kafka://{kafka}/{}", unique("kafka_kill"));
    ok(ideaflow().args(["produce", &url, "--input"]).arg(&input));
    kill_and_compare("kafka_kill", &url, &input, "KILL", 5, 1).check();
}

/// How long the sinks' Redis stays down in the outage test
/// (`scripts/fault-test.sh`: 30 s).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("IDEAFLOW_FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    )
}

/// `/health/ready`'s status code (0 when nothing answers).
fn readiness(port: u16) -> u16 {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return 0;
    }
    get(port, "/health/ready").0
}

/// A server the sinks write to, of the test's own, that an outage stops.
trait OwnServer {
    /// The variable that points a run at it, and its URL.
    fn env(&self) -> (&'static str, String);
    fn stop(&mut self);
    fn start_again(&mut self);
}

impl OwnServer for OwnRedis {
    fn env(&self) -> (&'static str, String) {
        ("IDEAFLOW_REDIS_URL", self.url())
    }
    fn stop(&mut self) {
        OwnRedis::stop(self, true)
    }
    fn start_again(&mut self) {
        OwnRedis::start_again(self)
    }
}

impl OwnServer for OwnPostgres {
    fn env(&self) -> (&'static str, String) {
        ("IDEAFLOW_POSTGRES_URL", self.url())
    }
    fn stop(&mut self) {
        self.server_down()
    }
    fn start_again(&mut self) {
        self.server_up()
    }
}

/// The sinks' Redis stopped mid-run while checkpoints are taken: the run
/// reports itself not ready, retries, is ready again once Redis is back;
/// then it is killed and restarted from its checkpoint. Nothing is lost or
/// doubled: the final state is an uninterrupted run's.
#[test]
fn a_redis_outage_with_checkpoints_loses_and_doubles_nothing() {
    let mut redis = OwnRedis::start();
    let stores = Stores {
        redis: redis.url(),
        ..Stores::shared()
    };
    outage_with_checkpoints(&mut redis, &stores, 37);
}

/// The same with the sinks' Postgres stopped.
#[test]
fn a_postgres_outage_with_checkpoints_loses_and_doubles_nothing() {
    let mut postgres = OwnPostgres::start();
    let stores = Stores {
        postgres: postgres.url(),
        ..Stores::shared()
    };
    outage_with_checkpoints(&mut postgres, &stores, 38);
}

/// Runs a stream to its end with `server` as a sink's store (the
/// reference); then again with checkpoints, stopping `server` mid-run for
/// [`outage`], killing the run after a checkpoint taken once it is back and
/// restarting it: the final state must be the reference's.
fn outage_with_checkpoints(server: &mut dyn OwnServer, stores: &Stores, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 12_000, seed);
    let (var, url) = server.env();
    let reference = unique("outage_ref");
    let plain = config(dir.path(), "plain", None);
    let mut cmd = run_cmd(&plain, &input.to_string_lossy(), &reference, dir.path());
    cmd.env(var, &url);
    run_to_end(cmd, &dir.path().join("ref.log"));
    let ns = unique("outage");
    let checkpoints = dir.path().join("checkpoints");
    let with = config(dir.path(), "with", Some(&checkpoints));
    // Paced: the 4 days take the outage and 25 s more, so that it falls mid-run.
    let speed = 4.0 * 86_400.0 / (outage().as_secs_f64() + 25.0);
    let paced = dir.path().join("paced.toml");
    let text = std::fs::read_to_string(&with).unwrap() + &format!("speed = \"{speed:.0}\"\n");
    std::fs::write(&paced, text).unwrap();
    let port = free_port();
    let log = dir.path().join("first.log");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = run_cmd_listening(&paced, &input.to_string_lossy(), &ns, dir.path(), &listen);
    cmd.env(var, &url);
    let mut child = spawn_logging(cmd, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{what} did not happen: {}",
                log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("a checkpoint", &|| {
        log_text().contains("checkpoint written")
    });
    until("readiness", &|| readiness(port) == 200);
    server.stop();
    let down = Instant::now();
    until("readiness false", &|| readiness(port) == 503);
    std::thread::sleep(outage().saturating_sub(down.elapsed()));
    server.start_again();
    until("readiness true again", &|| readiness(port) == 200);
    let written = log_text().matches("checkpoint written").count();
    until("a checkpoint after the outage", &|| {
        log_text().matches("checkpoint written").count() > written
    });
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the run ended before the kill (make the stream longer): {}",
        log_text()
    );
    ok(Command::new("kill").args(["-KILL", &child.0.id().to_string()]));
    let _ = child.0.wait();
    assert!(
        log_text().contains("a sink write failed; trying again"),
        "no write failed during the outage: {}",
        log_text()
    );
    let last = dir.path().join("last.log");
    let mut cmd = run_cmd(&with, &input.to_string_lossy(), &ns, dir.path());
    cmd.env(var, &url);
    run_to_end(cmd, &last);
    let mut restarts = Restarts::default();
    restarts.note(&std::fs::read_to_string(&last).unwrap());
    restarts.check();
    assert_same_at(stores, &reference, &ns, dir.path(), true);
}

#[test]
fn a_corrupt_or_truncated_newest_checkpoint_falls_back_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 3_000, 34);
    let reference = unique("fallback_ref");
    let plain = config(dir.path(), "plain", None);
    run_to_end(
        run_cmd(&plain, &input.to_string_lossy(), &reference, dir.path()),
        &dir.path().join("ref.log"),
    );
    let ns = unique("fallback");
    let checkpoints = dir.path().join("checkpoints");
    let with = config(dir.path(), "with", Some(&checkpoints));
    // Paced, so that it is stopped with two checkpoints and input left.
    let mut child = Server(
        run_cmd(&with, &input.to_string_lossy(), &ns, dir.path())
            .args(["--speed", "30000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&checkpoints)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| p.extension().is_some_and(|e| e == "ckpt"));
        found.sort();
        found
    };
    while listed().len() < 2 {
        assert!(Instant::now() < deadline, "no two checkpoints written");
        assert!(child.0.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(Command::new("kill").args(["-KILL", &child.0.id().to_string()]));
    let _ = child.0.wait();
    let found = listed();
    let (older, newest) = (&found[0], &found[1]);
    // inspect says both are whole, then that the newest is not.
    let inspected = ok(ideaflow().args(["checkpoint", "inspect"]).arg(&checkpoints));
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert_eq!(text.matches("checksums       ok").count(), 2, "{text}");
    assert!(
        text.contains("live") && text.contains("read through"),
        "{text}"
    );
    let mut bytes = std::fs::read(newest).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x55;
    std::fs::write(newest, &bytes).unwrap();
    let inspected = ideaflow()
        .args(["checkpoint", "inspect"])
        .arg(&checkpoints)
        .output()
        .unwrap();
    assert!(
        !inspected.status.success(),
        "a corrupt newest checkpoint fails inspect"
    );
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("NOT OK"));
    // The restart passes over it, says why, and resumes from the older one.
    let log = dir.path().join("after-corruption.log");
    let mut child = Server(
        run_cmd(&with, &input.to_string_lossy(), &ns, dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let older_name = older.file_name().unwrap().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("resuming from a checkpoint") {
            assert!(text.contains("checksum mismatch"), "{text}");
            assert!(text.contains(&older_name), "resumed from the older: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "no resume: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(Command::new("kill").args(["-KILL", &child.0.id().to_string()]));
    let _ = child.0.wait();
    // Truncate every checkpoint there is: the state is rebuilt from the
    // inputs, and the log says so.
    for path in listed() {
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let last = dir.path().join("last.log");
    run_to_end(
        run_cmd(&with, &input.to_string_lossy(), &ns, dir.path()),
        &last,
    );
    let text = std::fs::read_to_string(&last).unwrap();
    assert!(text.contains("cut short"), "{text}");
    assert!(!text.contains("resuming from a checkpoint"), "{text}");
    assert_same(&reference, &ns, dir.path(), true);
}

#[test]
fn a_file_that_grew_since_the_last_run_goes_on_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 6_000, 36);
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let half = lines.len() / 2;
    let reference = unique("grew_ref");
    let plain = config(dir.path(), "plain", None);
    run_to_end(
        run_cmd(&plain, &input.to_string_lossy(), &reference, dir.path()),
        &dir.path().join("ref.log"),
    );
    // The same file name, first half then whole: the run on the half ends
    // with a checkpoint, the next goes on from it.
    let growing = dir.path().join("growing.jsonl");
    std::fs::write(&growing, lines[..half].join("\n") + "\n").unwrap();
    let ns = unique("grew");
    let with = config(dir.path(), "with", Some(&dir.path().join("checkpoints")));
    run_to_end(
        run_cmd(&with, &growing.to_string_lossy(), &ns, dir.path()),
        &dir.path().join("first.log"),
    );
    std::fs::write(&growing, lines.join("\n") + "\n").unwrap();
    let second = dir.path().join("second.log");
    run_to_end(
        run_cmd(&with, &growing.to_string_lossy(), &ns, dir.path()),
        &second,
    );
    let log = std::fs::read_to_string(&second).unwrap();
    assert!(log.contains("resuming from a checkpoint"), "{log}");
    assert!(log.contains("caught up with the checkpoint"), "{log}");
    // Every view as one run on the whole file gives it; only the events
    // the first run announced for the epochs it closed at its end (its
    // input's end) stay as they were announced.
    assert_same_but_events(&Stores::shared(), &reference, &ns);
    let file = |ns: &str| dir.path().join(format!("{ns}.out.jsonl"));
    assert!(std::fs::read(file(&reference)).unwrap() == std::fs::read(file(&ns)).unwrap());
}

/// A pipeline fed through its webhook, resumed from a checkpoint, is not
/// taken for behind once it has read its stream: the source reports no lag
/// and the webhook takes records. (The group was once set back with a count
/// of 0 entries read, so Redis counted every entry before the resume point
/// as unread, for good, and past `api.webhook_max_lag` the webhook answered
/// every push 503 `pipeline_lagging`.)
#[test]
fn a_webhook_pipeline_resumed_from_a_checkpoint_is_not_taken_for_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 2_000, 41);
    let ns = unique("hook_resumed");
    let url = stream_url(&format!("{ns}:hook"));
    ok(ideaflow().args(["produce", &url, "--input"]).arg(&input));
    let with = config(dir.path(), "with", Some(&dir.path().join("checkpoints")));
    let text = std::fs::read_to_string(&with).unwrap() + "[api]\nwebhook_max_lag = 100\n";
    std::fs::write(&with, text).unwrap();
    run_to_end(
        run_cmd(&with, &url, &ns, dir.path()),
        &dir.path().join("first.log"),
    );
    // The second run resumes, serves the webhook and goes on reading.
    let port = free_port();
    let token = "0123456789abcdef-test-token";
    let log = dir.path().join("second.log");
    let mut cmd = run_cmd_serving(&with, &url, &ns, dir.path(), &format!("127.0.0.1:{port}"));
    cmd.env("IDEAFLOW_WEBHOOK_TOKENS", token);
    let mut child = spawn_logging(cmd, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let series = format!("ideaflow_source_lag_records{{partition=\"0\",source=\"{url}\"}}");
    let started = Instant::now();
    let lag = loop {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "run ended: {}",
            log_text()
        );
        let metrics = if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            get(port, "/metrics").1
        } else {
            String::new()
        };
        let lag = metric(&metrics, &series);
        if lag == Some(0.0) || started.elapsed() > Duration::from_secs(60) {
            break lag;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        log_text().contains("resuming from a checkpoint"),
        "{}",
        log_text()
    );
    let signal = r#"{"id":"after-resume","source":"webhook","captured_at":"2024-10-01T00:00:00Z","content":"A webhook idea after the resume"}"#;
    let (status, _, body) = post(port, Some(token), "application/json", signal);
    assert_eq!(status, 202, "the webhook refused a record: {body}");
    assert_eq!(lag, Some(0.0), "the lag once the stream is read");
}

/// A run resumed from a checkpoint whose Redis then comes back empty (no
/// persistence): the writer fills Redis again from what Postgres committed,
/// not from the epochs the resumed run has seen (it had seen none of the
/// first run's ideas). Every view ends as one run on the whole file gives
/// it; only the events announced before the refill are not rebuilt.
#[test]
fn a_redis_that_comes_back_empty_after_a_resume_is_refilled_whole() {
    let mut redis = OwnRedis::start();
    let stores = Stores {
        redis: redis.url(),
        ..Stores::shared()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = stream(dir.path(), 6_000, 40);
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let growing = dir.path().join("growing.jsonl");
    std::fs::write(&growing, lines[..lines.len() / 2].join("\n") + "\n").unwrap();
    let ns = unique("resumed_refill");
    let with = config(dir.path(), "with", Some(&dir.path().join("checkpoints")));
    let mut cmd = run_cmd(&with, &growing.to_string_lossy(), &ns, dir.path());
    cmd.env("IDEAFLOW_REDIS_URL", redis.url());
    run_to_end(cmd, &dir.path().join("first.log"));
    std::fs::write(&growing, lines.join("\n") + "\n").unwrap();
    // Paced: the second half (two days) takes about 12 s, so that Redis
    // restarts while the resumed run writes.
    let paced = dir.path().join("paced.toml");
    let text = std::fs::read_to_string(&with).unwrap() + "speed = \"14400\"\n";
    std::fs::write(&paced, text).unwrap();
    let log = dir.path().join("second.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = run_cmd_listening(&paced, &growing.to_string_lossy(), &ns, dir.path(), &listen);
    cmd.env("IDEAFLOW_REDIS_URL", redis.url());
    let mut child = spawn_logging(cmd, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    while !log_text().contains("caught up with the checkpoint") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the run did not resume: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.restart(Duration::from_secs(1), false);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the run ended before Redis restarted: {}",
        log_text()
    );
    // Ops see it: the refill is counted (read while the run still serves).
    let refilled = Instant::now();
    loop {
        let (_, metrics) = get(port, "/metrics");
        if metrics.contains("ideaflow_redis_refills_total 1") {
            break;
        }
        assert!(
            refilled.elapsed() < Duration::from_secs(60) && child.0.try_wait().unwrap().is_none(),
            "the refill was not counted: {metrics}\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.0.wait().unwrap();
    let log = log_text();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("resuming from a checkpoint"), "{log}");
    assert!(log.contains("Redis came back without the views"), "{log}");
    let reference = unique("resumed_refill_ref");
    let plain = config(dir.path(), "plain", None);
    let mut cmd = run_cmd(&plain, &growing.to_string_lossy(), &reference, dir.path());
    cmd.env("IDEAFLOW_REDIS_URL", redis.url());
    run_to_end(cmd, &dir.path().join("ref.log"));
    assert_same_but_events(&stores, &reference, &ns);
}

/// Every Postgres table and Redis key of `ns` as the one run on the whole
/// file (`reference`) left it, but the `{ns}:events` stream.
fn assert_same_but_events(stores: &Stores, reference: &str, ns: &str) {
    let (mut want, mut got) = (dump(reference, false, stores), dump(ns, false, stores));
    want.remove("redis events");
    got.remove("redis events");
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (key, rows) in &want {
        assert!(
            got[key] == *rows,
            "{key} differs from one run on the whole file"
        );
    }
}
