//! `ideaflow top`: a running pipeline's sources and progress in the
//! terminal, refreshed every second (like `vector top`). It reads the
//! pipeline's `/metrics`, so it works against any running `ideaflow run`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::TopArgs;

/// One sample: metric name → (labels → value).
type Sample = BTreeMap<String, BTreeMap<String, f64>>;

pub fn run(args: TopArgs) -> Result<()> {
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let mut previous: Option<(Sample, std::time::Instant)> = None;
    loop {
        let text = fetch(&args.url)?;
        let sample = parse(&text);
        let now = std::time::Instant::now();
        let screen = render(
            &args.url,
            &sample,
            previous.as_ref().map(|(s, t)| (s, now.duration_since(*t))),
        );
        if args.once {
            print!("{screen}");
            return Ok(());
        }
        // Clear the screen, then draw.
        print!("\x1b[2J\x1b[H{screen}");
        std::io::stdout().flush()?;
        previous = Some((sample, now));
        std::thread::sleep(interval);
    }
}

/// `GET {url}/metrics` over HTTP/1.1 (plain http: the pipeline serves on
/// loopback or behind a proxy that terminates TLS).
fn fetch(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("--url {url:?}: give http://HOST:PORT (the pipeline's api.listen)")
    })?;
    let host = rest.trim_end_matches('/');
    let mut stream = TcpStream::connect(host)
        .with_context(|| format!("cannot connect to {host}: is `ideaflow run` serving there?"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{host} answered something that is not HTTP"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{host}/metrics answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// The Prometheus text format, reduced to name → labels → value.
fn parse(text: &str) -> Sample {
    let mut out: Sample = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        out.entry(name.to_owned())
            .or_default()
            .insert(labels.to_owned(), value);
    }
    out
}

fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split("\",")
        .filter_map(|kv| kv.split_once("=\""))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_end_matches('"'))
        .unwrap_or("")
}

fn get(sample: &Sample, name: &str, labels: &str) -> Option<f64> {
    sample.get(name)?.get(labels).copied()
}

fn total(sample: &Sample, name: &str) -> f64 {
    sample.get(name).map_or(0.0, |m| m.values().sum())
}

fn render(url: &str, s: &Sample, before: Option<(&Sample, Duration)>) -> String {
    let rate = |name: &str, labels: &str| -> String {
        match before {
            Some((b, dt)) if dt.as_secs_f64() > 0.0 => {
                let now = get(s, name, labels).unwrap_or(0.0);
                let then = get(b, name, labels).unwrap_or(0.0);
                format!("{:.0}/s", (now - then).max(0.0) / dt.as_secs_f64())
            }
            _ => "-".into(),
        }
    };
    let watermark = get(s, "ideaflow_watermark_seconds", "").unwrap_or(0.0) as i64;
    let wm = chrono::DateTime::from_timestamp(watermark, 0).map_or("-".into(), |t| t.to_rfc3339());
    let mut out = format!(
        "ideaflow top — {url}\n\nwatermark {wm}   epochs committed {}   in flight {}   sink pending {}   write failures {}\n\
         repeats ignored: signal {}  repoll {}  envelope {}\n\n",
        total(s, "ideaflow_epochs_committed_total"),
        total(s, "ideaflow_source_records_in_flight"),
        total(s, "ideaflow_sink_pending_changes"),
        total(s, "ideaflow_sink_write_failures"),
        get(s, "ideaflow_repeats_ignored_total", "kind=\"signal\"").unwrap_or(0.0),
        get(s, "ideaflow_repeats_ignored_total", "kind=\"repoll\"").unwrap_or(0.0),
        get(s, "ideaflow_repeats_ignored_total", "kind=\"envelope\"").unwrap_or(0.0),
    );
    out.push_str(&format!(
        "{:<48} {:>4} {:>3} {:>10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>20}\n",
        "SOURCE", "PART", "UP", "READ", "READ/S", "ACKED", "REDELIV", "IGNORED", "LAG", "WATERMARK"
    ));
    let up = s.get("ideaflow_source_up").cloned().unwrap_or_default();
    if let Some(read) = s.get("ideaflow_source_records_read_total") {
        for (labels, value) in read {
            let source = label(labels, "source");
            let partition = label(labels, "partition");
            let is_up = up
                .iter()
                .find(|(l, _)| label(l, "source") == source)
                .map_or("?", |(_, v)| if *v > 0.0 { "yes" } else { "NO" });
            let wm = get(s, "ideaflow_source_watermark_seconds", labels)
                .and_then(|w| chrono::DateTime::from_timestamp(w as i64, 0))
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
            out.push_str(&format!(
                "{:<48} {:>4} {:>3} {:>10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>20}\n",
                source,
                partition,
                is_up,
                value,
                rate("ideaflow_source_records_read_total", labels),
                get(s, "ideaflow_source_records_acked_total", labels).unwrap_or(0.0),
                get(s, "ideaflow_source_records_redelivered_total", labels).unwrap_or(0.0),
                get(s, "ideaflow_source_repeats_ignored_total", labels).unwrap_or(0.0),
                get(s, "ideaflow_source_lag_records", labels)
                    .map_or("-".into(), |l| format!("{l}")),
                wm
            ));
        }
    } else {
        out.push_str("(no bus sources yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_metrics_say() {
        let text = "# HELP x\nideaflow_source_records_read_total{partition=\"0\",source=\"redis://h:1?stream=s\"} 12\n\
                    ideaflow_source_records_acked_total{partition=\"0\",source=\"redis://h:1?stream=s\"} 10\n\
                    ideaflow_source_up{source=\"redis://h:1?stream=s\"} 1\n\
                    ideaflow_source_lag_records{partition=\"0\",source=\"redis://h:1?stream=s\"} 3\n\
                    ideaflow_source_repeats_ignored_total{partition=\"0\",source=\"redis://h:1?stream=s\"} 2\n\
                    ideaflow_epochs_committed_total 7\n";
        let s = parse(text);
        let screen = render("http://x", &s, None);
        assert!(screen.contains("redis://h:1?stream=s"), "{screen}");
        assert!(screen.contains("epochs committed 7"), "{screen}");
        let row = screen.lines().find(|l| l.starts_with("redis://")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..9], &["0", "yes", "12", "-", "10", "0", "2", "3"]);
    }
}
