//! Helpers shared by the integration tests: where things are, and running the binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// The real model: scripts/setup.sh installs it (tests never use a stand-in).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("IDEAFLOW_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").exists(),
        "the model is not installed at {}: run scripts/setup.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

pub fn ideaflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ideaflow"));
    cmd.current_dir(repo_root());
    cmd.env("IDEAFLOW_MODEL_DIR", model_dir());
    cmd.env("IDEAFLOW_LOG", "warn");
    // Tests write into the test database (scripts/setup.sh creates it).
    if let Some(url) = std::env::var_os("IDEAFLOW_TEST_POSTGRES_URL") {
        cmd.env("IDEAFLOW_POSTGRES_URL", url);
    }
    cmd
}

/// Runs and asserts success, returning the output.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("ideaflow runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}\nstdout: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// `ideaflow run` for a bounded test: exits at the end of the input, serves
/// no API, and writes its views into a namespace of its own.
pub fn ideaflow_run() -> Command {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut cmd = ideaflow();
    cmd.args(["run", "--exit-at-end", "--listen", ""]).args([
        "--namespace",
        &format!(
            "t_run_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
    ]);
    cmd
}

/// A port nothing listens on, below Linux's ephemeral range (32768 and up):
/// a port the kernel handed out for `:0` can be taken again as the local
/// port of any outgoing connection (a test's Postgres or Redis client)
/// before the server that was to listen on it binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = 12_000u16;
    let base = 20_000 + (std::process::id() % span as u32) as u16;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = 20_000 + (base - 20_000 + offset) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path)
}

