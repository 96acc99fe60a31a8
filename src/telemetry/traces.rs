//! Traces over OTLP/gRPC, when `IDENTITY_OTLP_ENDPOINT` names a collector. Each RPC's span
//! continues the caller's W3C `traceparent` and `tracestate`; beneath it are the handler, each
//! database call and the hash pool's wait for a thread and its run. Finished spans go to a
//! bounded queue (spans beyond it are dropped, a request never waits for it) that the SDK's own
//! thread exports in batches, each call bounded by the exporter's timeout.
//!
//! A server builds its own subscriber (a [`Dispatch`]) instead of adding a layer to the
//! process's: one process may run several servers with different endpoints (the tests do), and
//! the RPC layer runs each request under its server's subscriber. Without an endpoint none of
//! this exists: no exporter, no thread, and the RPC layer takes the path it always took.
//!
//! Only spans of this crate are exported, never log events: an event's text may name an email.
//! Span fields hold ids (user, session, request), method names and status codes, never an
//! email, password, token or key.

use std::{
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderMap;
use opentelemetry::{
    KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Status, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    resource::{EnvResourceDetector, TelemetryResourceDetector},
    trace::SdkTracerProvider,
};
use tonic::Code;
use tracing::{Dispatch, Span, subscriber::NoSubscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, Registry, filter::filter_fn, layer::SubscriberExt};

use crate::config::LogFormat;

/// The `service.name` resource attribute, unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "identity";
/// Longest `tracestate` carried on: W3C Trace Context asks a vendor to pass on at least 512
/// characters and lets it drop a longer one, which a stranger could otherwise make every span
/// carry.
const MAX_TRACESTATE_LEN: usize = 512;

/// The subscriber current outside traced requests (the process's log subscriber, or none),
/// taken when the first trace pipeline starts: see [`outside_traces`].
static PROCESS: OnceLock<Dispatch> = OnceLock::new();

/// The exporter could not be built from the endpoint (or an `OTEL_EXPORTER_OTLP_*` variable).
#[derive(Debug, thiserror::Error)]
#[error("traces: {0}")]
pub struct TracesError(String);

/// A server's trace pipeline: the provider to flush at the end, and the subscriber its RPCs run
/// under.
pub struct Traces {
    provider: SdkTracerProvider,
    rpc: RpcTracing,
}

impl Traces {
    /// Exports to `endpoint` (`http://` or `https://`, the OTLP/gRPC port of a collector). Must
    /// run within the Tokio runtime the server serves on: the exporter's channel lives there.
    pub fn start(endpoint: &str, log_format: LogFormat) -> Result<Self, TracesError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
        if endpoint.starts_with("https://") {
            let tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build().map_err(|error| TracesError(error.to_string()))?;
        PROCESS.get_or_init(|| tracing::dispatcher::get_default(Dispatch::clone));
        // The batch processor's queue size, delay and batch size come from `OTEL_BSP_*`, and the
        // sampler from `OTEL_TRACES_SAMPLER` (default: the caller's decision, else every trace).
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("identity"))
            .with_location(false)
            .with_threads(false)
            .with_filter(filter_fn(|meta| meta.is_span() && meta.target().starts_with("identity")));
        // Logs go where the process logs (nowhere in the tests, which set no subscriber).
        let logging = tracing::dispatcher::get_default(|current| !current.is::<NoSubscriber>());
        let logs = logging.then(|| super::log_layer(log_format));
        let dispatch = Dispatch::new(Registry::default().with(logs).with(otel));
        Ok(Self { provider, rpc: RpcTracing { dispatch } })
    }

    /// What the RPC layer needs to trace each request.
    pub fn rpc(&self) -> RpcTracing {
        self.rpc.clone()
    }

    /// Exports what is still queued (within `timeout`) and stops the export thread.
    pub async fn shutdown(self, timeout: Duration) {
        let provider = self.provider;
        // Blocks until the export thread is done, and that export runs on this runtime.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "traces: the last spans may not have been exported"),
            Err(error) => tracing::warn!(%error, "traces: shutdown failed"),
        }
    }
}

