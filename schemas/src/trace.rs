//! W3C Trace Context through the pipeline: one trace per webhook, from the provider's request
//! to the customer's endpoint.
//!
//! * The ingest continues the request's `traceparent` (or starts a new trace when it has none
//!   or an invalid one) with a span of its own, and writes that span's context into the `raw`
//!   record's `traceparent` header.
//! * The processor continues it with a span per emitted event, written into the `events`
//!   record's `traceparent` header. Its span id is derived from the raw record's position
//!   ([`TraceParent::derived`]), so a replay or a restart re-emits identical headers.
//! * `deliver` continues it with a span per attempt and sends that context to the endpoint in
//!   the `traceparent` request header.
//!
//! The headers are always written. The spans are exported only when OTLP export is on
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, docs/operations.md): [`exporting`] tells, and [`export`]
//! records a finished span through the OpenTelemetry API (a no-op without an SDK). A
//! `traceparent` whose sampled flag is off is continued but not exported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use sha2::{Digest, Sha256};

/// The header name, on HTTP requests and on `raw` and `events` records.
pub const HEADER: &str = "traceparent";

/// A trace context: the trace, the span that is the parent of the next hop, and whether the
/// trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value (W3C Trace Context level 1): `00-<32 hex>-<16 hex>-<2 hex>`;
    /// a later version is read by its first four fields. None for anything else (upper-case
    /// hex, all-zero ids, version `ff`).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let bytes = text.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
            return None;
        }
        let version = &text[0..2];
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        let parts: Vec<&str> = text[..55].split('-').collect();
        let [v, trace, span, flags] = parts.as_slice() else {
            return None;
        };
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if ![*v, *trace, *span, *flags].iter().all(|s| lower_hex(s)) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// A new sampled trace with a random root span (one read of the OS random source).
    pub fn root() -> Self {
        let ids: [u8; 24] = random();
        let (mut trace_id, mut span_id) = ([0u8; 16], [0u8; 8]);
        trace_id.copy_from_slice(&ids[..16]);
        span_id.copy_from_slice(&ids[16..]);
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Self::root();
        }
        Self {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    /// The context of a new span of this trace, child of `self`, with a random id.
    pub fn child(&self) -> Self {
        Self {
            span_id: random(),
            ..*self
        }
    }

    /// The context of a new span of this trace whose id is derived from `self` and `seed`:
    /// the same inputs give the same span (the processor's replays emit identical headers).
    pub fn derived(&self, seed: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(self.trace_id)
            .chain_update(self.span_id)
            .chain_update(seed)
            .finalize();
        let mut span_id: [u8; 8] = digest[..8].try_into().expect("8 bytes");
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Self { span_id, ..*self }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    while bytes.iter().all(|b| *b == 0) {
        getrandom::fill(&mut bytes).expect("the OS random source works");
    }
    bytes
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The ids of the span [`export`] is building on this thread: the SDK takes them from
    /// its id generator ([`chosen_ids`]), so the exported span has the ids already written
    /// downstream.
    static CHOSEN: std::cell::Cell<Option<([u8; 16], [u8; 8])>> = const { std::cell::Cell::new(None) };
}

/// For the SDK's id generator: the trace and span ids of the span being exported on this
/// thread, if any (else the generator picks random ones).
pub fn chosen_ids() -> Option<([u8; 16], [u8; 8])> {
    CHOSEN.get()
}

/// Called once an OpenTelemetry SDK is installed as the global tracer provider.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A finished span to export.
pub struct Span<'a> {
    pub name: &'static str,
    pub kind: SpanKind,
    /// This span's own context (its id is the one written downstream).
    pub context: TraceParent,
    /// Its parent: the upstream hop's context, if the trace did not start here.
    pub parent: Option<TraceParent>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: &'a [(&'static str, String)],
    /// Marks the span as an error (with this description).
    pub error: Option<String>,
}

pub use opentelemetry::trace::SpanKind as Kind;

/// Exports `span` through the global tracer, when [`exporting`] and the trace is sampled.
pub fn export(span: Span<'_>) {
    if !exporting() || !span.context.sampled {
        return;
    }
    let tracer = opentelemetry::global::tracer("hookstream");
    let parent = match span.parent {
        Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            if parent.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let builder = tracer
        .span_builder(span.name)
        .with_kind(span.kind)
        .with_start_time(span.start)
        .with_attributes(
            span.attributes
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect::<Vec<_>>(),
        );
    CHOSEN.set(Some((span.context.trace_id, span.context.span_id)));
    let mut started = tracer.build_with_context(builder, &parent);
    CHOSEN.set(None);
    if let Some(description) = span.error {
        started.set_status(opentelemetry::trace::Status::error(description));
    }
    started.end_with_timestamp(span.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert!(parsed.sampled);
        assert_eq!(
            hex::encode(parsed.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.header(), EXAMPLE);
        let unsampled = EXAMPLE.replace("-01", "-00");
        assert!(!TraceParent::parse(unsampled.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn hostile_values_are_refused_never_a_panic() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_span = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = EXAMPLE.to_uppercase();
        let long_v0 = format!("{EXAMPLE}-extra");
        for bad in [
            "",
            "00",
            zero_trace,
            zero_span,
            &upper,
            &long_v0,
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(TraceParent::parse(&[0xff, 0xfe, 0x00]), None);
        for len in 0..EXAMPLE.len() {
            assert_eq!(TraceParent::parse(&EXAMPLE.as_bytes()[..len]), None);
        }
        let future = format!("01{}-whatever", &EXAMPLE[2..]);
        assert!(
            TraceParent::parse(future.as_bytes()).is_some(),
            "later versions by their first fields"
        );
    }

    #[test]
    fn children_keep_the_trace_and_derived_ids_repeat() {
        let parent = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(parent.derived(b"raw/1/42"), parent.derived(b"raw/1/42"));
        assert_ne!(parent.derived(b"raw/1/42"), parent.derived(b"raw/1/43"));
        let root = TraceParent::root();
        assert!(root.sampled && root.trace_id != [0; 16] && root.span_id != [0; 8]);
        assert_ne!(root.trace_id, TraceParent::root().trace_id);
    }
}
