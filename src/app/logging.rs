//! Logs on stderr (text or JSON), and with `--features otel` trace export.

use std::cell::RefCell;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FormatFields;

use crate::config::{Effective, LogFormat};

/// Installs the global subscriber. Call inside the runtime: trace exporters
/// start tasks on it.
pub fn init(effective: &Effective) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_new(&effective.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_timer(CachedSystemTime)
        .with_ansi(ansi);
    let fmt = match effective.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        // The same text, without the styling machinery colour needs.
        LogFormat::Text if !ansi => fmt.fmt_fields(PlainFields).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    let registry = registry.with(otel::layer());
    registry.init();
}

/// Sends what is still buffered.
pub fn shutdown() {
    #[cfg(feature = "otel")]
    otel::shutdown();
}

/// The default timestamp (RFC 3339, UTC, microseconds) with the part up to
/// the second made once a second per thread, by the default itself: the
/// date and time of day cost ~2 300 instructions a line.
pub struct CachedSystemTime;

impl FormatTime for CachedSystemTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        thread_local! {
            static SECOND: RefCell<Option<(u64, String)>> = const { RefCell::new(None) };
        }
        let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
            return SystemTime.format_time(w);
        };
        let second = now.as_secs();
        SECOND.with(|cell| {
            let mut cached = cell.borrow_mut();
            if !matches!(cached.as_ref(), Some((s, _)) if *s == second) {
                *cached = second_prefix();
            }
            match cached.as_ref() {
                Some((s, prefix)) if *s == second => {
                    w.write_str(prefix)?;
                    write!(w, "{:06}Z", now.subsec_micros())
                }
                // The second turned meanwhile: the default, this once.
                _ => SystemTime.format_time(w),
            }
        })
    }
}

/// The default's timestamp for the current second, up to its fraction
/// (`2026-12-04T13:58:23.`), and that second; `None` if the clock kept
/// turning a second under it.
fn second_prefix() -> Option<(u64, String)> {
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    for _ in 0..3 {
        let before = second()?;
        let mut text = String::new();
        SystemTime.format_time(&mut Writer::new(&mut text)).ok()?;
        if second()? == before {
            text.truncate(text.rfind('.')? + 1);
            return Some((before, text));
        }
    }
    None
}

/// Text log fields without colour: what tracing-subscriber's default field
/// formatter writes with ANSI off, byte for byte, without its styling
/// machinery. That machinery (a styled name per field, even when the style
/// is empty) cost more per proxied request than the rest of the audit line
/// and its span together (callgrind: ~13 000 of ~124 000 instructions).
/// Messages and errors, which the default escapes and expands, are still
/// written by the default visitor.
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// `name=value`, a space before all but the first.
    fn write(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if !std::mem::take(&mut self.is_empty) {
            self.writer.write_char(' ')?;
        }
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')?;
        write!(self.writer, "{value:?}")
    }

    /// The default visitor's way, for what it escapes or expands.
    fn as_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.as_default(|d| d.record_str(field, value));
            }
            return;
        }
        self.record_debug(field, &value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.as_default(|d| d.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // `log.` fields are the `log` crate's metadata, written elsewhere.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        if name == "message" {
            self.as_default(|d| d.record_debug(field, value));
            return;
        }
        self.result = self.write(name, value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \"failure\"")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Every kind of field, in a span (made, then recorded into) and in
    /// events inside and outside it.
    fn log_everything() {
        let span = tracing::info_span!(
            "request",
            sandbox = %"default",
            method = %"GET",
            path = "/a \"quoted\"\n path",
            status = tracing::field::Empty,
        );
        span.record("status", 200u16);
        let _entered = span.enter();
        let error = Outer(std::io::Error::other("inner"));
        tracing::info!(
            target: "airlock::audit",
            mode = "intercept",
            port = 18443u16,
            upstream_ms = 12.5f64,
            negative = -3i64,
            big = u128::MAX,
            flag = true,
            debug = ?vec!["a", "b"],
            r#type = "raw",
            empty = "",
            error = &error as &(dyn std::error::Error + 'static),
            "request {} \u{1b}[31m", "done"
        );
        tracing::warn!("message only");
        tracing::warn!(unicode = "ünï\tcode", "");
    }

    fn formatted(plain: bool) -> String {
        let buffer = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .without_time();
        let subscriber = tracing_subscriber::registry();
        if plain {
            let subscriber = subscriber.with(layer.fmt_fields(PlainFields));
            tracing::subscriber::with_default(subscriber, log_everything);
        } else {
            let subscriber = subscriber.with(layer);
            tracing::subscriber::with_default(subscriber, log_everything);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_cached_timestamp_is_the_defaults() {
        let stamp = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        let mut compared = 0;
        for _ in 0..200 {
            let default = stamp(&SystemTime);
            let cached = stamp(&CachedSystemTime);
            let (d, c) = (
                default.rsplit_once('.').unwrap(),
                cached.rsplit_once('.').unwrap(),
            );
            // Equal to the second unless the second turned between the two.
            if d.0 == c.0 {
                compared += 1;
                assert_eq!(d.1.len(), c.1.len(), "{default} vs {cached}");
                assert!(c.1.ends_with('Z') && c.1[..6].bytes().all(|b| b.is_ascii_digit()));
            }
        }
        assert!(compared >= 199);
    }

    #[test]
    fn plain_fields_write_what_the_default_writes_without_colour() {
        let default = formatted(false);
        let plain = formatted(true);
        assert_eq!(plain, default);
        // It did see every kind of field.
        for part in [
            r#"path="/a \"quoted\"\n path""#,
            "status=200",
            "upstream_ms=12.5",
            "big=340282366920938463463374607431768211455",
            r#"debug=["a", "b"]"#,
            r#"type="raw""#,
            "error.sources=",
            "message only",
        ] {
            assert!(plain.contains(part), "{part} missing from:\n{plain}");
        }
    }
}

/// OpenTelemetry trace export, built with `--features otel` and switched on
/// by `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use tracing_subscriber::registry::LookupSpan;

    pub fn layer<S>(
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())?;
        let http = reqwest::Client::builder().no_proxy().build().ok()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| eprintln!("airlock: OpenTelemetry export disabled: {e}"))
            .ok()?;
        let provider = opentelemetry_sdk::trace::TracerProvider::builder()
            .with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_resource(opentelemetry_sdk::Resource::new(vec![
                opentelemetry::KeyValue::new("service.name", "airlock"),
            ]))
            .build();
        let tracer = provider.tracer("airlock");
        opentelemetry::global::set_tracer_provider(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub fn shutdown() {
        opentelemetry::global::shutdown_tracer_provider();
    }
}
