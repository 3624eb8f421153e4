//! The embedding operator: signals without an embedding get one from the model.
//!
//! Everything pending when the operator runs is embedded together (the
//! embedder sorts by length and batches), never one forward pass per record
//! when more are waiting. Signals are spread over workers by a hash of their
//! exact text, as the embedding cache keys them, so identical texts meet the
//! same worker's cache (the content hash would do too, but its NFKC
//! normalization is too dear to run on the sending worker). With more than
//! one worker, worker 0 is left out: it owns the idea state, the dataflow's
//! serial part, so everything that can run elsewhere (embedding, then the
//! preparation that follows on the same worker) does.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use ideaflow_operators::Signal;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use super::wire::Wire;
use crate::model_files::{LazyEmbedder, ModelSource};

pub fn embed_signals<'scope>(
    signals: Stream<'scope, u64, Vec<Signal>>,
    model: ModelSource,
) -> Stream<'scope, u64, Vec<Signal>> {
    let peers = signals.scope().peers() as u64;
    let route =
        move |s: &Signal| off_the_owner(FixedState::with_seed(0x1dea).hash_one(&s.content), peers);
    signals
        .map(Wire)
        .unary(
            Exchange::new(move |w: &Wire<Signal>| route(&w.0)),
            "Embed",
            move |_cap, _info| {
                // Loaded on first need: streams that carry their vectors never pay for the model.
                let mut embedder = LazyEmbedder::new(model);
                let mut pending: Vec<(Capability<u64>, Vec<Signal>)> = Vec::new();
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        if let Some(cap) = cap.retain_least(output.output_index()) {
                            let mut batch = Vec::new();
                            for d in data {
                                batch.extend(d.drain(..).map(|w| w.0));
                            }
                            pending.push((cap, batch));
                        }
                    });
                    if pending.is_empty() {
                        return;
                    }
                    let texts: Vec<&str> = pending
                        .iter()
                        .flat_map(|(_, b)| b.iter())
                        .filter(|s| s.embedding.is_none())
                        .map(|s| s.content.as_str())
                        .collect();
                    let mut vectors = if texts.is_empty() {
                        Vec::new()
                    } else {
                        // The model loaded at startup; failing now means its
                        // files changed under the run, which no record can fix.
                        let model = embedder.get().unwrap_or_else(|e| panic!("{e:#}"));
                        model
                            .embed(&texts)
                            .expect("embedding a validated signal cannot fail")
                    }
                    .into_iter();
                    for (cap, mut batch) in pending.drain(..) {
                        for s in batch.iter_mut().filter(|s| s.embedding.is_none()) {
                            s.embedding = vectors.next();
                        }
                        output.session(&cap).give_iterator(batch.into_iter());
                    }
                }
            },
        )
        .container::<Vec<Signal>>()
}

/// A worker for `hash` among `peers`, never worker 0 when there are others.
fn off_the_owner(hash: u64, peers: u64) -> u64 {
    if peers > 1 {
        1 + hash % (peers - 1)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::off_the_owner;

    #[test]
    fn only_a_lone_worker_embeds_on_the_owner() {
        assert_eq!(off_the_owner(12345, 1), 0);
        for h in 0..100 {
            assert_eq!(off_the_owner(h, 2), 1);
            assert!((1..4).contains(&off_the_owner(h, 4)));
        }
        let spread: std::collections::BTreeSet<u64> =
            (0..100).map(|h| off_the_owner(h, 4)).collect();
        assert_eq!(spread.len(), 3);
    }
}
