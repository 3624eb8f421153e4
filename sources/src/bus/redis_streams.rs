//! A Redis stream read through a consumer group (`XREADGROUP`), entries
//! acknowledged (`XACK`) once the epochs holding them are committed.
//!
//! At start the group's delivery position is set back to where our own
//! positions say (`XGROUP SETID`; the beginning until checkpoints exist), so
//! that entries delivered by an earlier run, acknowledged or still pending,
//! are read again first, in order. Pending entries whose body was trimmed or
//! deleted (`XREADGROUP` answers them with no fields) are logged,
//! acknowledged and skipped. After a lost connection, the entries delivered
//! to this consumer but never received are read again from its pending list.

use std::time::Duration;

use redis::{Commands, Value};

use super::{Append, BusError, BusPosition, BusRecord, EntryId, Polled};
use crate::input::RedisStreamSpec;

/// The field of an entry holding the record.
pub const DATA_FIELD: &str = "data";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct StreamSource {
    spec: RedisStreamSpec,
    name: String,
    client: redis::Client,
    conn: Option<redis::Connection>,
    /// Set back to the start once per process.
    positioned: bool,
    /// Where reading starts: everything after it (`None`: the beginning).
    start_after: Option<EntryId>,
    /// The group's last delivered entry when this process started: entries
    /// up to it were delivered before.
    delivered_before: Option<EntryId>,
    /// The last entry received: after a reconnect, pending entries past it
    /// were delivered to us and lost on the way.
    last_received: Option<EntryId>,
    /// Read this consumer's pending entries after this id before new ones.
    recover_from: Option<EntryId>,
}

fn unreachable(name: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unreachable {
        source_name: name.to_owned(),
        message: format!("{e}; is the Redis server up and the URL right?"),
    }
}

fn client(spec: &RedisStreamSpec, name: &str) -> Result<redis::Client, BusError> {
    redis::Client::open(spec.server.as_str()).map_err(|e| BusError::Fatal {
        source_name: name.to_owned(),
        message: format!("invalid Redis URL: {e}; see the input's form in config/README.md"),
    })
}

/// A connection whose reads time out (a blocking read waits at most a
/// poll's wait, well under this).
fn connection(client: &redis::Client, name: &str) -> Result<redis::Connection, BusError> {
    let conn = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| unreachable(name, e))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| unreachable(name, e))?;
    Ok(conn)
}

/// Drops the stream's entries before `keep_from` (`XTRIM MINID`, exact):
/// what no checkpoint kept reads again. Returns how many went.
pub fn trim_before(
    spec: &RedisStreamSpec,
    name: &str,
    keep_from: EntryId,
) -> Result<u64, BusError> {
    let mut conn = connection(&client(spec, name)?, name)?;
    redis::cmd("XTRIM")
        .arg(&spec.stream)
        .arg("MINID")
        .arg(keep_from.to_string())
        .query(&mut conn)
        .map_err(|e| unreachable(name, e))
}

impl StreamSource {
    pub fn new(spec: RedisStreamSpec, name: String) -> Result<Self, BusError> {
        let client = client(&spec, &name)?;
        Ok(StreamSource {
            spec,
            name,
            client,
            conn: None,
            positioned: false,
            start_after: None,
            delivered_before: None,
            last_received: None,
            recover_from: None,
        })
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, BusError> {
        let name = self.name.clone();
        self.conn
            .as_mut()
            .ok_or_else(|| unreachable(&name, "not connected"))
    }

    fn group_info(&mut self) -> Result<Option<(EntryId, Option<u64>)>, BusError> {
        let (stream, group, name) = (
            self.spec.stream.clone(),
            self.spec.group.clone(),
            self.name.clone(),
        );
        let reply: redis::streams::StreamInfoGroupsReply = self
            .conn()?
            .xinfo_groups(&stream)
            .map_err(|e| unreachable(&name, e))?;
        Ok(reply.groups.into_iter().find(|g| g.name == group).map(|g| {
            (
                g.last_delivered_id.parse().unwrap_or_default(),
                g.lag.map(|l| l as u64),
            )
        }))
    }

    /// Acknowledges this consumer's pending entries that no read gives
    /// again: those whose body is gone (trimmed or deleted before they were
    /// acknowledged; logged) and those up to the resume point (a checkpoint
    /// holds them: they were in flight when an earlier run stopped).
    fn settle_pending(&mut self) -> Result<(), BusError> {
        let mut after = EntryId::default();
        loop {
            let entries = self.read_group(&after.to_string(), 500, None)?;
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.0;
            if let Some(start) = self.start_after {
                let held: Vec<EntryId> = entries
                    .iter()
                    .filter(|(id, fields)| fields.is_some() && *id <= start)
                    .map(|(id, _)| *id)
                    .collect();
                if !held.is_empty() {
                    self.xack(&held)?;
                }
            }
            let gone: Vec<EntryId> = entries
                .iter()
                .filter(|(_, fields)| fields.is_none())
                .map(|(id, _)| *id)
                .collect();
            if !gone.is_empty() {
                tracing::warn!(
                    source = %self.name,
                    entries = gone.len(),
                    first = %gone[0],
                    "pending stream entries were trimmed or deleted before they were processed; skipping them"
                );
                self.xack(&gone)?;
            }
        }
    }

    /// `XREADGROUP … STREAMS stream id`: (entry id, its fields, or `None`
    /// for a pending entry whose body is gone).
    #[allow(clippy::type_complexity)]
    fn read_group(
        &mut self,
        id: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<(EntryId, Option<Vec<(Vec<u8>, Vec<u8>)>>)>, BusError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.spec.stream).arg(id);
        let name = self.name.clone();
        let reply: Value = cmd.query(self.conn()?).map_err(|e| unreachable(&name, e))?;
        parse_read_reply(reply).map_err(|m| BusError::Fatal {
            source_name: name,
            message: m,
        })
    }

