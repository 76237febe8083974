//! The closing step: every request ends here exactly once. A refusal writes
//! its record at once; an answer writes it when its body ends (or is
//! dropped), so the line has the bytes and whether the client got them all.

use crate::audit::{AuditRecord, Outcome};
use crate::body::{boxed, Metered};
use crate::error::{ProxyError, Side};
use crate::screen::ToSandbox;
use crate::wire_choice::AnswerSize;

/// Records the refusal, writes the audit line, and builds the sandbox's answer.
pub(crate) fn refuse(audit: &mut AuditRecord, err: ProxyError) -> ToSandbox {
    let response = err.to_response();
    audit.status = response.status().as_u16();
    audit.outcome = Outcome::from(&err);
    audit.refused = Some(err.to_string());
    // Refusals are the audit line's business; failures of other parties also
    // warn, so operators see an unreachable upstream or vault.
    let side = err.side();
    if side != Side::Sandbox {
        tracing::warn!(error = %err, %side, "request failed");
    }
    audit.emit(true);
    ToSandbox::local(response)
}

/// Hands `answer` to the sandbox, counting its body bytes; the audit line is
/// written when the body ends or is dropped.
pub(crate) fn on_body_end(audit: AuditRecord, answer: ToSandbox) -> ToSandbox {
    on_body_end_sized(audit, answer, None)
}

/// [`on_body_end`], and the body's size goes to `auto`'s measurements of
/// the upstream (a host of large answers takes HTTP/1.1).
pub(crate) fn on_body_end_sized(
    mut audit: AuditRecord,
    answer: ToSandbox,
    size: Option<AnswerSize>,
) -> ToSandbox {
    answer.map_body(move |body| {
        boxed(Metered::with_on_drop(body, move |completed, bytes| {
            audit.response_bytes = bytes;
            if let (Some(size), Some(version)) = (&size, audit.upstream_version) {
                size.record(bytes, version);
            }
            audit.emit(completed)
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use airlock_vault_client::SandboxId;
    use http_body_util::BodyExt;

    fn record(telemetry: &Telemetry) -> AuditRecord {
        AuditRecord::new(
            telemetry,
            SandboxId::new("sbx"),
            crate::audit::Mode::Intercept,
            "GET",
            "h",
            443,
            "/",
        )
    }

    #[test]
    fn a_refusal_is_written_once_with_its_error_code() {
        let telemetry = Telemetry::default();
        let mut audit = record(&telemetry);
        let answer = refuse(&mut audit, ProxyError::UnknownPlaceholder).into_response();
        assert_eq!(answer.status(), 403);
        assert_eq!(answer.headers()["x-airlock-error"], "unknown_placeholder");
        assert_eq!(audit.outcome, Outcome::Refused("unknown_placeholder"));
        let recent = telemetry.recent.newest_first();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].outcome, "unknown_placeholder");
        assert_eq!(recent[0].status, 403);
    }

    #[tokio::test]
    async fn an_answer_is_written_when_its_body_ends_with_its_bytes() {
        let telemetry = Telemetry::default();
        let mut audit = record(&telemetry);
        audit.status = 200;
        let answer = ToSandbox::local(http::Response::new(crate::body::full("hello".into())));
        let answer = on_body_end(audit, answer);
        assert!(
            telemetry.recent.newest_first().is_empty(),
            "not before the body ends"
        );
        let body = answer.into_response().into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), "hello");
        let recent = telemetry.recent.newest_first();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].outcome, "ok");
        assert_eq!(recent[0].response_bytes, 5);
    }

    #[tokio::test]
    async fn an_answer_dropped_early_is_aborted() {
        let telemetry = Telemetry::default();
        let (tx, body) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<bytes::Bytes>, crate::body::BoxError>,
        >(1);
        let body = crate::body::boxed(http_body_util::StreamBody::new(tokio_stream_from(body)));
        let answer = on_body_end(
            record(&telemetry),
            ToSandbox::local(http::Response::new(body)),
        );
        drop(answer);
        drop(tx);
        assert_eq!(telemetry.recent.newest_first()[0].outcome, "aborted");
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
