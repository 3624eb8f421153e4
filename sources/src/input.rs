//! What `pipeline.inputs` and `-i` name: a file (plain or gzip), `-` for
//! standard input, or a bus as a URL:
//!
//! - `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[?group=G]`
//! - `redis://[USER:PASS@]HOST:PORT[/DB]?stream=S[&group=G][&consumer=C]`
//! - `fluvio://HOST:PORT/TOPIC`

use std::fmt;
use std::path::PathBuf;

/// The consumer group a bus input joins unless its URL names one.
pub const DEFAULT_GROUP: &str = "ideaflow";
/// The Redis Streams consumer name unless the URL names one.
pub const DEFAULT_CONSUMER: &str = "ideaflow";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("input {input:?}: {message}")]
pub struct InputError {
    pub input: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSpec {
    /// A file, or standard input (`-`).
    File(PathBuf),
    Kafka(KafkaSpec),
    RedisStream(RedisStreamSpec),
    Fluvio(FluvioSpec),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSpec {
    pub brokers: Vec<String>,
    pub topic: String,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStreamSpec {
    /// The server's URL without the stream options (credentials kept).
    pub server: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluvioSpec {
    pub endpoint: String,
    pub topic: String,
}

/// `scheme://authority/path?query`, split by hand: Kafka's authority is a
/// list of hosts, which URL parsers refuse.
struct Parts<'a> {
    authority: &'a str,
    path: &'a str,
    query: Vec<(String, String)>,
}

fn split<'a>(input: &str, rest: &'a str) -> Result<Parts<'a>, InputError> {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q),
        None => (rest, ""),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, p),
        None => (before_query, ""),
    };
    if authority.is_empty() {
        return Err(err(input, "names no HOST:PORT"));
    }
    Ok(Parts {
        authority,
        path,
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    })
}

fn err(input: &str, message: impl Into<String>) -> InputError {
    InputError {
        input: input.to_owned(),
        message: message.into(),
    }
}

/// Takes the query keys `allowed` and refuses any other (a typo would
/// otherwise silently mean the default).
fn options(
    input: &str,
    query: Vec<(String, String)>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, InputError> {
    for (k, _) in &query {
        if !allowed.contains(&k.as_str()) {
            return Err(err(
                input,
                format!("unknown option {k:?}; this input takes {allowed:?}"),
            ));
        }
    }
    Ok(query)
}

fn option(query: &[(String, String)], key: &str) -> Option<String> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn host_port(input: &str, hp: &str) -> Result<(), InputError> {
    let ok = hp
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(err(input, format!("{hp:?} is not HOST:PORT")))
    }
}

