//! Logs on stderr (text or JSON), and with `--features otel` trace export.

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