    fn xack(&mut self, ids: &[EntryId]) -> Result<(), BusError> {
        let (stream, group, name) = (
            self.spec.stream.clone(),
            self.spec.group.clone(),
            self.name.clone(),
        );
        for chunk in ids.chunks(1000) {
            let ids: Vec<String> = chunk.iter().map(EntryId::to_string).collect();
            let _: i64 = self
                .conn()?
                .xack(&stream, &group, &ids)
                .map_err(|e| unreachable(&name, e))?;
        }
        Ok(())
    }
}

/// The entries of an `XREADGROUP` reply for one stream. The reply is read by
/// hand: a pending entry whose body is gone comes as an id with nil fields.
#[allow(clippy::type_complexity)]
fn parse_read_reply(
    reply: Value,
) -> Result<Vec<(EntryId, Option<Vec<(Vec<u8>, Vec<u8>)>>)>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => return Err(format!("unexpected XREADGROUP reply {other:?}")),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            return Err("unexpected XREADGROUP stream entry".into());
        };
        let Some(Value::Array(entries)) = pair.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err("unexpected XREADGROUP entry".into());
            };
            if parts.is_empty() {
                continue;
            }
            let fields = if parts.len() > 1 { parts.pop() } else { None };
            let id = match parts.pop() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b)
                    .parse::<EntryId>()
                    .map_err(|e| e.to_string())?,
                Some(Value::SimpleString(s)) => s.parse::<EntryId>()?,
                other => return Err(format!("unexpected entry id {other:?}")),
            };
            let fields = match fields {
                None | Some(Value::Nil) => None,
                Some(Value::Array(kv)) => Some(
                    kv.chunks(2)
                        .filter_map(|c| match c {
                            [Value::BulkString(k), Value::BulkString(v)] => {
                                Some((k.clone(), v.clone()))
                            }
                            _ => None,
                        })
                        .collect(),
                ),
                Some(Value::Map(kv)) => Some(
                    kv.into_iter()
                        .filter_map(|(k, v)| match (k, v) {
                            (Value::BulkString(k), Value::BulkString(v)) => Some((k, v)),
                            _ => None,
                        })
                        .collect(),
                ),
                Some(other) => return Err(format!("unexpected entry fields {other:?}")),
            };
            out.push((id, fields));
        }
    }
    Ok(out)
}

