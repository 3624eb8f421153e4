//! What crosses a process boundary in cluster mode.
//!
//! Timely encodes data bound for another process with bincode, which cannot
//! read back a [`Signal`]'s serde form: optional fields are left out of it
//! and `metadata` is free-form JSON, both of which need a self-describing
//! format. So the streams that reach other processes carry these wrappers,
//! whose encoding is JSON inside bincode for the signal and plain bincode
//! for the vector. Within a process timely moves values without encoding
//! them, so the wrappers cost nothing there.

use ideaflow_operators::idea_state::PreparedSignal;
use ideaflow_operators::Signal;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value sent as its JSON text (signals on their way to the embedding
/// workers, or to the writer on worker 0).
#[derive(Clone, Debug)]
pub struct Wire<T>(pub T);

impl<T: Serialize> Serialize for Wire<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_vec(&self.0).map_err(S::Error::custom)?;
        serializer.serialize_bytes(&json)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Wire<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Vec::<u8>::deserialize(deserializer)?;
        serde_json::from_slice(&json)
            .map(Wire)
            .map_err(D::Error::custom)
    }
}

/// A prepared signal on its way to the idea state: the signal as JSON, the
/// rest (its 384-d vector above all) as bincode.
#[derive(Clone, Debug)]
pub struct WirePrepared(pub PreparedSignal);

type PreparedFields = (
    Wire<Signal>,
    Vec<f32>,
    [u8; 16],
    bool,
    Vec<u32>,
    Option<(String, f32)>,
    Option<String>,
    f64,
);

impl Serialize for WirePrepared {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = &self.0;
        (
            Wire(&p.signal),
            &p.embedding[..],
            p.hash,
            p.legible,
            &p.signatures,
            &p.category,
            &p.anchor_class,
            p.rate,
        )
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WirePrepared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (signal, embedding, hash, legible, signatures, category, anchor_class, rate): PreparedFields =
            Deserialize::deserialize(deserializer)?;
        Ok(WirePrepared(PreparedSignal {
            signal: signal.0,
            embedding: embedding.into(),
            hash,
            legible,
            signatures,
            category,
            anchor_class,
            rate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use ideaflow_operators::{Engagement, Source};

    fn signal() -> Signal {
        let mut metadata = serde_json::Map::new();
        metadata.insert("flair".into(), serde_json::json!({"a": [1, null, "x"]}));
        Signal {
            id: "t3_1".into(),
            source: Source::Reddit,
            captured_at: Utc.with_ymd_and_hms(2024, 10, 1, 12, 0, 0).unwrap()
                + chrono::Duration::nanoseconds(123_456_789),
            content: "Cats in hats 🐱".into(),
            published_at: None,
            community: Some("r/cats".into()),
            topics: vec![],
            locale: None,
            engagement: Engagement {
                views: u64::MAX,
                likes: 3,
                ..Default::default()
            },
            url: None,
            metadata,
            embedding: Some(vec![0.1, -1.0e-30, f32::MIN_POSITIVE, 0.333_333_34]),
        }
    }

    /// Through bincode, as timely sends data to another process.
    fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
        let bytes = bincode::serialize(value).expect("encodes");
        bincode::deserialize(&bytes).expect("decodes")
    }

    #[test]
    fn a_bare_signal_does_not_survive_bincode_but_a_wire_one_does() {
        let s = signal();
        let bytes = bincode::serialize(&s).expect("encodes");
        assert!(bincode::deserialize::<Signal>(&bytes).is_err());
        let back = round_trip(&Wire(s.clone())).0;
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&s).unwrap()
        );
        assert_eq!(back.embedding, s.embedding, "floats exactly");
        assert_eq!(back.captured_at, s.captured_at);
    }

    #[test]
    fn a_prepared_signal_keeps_every_field() {
        let mut s = signal();
        let vector = s.embedding.take().unwrap();
        let p = PreparedSignal {
            signal: s,
            embedding: vector.clone().into(),
            hash: [7; 16],
            legible: true,
            signatures: vec![1, 2, 65_535],
            category: Some(("animals".into(), 0.42)),
            anchor_class: None,
            rate: 1.5e-3,
        };
        let back = round_trip(&WirePrepared(p.clone())).0;
        assert_eq!(&back.embedding[..], &vector[..]);
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&p).unwrap()
        );
    }
}
