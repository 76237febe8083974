//! Logs on stderr (text or JSON), and with `--features otel` trace export.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
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
