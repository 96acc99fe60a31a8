//! Logs and traces. Logs: the tracing subscriber `main` sets up once; `RUST_LOG` filters
//! (default `info`). Traces: [`Traces`], one per server, when `IDENTITY_OTLP_ENDPOINT` is set.

mod traces;

pub use traces::{
    RpcTracing, Traces, TracesError, UnderDispatch, function_name, outside_traces, record_rpc_status,
    with_span_subscriber,
};

use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, fmt, layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt,
};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(log_layer(format)).try_init();
}

/// Log lines on stderr in `format`, filtered by `RUST_LOG` (default `info`). Also part of the
/// traced requests' subscriber (see [`Traces`]), so their lines read as every other line does.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    }
}
