//! OTLP export of traces (opt-in), as the OpenTelemetry conventions configure it: on when
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or
//! `[telemetry] otlp_endpoint` in the file, for the base URL), off when `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none`. `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default,
//! or `http/json`), `…_HEADERS`, `…_TIMEOUT`, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` are read by the exporter and the SDK. Spans are batched on a
//! background thread; a collector that is down costs dropped spans, never a request.

use anyhow::Context;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use schemas::config::Config;

/// Ids of the span being exported, as `schemas::trace::export` chose them (the ids written
/// into `traceparent` headers); random otherwise.
#[derive(Debug, Default)]
struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        match schemas::trace::chosen_ids() {
            Some((trace, _)) => TraceId::from_bytes(trace),
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match schemas::trace::chosen_ids() {
            Some((_, span)) => SpanId::from_bytes(span),
            None => self.0.new_span_id(),
        }
    }
}

/// The installed exporter; flushes what is batched when dropped.
pub struct Tracing(Option<SdkTracerProvider>);

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            schemas::trace::set_exporting(false);
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "flushing the last spans failed");
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Installs OTLP export for `service` when configured (see the module docs).
pub fn install(config: Option<&Config>, service: &str) -> anyhow::Result<Tracing> {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let from_file = config.and_then(|c| c.telemetry.otlp_endpoint.clone());
    if disabled || !(from_env || from_file.is_some()) {
        return Ok(Tracing(None));
    }
    let mut exporter = SpanExporter::builder().with_http();
    if let (false, Some(base)) = (from_env, &from_file) {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter.build().context("OTLP span exporter")?;
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("hookstream-{service}"));
    }
    let provider = SdkTracerProvider::builder()
        .with_id_generator(ChosenIds::default())
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    schemas::trace::set_exporting(true);
    tracing::info!(service, "exporting traces over OTLP");
    Ok(Tracing(Some(provider)))
}
