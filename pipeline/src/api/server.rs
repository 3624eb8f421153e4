//! The HTTP/1.1 server under the router, configured as axum's `serve`
//! cannot be: a client that half-closes its side after sending (`nc -N`,
//! HTTP/1.0 scripts) still gets every answer, pipelined requests are all
//! answered, a request whose headers do not arrive within
//! `api.header_read_timeout_secs` is dropped (the same timer closes idle
//! keep-alive connections), and a stop lets answers in progress finish for
//! a moment.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounterVec;
use tokio::net::TcpListener;

use super::protocol_errors::EnvelopeOnParseErrors;

/// How long a stop waits for answers in progress (a live `stream` never
/// ends by itself).
const DRAIN_AT_MOST: Duration = Duration::from_secs(5);

/// How connections are served.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    /// Headers not read within this: the connection is closed; also the
    /// longest an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Counts the answers hyper gives before the router sees a request
    /// (malformed, oversized): `route="unparsed"`.
    pub unparsed: Option<IntCounterVec>,
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    tracing::info!(%listen, "HTTP API and dashboard at http://{listen}/");
    let mut http = hyper::server::conn::http1::Builder::new();
    http.half_close(true)
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(EnvelopeOnParseErrors::new(
            stream,
            settings.unparsed.clone(),
        ));
        let connection = http.serve_connection(io, TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_AT_MOST, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("answers still in progress at the stop were cut");
    }
    Ok(())
}
