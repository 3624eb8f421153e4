//! Structured logs with tracing: human-readable on a terminal, JSON when
//! IDEAFLOW_LOG_FORMAT=json (production). Logs go to standard error so that
//! commands can stream data on standard output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("IDEAFLOW_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rskafka=warn"));
    let json = std::env::var("IDEAFLOW_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