/// One HTTP/1.1 request with no body: the status and the body.
pub fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    raw_request(
        port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Sends `bytes` as they are (a request, well formed or not): the status and
/// the body of the answer.
pub fn raw_request(port: u16, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

/// A chunked body's content (chunk sizes in hex, each chunk then CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

/// Reads a `run`'s standard output (piped) until it says it serves the API
/// (its bounded inputs processed), within 300 s; returns the rest of it.
pub fn until_serving(
    server: &mut Server,
) -> std::io::Lines<std::io::BufReader<std::process::ChildStdout>> {
    use std::io::BufRead;
    let stdout = server
        .0
        .stdout
        .take()
        .expect("run's standard output is piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let started = std::time::Instant::now();
    loop {
        let line = lines.next().expect("run prints its progress").unwrap();
        if line.contains("serving the API") {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "run did not finish"
        );
    }
}

/// A child process killed when the test ends, pass or fail.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ideaflow gen` into `out`: `signals` over `days` from `seed`, with
/// marketplace listings and feedback when `feedback`.
pub fn generate_stream(out: &Path, signals: u32, seed: u64, days: u32, feedback: bool) {
    let mut cmd = ideaflow();
    cmd.arg("gen")
        .args(["--signals", &signals.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--days", &days.to_string()]);
    if feedback {
        cmd.arg("--feedback");
    }
    ok(cmd.arg("--out").arg(out));
}

/// Every file of a `replay --out` folder, by name.
pub fn out_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `ideaflow replay --input input --out out` with `extra` arguments; fails the
/// test if it fails.
pub fn replay(input: &Path, out: &Path, extra: &[&str]) -> Output {
    ok(ideaflow()
        .arg("replay")
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra))
}

/// Runs `sql` in the test database with psql (scripts/test.sh's server);
/// fails the test if it fails; returns its unaligned output.
pub fn psql(sql: &str) -> String {
    psql_at(
        &std::env::var("IDEAFLOW_TEST_POSTGRES_URL").expect("run scripts/test.sh"),
        sql,
    )
}

/// [`psql`] on the database at `url`.
pub fn psql_at(url: &str, sql: &str) -> String {
    let psql =
        Path::new(&std::env::var_os("IDEAFLOW_PG_BIN").expect("run scripts/test.sh")).join("psql");
    let out = Command::new(psql)
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Redis server of the test's own (a restart must not disturb other tests),
/// saving its data on shutdown so that it comes back with it.
pub struct OwnRedis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub server: std::process::Child,
}

impl OwnRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let server = Self::spawn(port, dir.path());
        OwnRedis { port, dir, server }
    }

    pub fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        let server = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Waits until `key` holds a value (a writer has committed something).
    pub fn wait_for(&self, key: &str) {
        let started = Instant::now();
        loop {
            let got = std::process::Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "get", key])
                .output()
                .unwrap();
            if !String::from_utf8_lossy(&got.stdout).trim().is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nothing in {key}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (saving its data when `keep`), leaves it down for
    /// `down`, and starts it again on the same port.
    pub fn restart(&mut self, down: Duration, keep: bool) {
        self.stop(keep);
        std::thread::sleep(down);
        self.start_again();
    }

    /// Stops the server, saving its data when `keep`.
    pub fn stop(&mut self, keep: bool) {
        let how = if keep { "save" } else { "nosave" };
        let cli = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", how])
            .output()
            .unwrap();
        assert!(cli.status.success() || cli.stdout.is_empty(), "{cli:?}");
        self.server.wait().unwrap();
    }

    /// Starts the stopped server again on its port, with its saved data.
    pub fn start_again(&mut self) {
        self.server = Self::spawn(self.port, self.dir.path());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A PostgreSQL cluster of the test's own (stopping it must not disturb
/// other tests), from the binaries scripts/setup.sh installed, run as the
/// unprivileged user it made when the test runs as root.
pub struct OwnPostgres {
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl OwnPostgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let chown = std::process::Command::new("chown")
                .arg(pg_os_user())
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chown.success(), "chown of the test's data folder failed");
        }
        let pg = OwnPostgres {
            port: free_port(),
            dir,
        };
        let data = pg.data();
        pg.pg_command("initdb")
            .args([
                "-U",
                "ideaflow",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .succeeds("initdb");
        pg.server_up();
        pg.psql("postgres", "CREATE DATABASE ideaflow")
            .stdout(Stdio::null())
            .succeeds("CREATE DATABASE");
        pg.psql("ideaflow", "CREATE EXTENSION vector")
            .stdout(Stdio::null())
            .succeeds("CREATE EXTENSION vector");
        pg
    }

    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("postgres://ideaflow@127.0.0.1:{}/ideaflow", self.port)
    }

    /// One of the server's programs, as the user it runs as.
    pub fn pg_command(&self, program: &str) -> std::process::Command {
        let bin = std::path::PathBuf::from(
            std::env::var("IDEAFLOW_PG_BIN")
                .expect("IDEAFLOW_PG_BIN is unset: run scripts/test.sh"),
        );
        let lib = bin.parent().unwrap().join("lib");
        let mut cmd = if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", &pg_os_user(), "--"]).arg(bin.join(program));
            c
        } else {
            std::process::Command::new(bin.join(program))
        };
        cmd.env("LD_LIBRARY_PATH", lib);
        cmd
    }

    /// psql running `sql` in `database`, stopping at the first error.
    pub fn psql(&self, database: &str, sql: &str) -> std::process::Command {
        let mut cmd = self.pg_command("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "ideaflow",
        ])
        .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql]);
        cmd
    }

    pub fn server_up(&self) {
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_wal_size=128MB",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdout(Stdio::null())
            .succeeds("pg_ctl start");
    }

    pub fn server_down(&self) {
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "fast", "stop"])
            .stdout(Stdio::null())
            .succeeds("pg_ctl stop");
    }

    /// Waits until the namespace `ns` has committed a batch.
    pub fn wait_for_progress(&self, ns: &str) {
        let started = Instant::now();
        loop {
            let got = self
                .psql(
                    "ideaflow",
                    &format!("SELECT count(*) FROM {ns}.pipeline_progress"),
                )
                .stderr(Stdio::null())
                .output()
                .unwrap();
            let n: u64 = String::from_utf8_lossy(&got.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            if n > 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no batch committed in {ns}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The OS user scripts/setup.sh runs PostgreSQL as.
pub fn pg_os_user() -> String {
    std::env::var("IDEAFLOW_PG_OS_USER").unwrap_or_else(|_| "ideaflow".into())
}

pub trait Succeeds {
    fn succeeds(&mut self, what: &str);
}

impl Succeeds for std::process::Command {
    fn succeeds(&mut self, what: &str) {
        let out = self.stderr(Stdio::piped()).output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A POST of `body` to the webhook (`/api/v1/signals`), with `token` as a
/// bearer token when given: the status, the head and the body of the answer.
pub fn post(
    port: u16,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST /api/v1/signals HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (status, head.to_owned(), body.to_owned())
}

/// The value of the metric line `name{labels}` (labels as rendered).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}