impl InputSpec {
    pub fn parse(input: &str) -> Result<InputSpec, InputError> {
        if let Some(rest) = input.strip_prefix("kafka://") {
            let p = split(input, rest)?;
            let brokers: Vec<String> = p.authority.split(',').map(str::to_owned).collect();
            for b in &brokers {
                host_port(input, b)?;
            }
            if p.path.is_empty() || p.path.contains('/') {
                return Err(err(input, "names no topic: kafka://HOST:PORT/TOPIC"));
            }
            let q = options(input, p.query, &["group"])?;
            return Ok(InputSpec::Kafka(KafkaSpec {
                brokers,
                topic: p.path.to_owned(),
                group: option(&q, "group").unwrap_or_else(|| DEFAULT_GROUP.into()),
            }));
        }
        if let Some(rest) = input.strip_prefix("redis://") {
            let p = split(input, rest)?;
            let host = p.authority.rsplit_once('@').map_or(p.authority, |(_, h)| h);
            host_port(input, host)?;
            if !p.path.is_empty() && p.path.parse::<u32>().is_err() {
                return Err(err(input, format!("database {:?} is not a number", p.path)));
            }
            let q = options(input, p.query, &["stream", "group", "consumer"])?;
            let stream = option(&q, "stream")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| err(input, "names no stream: redis://HOST:PORT[/DB]?stream=S"))?;
            return Ok(InputSpec::RedisStream(RedisStreamSpec {
                server: format!("redis://{}/{}", p.authority, p.path),
                stream,
                group: option(&q, "group").unwrap_or_else(|| DEFAULT_GROUP.into()),
                consumer: option(&q, "consumer").unwrap_or_else(|| DEFAULT_CONSUMER.into()),
            }));
        }
        if let Some(rest) = input.strip_prefix("fluvio://") {
            let p = split(input, rest)?;
            host_port(input, p.authority)?;
            if p.path.is_empty() || p.path.contains('/') {
                return Err(err(input, "names no topic: fluvio://HOST:PORT/TOPIC"));
            }
            options(input, p.query, &[])?;
            return Ok(InputSpec::Fluvio(FluvioSpec {
                endpoint: p.authority.to_owned(),
                topic: p.path.to_owned(),
            }));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(err(
                input,
                format!("unknown scheme {scheme:?}: inputs are files, `-`, kafka://, redis:// or fluvio://"),
            ));
        }
        if input.is_empty() {
            return Err(err(input, "is empty"));
        }
        Ok(InputSpec::File(PathBuf::from(input)))
    }

    /// Whether records come from a bus (acknowledged after commit), not a file.
    pub fn is_bus(&self) -> bool {
        !matches!(self, InputSpec::File(_))
    }
}

/// The name a source goes by in logs, metrics and progress rows: its URL
/// without credentials.
impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputSpec::File(p) => write!(f, "{}", p.display()),
            InputSpec::Kafka(k) => write!(f, "kafka://{}/{}", k.brokers.join(","), k.topic),
            InputSpec::RedisStream(r) => {
                let server = r.server.trim_start_matches("redis://");
                let server = server.rsplit_once('@').map_or(server, |(_, h)| h);
                write!(
                    f,
                    "redis://{}?stream={}",
                    server.trim_end_matches('/'),
                    r.stream
                )
            }
            InputSpec::Fluvio(x) => write!(f, "fluvio://{}/{}", x.endpoint, x.topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_urls() {
        assert_eq!(
            InputSpec::parse("a/b.jsonl").unwrap(),
            InputSpec::File("a/b.jsonl".into())
        );
        assert_eq!(InputSpec::parse("-").unwrap(), InputSpec::File("-".into()));
        assert_eq!(
            InputSpec::parse("kafka://h1:9092,h2:9093/signals?group=g").unwrap(),
            InputSpec::Kafka(KafkaSpec {
                brokers: vec!["h1:9092".into(), "h2:9093".into()],
                topic: "signals".into(),
                group: "g".into(),
            })
        );
        let r = InputSpec::parse("redis://:pw@127.0.0.1:6379/2?stream=s&consumer=c").unwrap();
        assert_eq!(
            r,
            InputSpec::RedisStream(RedisStreamSpec {
                server: "redis://:pw@127.0.0.1:6379/2".into(),
                stream: "s".into(),
                group: "ideaflow".into(),
                consumer: "c".into(),
            })
        );
        assert_eq!(r.to_string(), "redis://127.0.0.1:6379/2?stream=s");
        assert_eq!(
            InputSpec::parse("fluvio://127.0.0.1:9003/t").unwrap(),
            InputSpec::Fluvio(FluvioSpec {
                endpoint: "127.0.0.1:9003".into(),
                topic: "t".into()
            })
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("kafka://h1:9092", "no topic"),
            ("kafka://h1/t", "not HOST:PORT"),
            ("kafka://h1:9092/t?grop=x", "unknown option"),
            ("redis://127.0.0.1:6379", "no stream"),
            ("redis://127.0.0.1:6379/x?stream=s", "not a number"),
            ("nats://h:1/t", "unknown scheme"),
            ("fluvio:///t", "no HOST:PORT"),
        ] {
            let e = InputSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
