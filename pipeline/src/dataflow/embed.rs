//! The embedding operator: signals without an embedding get one from the model.
//!
//! Everything pending when the operator runs is embedded together (the
//! embedder sorts by length and batches), never one forward pass per record
//! when more are waiting. Signals are spread over workers by content hash, so
//! identical texts meet the same worker's cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ideaflow_operators::content_hash::content_hash_bytes;
use ideaflow_operators::embed::{Embedder, EmbedderOptions, ModelFiles};
use ideaflow_operators::Signal;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

pub fn embed_signals<'scope>(
    signals: Stream<'scope, u64, Vec<Signal>>,
    model: Arc<ModelFiles>,
    options: EmbedderOptions,
    embedded: Arc<AtomicU64>,
) -> Stream<'scope, u64, Vec<Signal>> {
    let route = |s: &Signal| {
        u64::from_le_bytes(
            content_hash_bytes(&s.content)[..8]
                .try_into()
                .expect("8 bytes"),
        )
    };
    signals
        .unary(Exchange::new(route), "Embed", move |_cap, _info| {
            // Loaded on first need: streams that carry their vectors never pay for the model.
            let mut embedder: Option<Embedder> = None;
            let mut pending: Vec<(Capability<u64>, Vec<Signal>)> = Vec::new();
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let mut batch = Vec::new();
                        for d in data {
                            batch.append(d);
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
                    let model = embedder.get_or_insert_with(|| {
                        Embedder::load(&model, options.clone())
                            .expect("model files were validated at startup")
                    });
                    model
                        .embed(&texts)
                        .expect("embedding a validated signal cannot fail")
                }
                .into_iter();
                for (cap, mut batch) in pending.drain(..) {
                    for s in batch.iter_mut().filter(|s| s.embedding.is_none()) {
                        s.embedding = vectors.next();
                    }
                    embedded.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    output.session(&cap).give_iterator(batch.into_iter());
                }
            }
        })
        .container::<Vec<Signal>>()
}