/// `service.name`, `service.version` and `service.instance.id` (new for each start, as the
/// semantic conventions suggest for a process that keeps no identity), then what
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` set, which win.
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", SERVICE_NAME),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .with_detectors(&[Box::new(TelemetryResourceDetector), Box::new(EnvResourceDetector::new())]);
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME").ok().filter(|name| !name.is_empty()) {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The subscriber a server's RPCs run under when it exports traces.
#[derive(Clone)]
pub struct RpcTracing {
    dispatch: Dispatch,
}

impl RpcTracing {
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// `future` (an RPC's handling), run under this server's trace subscriber.
    pub fn run<F: Future>(&self, future: F) -> UnderDispatch<F> {
        UnderDispatch { inner: Some(Box::pin(future)), dispatch: self.dispatch.clone() }
    }

    /// The server span of one RPC, named `package.Service/Method` as the RPC conventions say,
    /// continuing the trace the caller's metadata names (a new trace when it names none or a
    /// malformed one). `method` is the served method's path (bounded: unknown paths are one
    /// label), and the fields are the ones the log lines carry.
    pub fn rpc_span(&self, headers: &HeaderMap, method: &'static str, request_id: &str, peer: &str) -> Span {
        let name = method.strip_prefix('/').unwrap_or(method);
        let span = tracing::dispatcher::with_default(&self.dispatch, || {
            tracing::info_span!("rpc", otel.name = name, otel.kind = "server", method, request_id, peer)
        });
        let parent = TraceContextPropagator::new().extract(&Metadata(headers));
        // Fails only for a span this subscriber did not make, which this one is not.
        let _ = span.set_parent(parent);
        let (service, method) = name.split_once('/').unwrap_or((name, ""));
        span.set_attribute("rpc.system", "grpc");
        span.set_attribute("rpc.service", service);
        span.set_attribute("rpc.method", method);
        span
    }
}

/// Records the status an RPC ended with on its span: the code always, and an error status for
/// the codes the RPC conventions count as a server's failure (a caller's mistake is not one).
pub fn record_rpc_status(span: &Span, code: Code) {
    span.set_attribute("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(""));
    }
}

/// Runs `work` (given `span`) with `span`'s subscriber as this thread's default, and drops
/// `span` there too. For work handed to another thread (the hash pool's), whose default is not
/// the request's: spans made in `work` must be made by the request's subscriber, and a span
/// closed on this thread closes its parent through the default subscriber (tracing-subscriber's
/// registry does so), which must be the one that made it.
pub fn with_span_subscriber<T>(span: Span, work: impl FnOnce(&Span) -> T) -> T {
    match span.with_subscriber(|(_, dispatch)| dispatch.clone()) {
        Some(dispatch) => tracing::dispatcher::with_default(&dispatch, move || {
            let outcome = work(&span);
            drop(span);
            outcome
        }),
        None => work(&span),
    }
}

/// The subscriber for work beneath `span` that a library may hand to a thread of its own with
/// the current span (sqlx's SQLite worker does): the process's when `span` is traced, so that
/// no span of a server's trace subscriber ends on such a thread (see [`with_span_subscriber`]),
/// else the current one. The library's own log events then reach the process's log as always.
pub fn outside_traces(span: &Span) -> Dispatch {
    match PROCESS.get() {
        Some(process) if !span.is_disabled() => process.clone(),
        _ => tracing::dispatcher::get_default(Dispatch::clone),
    }
}

/// `future`, polled and dropped under `dispatch`: a request dropped unfinished (its caller went
/// away) closes its spans through the subscriber that made them, as [`with_span_subscriber`]
/// explains.
pub struct UnderDispatch<F> {
    inner: Option<Pin<Box<F>>>,
    dispatch: Dispatch,
}

impl<F: Future> Future for UnderDispatch<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Pending };
        let outcome = tracing::dispatcher::with_default(&this.dispatch, || inner.as_mut().poll(cx));
        if outcome.is_ready() {
            let done = this.inner.take();
            tracing::dispatcher::with_default(&this.dispatch, move || drop(done));
        }
        outcome
    }
}

impl<F> Drop for UnderDispatch<F> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::dispatcher::with_default(&self.dispatch, move || drop(inner));
        }
    }
}

/// The name of the function whose path `type_name` is (as `std::any::type_name` spells a local
/// item in it: `crate::module::<impl Type>::function::{{closure}}::item`): `function`.
pub fn function_name(type_name: &'static str) -> &'static str {
    let mut path = type_name.rsplit_once("::").map_or(type_name, |(path, _item)| path);
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path.rsplit_once("::").map_or(path, |(_, name)| name)
}

/// gRPC metadata as the propagator reads it; an over-long `tracestate` reads as absent.
struct Metadata<'a>(&'a HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?.to_str().ok()?;
        (key != "tracestate" || value.len() <= MAX_TRACESTATE_LEN).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_a_local_item_is_in_is_named() {
        fn here() {}
        assert_eq!(
            function_name(std::any::type_name_of_val(&here)),
            "the_function_a_local_item_is_in_is_named"
        );
        assert_eq!(
            function_name("identity::store::users::<impl identity::store::Store>::find::{{closure}}::here"),
            "find"
        );
        assert_eq!(function_name("here"), "here");
    }

    #[test]
    fn a_tracestate_past_the_bound_is_not_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap(),
        );
        headers.insert("tracestate", "a=1".parse().unwrap());
        assert_eq!(Metadata(&headers).get("tracestate"), Some("a=1"));
        headers.insert("tracestate", format!("a={}", "x".repeat(MAX_TRACESTATE_LEN)).parse().unwrap());
        assert_eq!(Metadata(&headers).get("tracestate"), None);
        assert!(Metadata(&headers).get("traceparent").is_some());
    }
}
