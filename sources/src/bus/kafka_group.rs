//! A consumer group's committed offsets on the broker, for ops' monitoring
//! (lag per group in the usual Kafka tools) and to tell which records a run
//! reads again: committed with `OffsetCommit` as a simple (unassigned)
//! consumer once the sinks committed the records' epochs, read with
//! `OffsetFetch` at start. Never where a restart resumes: our positions are
//! in the sinks' progress rows. rskafka, which reads the topic, has no group
//! API, so these two requests are sent here with `kafka-protocol`'s codecs.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Versions every broker since Kafka 2.x answers (Kafka 4 dropped older ones).
const FIND_COORDINATOR_VERSION: i16 = 1;
const OFFSET_COMMIT_VERSION: i16 = 2;
const OFFSET_FETCH_VERSION: i16 = 1;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct GroupOffsets {
    brokers: Vec<String>,
    group: String,
    coordinator: Option<TcpStream>,
    correlation: i32,
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl GroupOffsets {
    pub fn new(brokers: Vec<String>, group: String) -> Self {
        GroupOffsets {
            brokers,
            group,
            coordinator: None,
            correlation: 0,
        }
    }

    async fn call<R: Request>(
        stream: &mut TcpStream,
        correlation: i32,
        request: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(text("ideaflow")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| format!("encoding a request: {e}"))?;
        let exchange = async {
            stream.write_i32(body.len() as i32).await?;
            stream.write_all(&body).await?;
            let len = stream.read_i32().await?;
            let mut answer = vec![0u8; len.max(0) as usize];
            stream.read_exact(&mut answer).await?;
            std::io::Result::Ok(answer)
        };
        let answer = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| "the broker did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut buf = bytes::Bytes::from(answer);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| format!("decoding an answer: {e}"))?;
        if header.correlation_id != correlation {
            return Err("the broker answered another request".into());
        }
        let response = R::Response::decode(&mut buf, version)
            .map_err(|e| format!("decoding an answer: {e}"))?;
        debug_assert!(!buf.has_remaining() || buf.remaining() > 0);
        Ok(response)
    }

    fn next_correlation(&mut self) -> i32 {
        self.correlation = self.correlation.wrapping_add(1);
        self.correlation
    }

    /// The group coordinator's connection, found through the first broker that answers.
    async fn coordinator(&mut self) -> Result<&mut TcpStream, String> {
        if self.coordinator.is_none() {
            let mut last = String::from("no broker");
            let mut found = None;
            for b in self.brokers.clone() {
                let Ok(Ok(mut s)) = tokio::time::timeout(TIMEOUT, TcpStream::connect(&b)).await
                else {
                    last = format!("cannot connect to {b}");
                    continue;
                };
                let request = FindCoordinatorRequest::default()
                    .with_key(text(&self.group))
                    .with_key_type(0);
                let c = self.next_correlation();
                match Self::call(&mut s, c, &request, FIND_COORDINATOR_VERSION).await {
                    Ok(r) if r.error_code == 0 => {
                        found = Some(format!("{}:{}", r.host.as_str(), r.port));
                        break;
                    }
                    Ok(r) => last = format!("FindCoordinator error code {}", r.error_code),
                    Err(e) => last = e,
                }
            }
            let address = found.ok_or(last)?;
            let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&address))
                .await
                .map_err(|_| format!("cannot connect to the coordinator {address}"))?
                .map_err(|e| format!("cannot connect to the coordinator {address}: {e}"))?;
            self.coordinator = Some(stream);
        }
        Ok(self.coordinator.as_mut().expect("set above"))
    }

    /// Commits, for `topic`, the next offset to read of each partition.
    pub async fn commit(&mut self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), String> {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(text(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    next.iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                )]);
        let c = self.next_correlation();
        let stream = self.coordinator().await?;
        let answer = Self::call(stream, c, &request, OFFSET_COMMIT_VERSION).await;
        let answer = answer.inspect_err(|_| self.coordinator = None)?;
        let failed: Vec<(i32, i16)> = answer
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.error_code != 0)
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            self.coordinator = None;
            Err(format!(
                "OffsetCommit refused for (partition, error code) {failed:?}"
            ))
        }
    }

    /// The group's committed offsets of `topic`'s `partitions` (absent: none).
    pub async fn fetch(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, String> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(&self.group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partition_indexes(partitions.to_vec())]));
        let c = self.next_correlation();
        let stream = self.coordinator().await?;
        let answer = Self::call(stream, c, &request, OFFSET_FETCH_VERSION).await;
        let answer = answer.inspect_err(|_| self.coordinator = None)?;
        Ok(answer
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.error_code == 0 && p.committed_offset >= 0)
            .map(|p| (p.partition_index, p.committed_offset))
            .collect())
    }
}
