//! Writes each completed epoch's signals to JSON Lines on worker 0, sorted by
//! (captured_at, source, id): the file is the same whatever the worker count
//! or arrival order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ideaflow_operators::Signal;
use ideaflow_sinks::JsonlWriter;

use super::wire::Wire;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

pub fn write_signals<'scope>(
    signals: Stream<'scope, u64, Vec<Signal>>,
    mut writer: Option<JsonlWriter>,
    sunk: Arc<AtomicU64>,
) -> Stream<'scope, u64, Vec<()>> {
    signals
        .map(Wire)
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_| 0),
            "JsonlSink",
            move |_cap, _info| {
                let mut by_epoch: BTreeMap<u64, Vec<Signal>> = BTreeMap::new();
                move |(input, frontier), _output| {
                    input.for_each_stamp(|cap, data| {
                        let epoch = by_epoch
                            .entry(*cap.least().expect("a totally ordered time"))
                            .or_default();
                        for d in data {
                            epoch.extend(d.drain(..).map(|w| w.0));
                        }
                    });
                    let done: Vec<u64> = by_epoch
                        .keys()
                        .copied()
                        .take_while(|t| !frontier.less_equal(t))
                        .collect();
                    for t in done {
                        let mut signals = by_epoch.remove(&t).unwrap_or_default();
                        signals.sort_by(|a, b| {
                            (a.captured_at, a.source, &a.id).cmp(&(b.captured_at, b.source, &b.id))
                        });
                        let n = signals.len() as u64;
                        if let Some(w) = writer.as_mut() {
                            for s in &signals {
                                if let Err(e) = w.write(s) {
                                    tracing::error!(error = %e, "output write failed");
                                }
                            }
                            let _ = w.flush();
                        }
                        sunk.fetch_add(n, Ordering::Relaxed);
                    }
                }
            },
        )
}