impl super::Bus for StreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn connect(&mut self) -> Result<Vec<u32>, BusError> {
        let name = self.name.clone();
        self.conn = Some(connection(&self.client, &name)?);
        let (stream, group) = (self.spec.stream.clone(), self.spec.group.clone());
        let created: redis::RedisResult<()> =
            self.conn()?.xgroup_create_mkstream(&stream, &group, "0");
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(unreachable(&name, e)),
        }
        if !self.positioned {
            self.delivered_before = self.group_info()?.map(|(last, _)| last);
            self.settle_pending()?;
            let start = self.start_after.unwrap_or_default().to_string();
            // No ENTRIESREAD: Redis then counts the group's reads itself
            // where it can (from before the first entry, at the last one)
            // and calls the lag unknown in between, until the group reaches
            // the end. A count we gave (0) would be wrong at any resume
            // point past the start, or after a trim, and stay wrong.
            let _: () = redis::cmd("XGROUP")
                .arg("SETID")
                .arg(&stream)
                .arg(&group)
                .arg(&start)
                .query(self.conn()?)
                .map_err(|e| unreachable(&name, e))?;
            self.positioned = true;
            tracing::info!(source = %name, group = %group, consumer = %self.spec.consumer,
                from = %start, delivered_before = ?self.delivered_before.map(|d| d.to_string()),
                "reading the stream through its consumer group");
        } else {
            // Entries delivered to us whose reply was lost with the connection.
            self.recover_from = Some(self.last_received.unwrap_or_default());
        }
        Ok(vec![0])
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, BusError> {
        let (id, block) = match self.recover_from {
            Some(after) => (after.to_string(), None),
            None => (">".to_owned(), Some(wait)),
        };
        let entries = self.read_group(&id, max, block)?;
        if self.recover_from.is_some() && entries.is_empty() {
            self.recover_from = None;
        }
        let mut polled = Polled::default();
        let mut vanished = Vec::new();
        for (id, fields) in entries {
            self.last_received = Some(id);
            if self.recover_from.is_some() {
                self.recover_from = Some(id);
            }
            let Some(fields) = fields else {
                vanished.push(id);
                continue;
            };
            let payload = fields
                .into_iter()
                .find(|(k, _)| k == DATA_FIELD.as_bytes())
                .map(|(_, v)| v);
            polled.records.push(BusRecord {
                partition: 0,
                position: BusPosition::Entry(id),
                payload,
                redelivered: self.delivered_before.is_some_and(|d| id <= d),
            });
        }
        if !vanished.is_empty() {
            tracing::warn!(source = %self.name, entries = vanished.len(), first = %vanished[0],
                "pending stream entries were trimmed or deleted before they were processed; skipping them");
            self.xack(&vanished)?;
        }
        if polled.records.is_empty() && block.is_some() {
            polled.empty.push(0);
        }
        Ok(polled)
    }

    fn ack(&mut self, done: &[(u32, BusPosition)]) -> Result<(), BusError> {
        let ids: Vec<EntryId> = done
            .iter()
            .filter_map(|(_, p)| match p {
                BusPosition::Entry(e) => Some(*e),
                BusPosition::Offset(_) => None,
            })
            .collect();
        self.xack(&ids)
    }

    fn lag(&mut self) -> Vec<(u32, Option<u64>)> {
        match self.group_info() {
            Ok(Some((_, lag))) => vec![(0, lag)],
            _ => vec![(0, None)],
        }
    }

    fn resume_after(&mut self, positions: &std::collections::BTreeMap<u32, BusPosition>) {
        if let Some(BusPosition::Entry(e)) = positions.get(&0) {
            self.start_after = Some(*e);
        }
    }

    fn describe_position(&self, _partition: u32, position: BusPosition) -> String {
        format!("{}/{}", self.spec.stream, position)
    }
}

/// Appends records to a stream (`XADD stream * data …`), for the webhook endpoint.
pub struct StreamAppender {
    spec: RedisStreamSpec,
    name: String,
    client: redis::Client,
    conn: Option<redis::Connection>,
}

impl StreamAppender {
    pub fn new(spec: RedisStreamSpec, name: String) -> Result<Self, BusError> {
        let client = client(&spec, &name)?;
        Ok(StreamAppender {
            spec,
            name,
            client,
            conn: None,
        })
    }
}

impl Append for StreamAppender {
    fn name(&self) -> &str {
        &self.name
    }

    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<String>, BusError> {
        let name = self.name.clone();
        if self.conn.is_none() {
            self.conn = Some(connection(&self.client, &name)?);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for p in payloads {
            pipe.cmd("XADD")
                .arg(&self.spec.stream)
                .arg("*")
                .arg(DATA_FIELD)
                .arg(p.as_slice());
        }
        let conn = self.conn.as_mut().expect("connected above");
        match pipe.query::<Vec<String>>(conn) {
            Ok(ids) => Ok(ids),
            Err(e) => {
                self.conn = None;
                Err(unreachable(&name, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_vanished_bodies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Nil]),
                Value::Array(vec![
                    bulk("2-1"),
                    Value::Array(vec![bulk("data"), bulk("{}"), bulk("x"), bulk("y")]),
                ]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], (EntryId { ms: 1, seq: 0 }, None));
        assert_eq!(entries[1].0, EntryId { ms: 2, seq: 1 });
        assert_eq!(entries[1].1.as_ref().unwrap()[0].1, b"{}".to_vec());
        assert!(parse_read_reply(Value::Nil).unwrap().is_empty());
    }
}
