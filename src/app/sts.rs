//! Temporary AWS credentials for `aws_sigv4` secrets that name a `role_arn`:
//! STS `AssumeRole`, signed (SigV4, airlock's own signer) with the
//! configured keys, answers a key id, secret and session token that expire;
//! those are what airlock signs the sandbox's requests with. They are
//! fetched before the proxy starts and again before they expire (a refresh
//! reads the config file again, as SIGHUP does), and the config's own keys
//! never sign a sandbox request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_proxy::signing::sigv4;
use airlock_vault_client::{ExposeSecret, SecretString, StaticSecrets, Swappable};

use crate::config::{AssumeRole, Loaded, PendingSecret};
use crate::Error;

/// Refresh this long before the credentials expire.
const REFRESH_AHEAD_SECS: i64 = 300;
/// After a failed refresh, try again this much later.
const RETRY_SECS: u64 = 30;

/// Why STS gave no credentials. Names the role, never a key.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("STS AssumeRole for {role}: {source}")]
    Request {
        role: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("STS AssumeRole for {role} was refused: HTTP {status} {code}")]
    Refused {
        role: String,
        status: u16,
        code: String,
    },
    #[error("STS AssumeRole for {role}: the answer has no {what}")]
    Unreadable { role: String, what: &'static str },
}

/// One role's temporary credentials.
struct Temporary {
    key_id: SecretString,
    secret: SecretString,
    token: SecretString,
    /// Unix seconds.
    expires_at: i64,
}

/// The temporary credentials of every role secret, by secret name. The lock
/// guards only the map: never held across a call to STS.
pub struct AssumeRoles {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<Temporary>>>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl AssumeRoles {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `pending` with every role secret's keys replaced by its temporary
    /// credentials, asked of STS when missing or due.
    pub async fn apply(
        &self,
        mut pending: Vec<PendingSecret>,
    ) -> Result<Vec<PendingSecret>, StsError> {
        for s in &mut pending {
            let Some(aws) = s.aws.as_mut() else { continue };
            let Some(role) = aws.assume_role.clone() else {
                continue;
            };
            let cached = self
                .cache
                .lock()
                .expect("sts cache")
                .get(&s.name)
                .filter(|t| t.expires_at - REFRESH_AHEAD_SECS > unix_now())
                .cloned();
            let temporary = match cached {
                Some(t) => t,
                None => {
                    let token = aws.session_token.as_ref().map(|(_, t)| t);
                    let fresh = Arc::new(
                        assume_role(&self.client, &role, &s.value, &aws.secret_access_key, token)
                            .await?,
                    );
                    tracing::info!(
                        target: crate::LOG_TARGET,
                        secret = %s.name,
                        role = %role.role_arn,
                        expires_at = fresh.expires_at,
                        "temporary AWS credentials from STS"
                    );
                    self.cache
                        .lock()
                        .expect("sts cache")
                        .insert(s.name.clone(), fresh.clone());
                    fresh
                }
            };
            s.value = temporary.key_id.clone();
            aws.secret_access_key = temporary.secret.clone();
            aws.session_token = Some((aws.session_token_variable.clone(), temporary.token.clone()));
        }
        Ok(pending)
    }

    /// How long until the first credential is due.
    fn due_in(&self) -> Duration {
        let now = unix_now();
        let next = self
            .cache
            .lock()
            .expect("sts cache")
            .values()
            .map(|t| t.expires_at - REFRESH_AHEAD_SECS - now)
            .min()
            .unwrap_or(RETRY_SECS as i64);
        Duration::from_secs(next.max(1) as u64)
    }
}

/// The config file's secrets, read again, with temporary credentials in
/// place of the keys of role secrets.
pub async fn load_secrets(
    config: Option<&Path>,
    data_dir: &Path,
    roles: Option<&AssumeRoles>,
) -> Result<(usize, StaticSecrets), Error> {
    let loaded = Loaded::read(config)?;
    let mut pending = loaded.parse()?.secrets;
    if let Some(roles) = roles {
        pending = roles.apply(pending).await?;
    }
    let count = pending.len();
    Ok((
        count,
        super::prepare::static_secrets(&loaded, data_dir, pending)?,
    ))
}

/// Keeps the temporary credentials fresh: before the first is due, reads
/// the secrets again and swaps them in; a failure keeps the current ones
/// (valid until they expire) and tries again in 30 s.
pub fn spawn_refresher(
    config: Option<PathBuf>,
    data_dir: PathBuf,
    roles: Arc<AssumeRoles>,
    secrets: Arc<Swappable>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(roles.due_in()).await;
            match load_secrets(config.as_deref(), &data_dir, Some(&roles)).await {
                Ok((_, fresh)) => secrets.replace(Arc::new(fresh)),
                Err(error) => {
                    tracing::error!(target: crate::LOG_TARGET, %error, "temporary AWS credentials not refreshed; keeping the current ones");
                    tokio::time::sleep(Duration::from_secs(RETRY_SECS)).await;
                }
            }
        }
    });
}

/// `POST /` `Action=AssumeRole`, signed with the configured keys.
async fn assume_role(
    client: &reqwest::Client,
    role: &AssumeRole,
    key_id: &SecretString,
    secret: &SecretString,
    token: Option<&SecretString>,
) -> Result<Temporary, StsError> {
    let role_name = role.role_arn.clone();
    let body = format!(
        "Action=AssumeRole&DurationSeconds={}&RoleArn={}&RoleSessionName={}&Version=2011-06-15",
        role.duration_secs,
        sigv4::uri_encode(&role.role_arn, false),
        sigv4::uri_encode(&role.session_name, false),
    );
    let host = role.endpoint.trim_start_matches("https://").to_owned();
    let amz_date = amz_date_now();
    let scope = sigv4::Scope {
        date: amz_date[..8].to_owned(),
        region: role.region.clone(),
        service: "sts".into(),
    };
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let mut signed: Vec<sigv4::HeaderValues> = vec![
        (
            "content-type".into(),
            vec![content_type.as_bytes().to_vec()],
        ),
        ("host".into(), vec![host.as_bytes().to_vec()]),
        ("x-amz-date".into(), vec![amz_date.as_bytes().to_vec()]),
    ];
    if let Some(t) = token {
        signed.push((
            "x-amz-security-token".into(),
            vec![t.expose_secret().as_bytes().to_vec()],
        ));
    }
    let payload = sigv4::sha256_hex(body.as_bytes());
    let canonical = sigv4::CanonicalRequest {
        method: "POST",
        path: "/",
        query: "",
        skip_query: &[],
        headers: &signed,
        payload_hash: &payload,
        s3: false,
    }
    .to_canonical_string();
    let key = sigv4::signing_key(secret.expose_secret(), &scope);
    let signature = sigv4::sign(&key, &sigv4::string_to_sign(&amz_date, &scope, &canonical));
    let names: Vec<&str> = signed.iter().map(|(n, _)| n.as_str()).collect();
    let authorization = format!(
        "{} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        sigv4::ALGORITHM,
        key_id.expose_secret(),
        scope.to_scope_string(),
        names.join(";")
    );
    let mut request = client
        .post(format!("{}/", role.endpoint))
        .header("content-type", content_type)
        .header("x-amz-date", &amz_date)
        .header("authorization", authorization)
        .body(body);
    if let Some(t) = token {
        request = request.header("x-amz-security-token", t.expose_secret());
    }
    let request_err = |source| StsError::Request {
        role: role_name.clone(),
        source,
    };
    let answer = request.send().await.map_err(request_err)?;
    let status = answer.status().as_u16();
    let text = zeroize::Zeroizing::new(answer.text().await.map_err(request_err)?);
    if status != 200 {
        return Err(StsError::Refused {
            role: role_name,
            status,
            code: tag(&text, "Code").unwrap_or_else(|| "(no error code)".into()),
        });
    }
    let field = |what: &'static str| {
        tag(&text, what).ok_or_else(|| StsError::Unreadable {
            role: role_name.clone(),
            what,
        })
    };
    let expires_at = expiration(&field("Expiration")?).ok_or(StsError::Unreadable {
        role: role_name.clone(),
        what: "readable Expiration",
    })?;
    Ok(Temporary {
        key_id: SecretString::from(field("AccessKeyId")?),
        secret: SecretString::from(field("SecretAccessKey")?),
        token: SecretString::from(field("SessionToken")?),
        expires_at,
    })
}

fn amz_date_now() -> String {
    // Unix seconds to YYYYMMDDTHHMMSSZ (civil from days, H. Hinnant).
    let now = unix_now();
    let (days, secs) = (now.div_euclid(86_400), now.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The text of the first `<name>…</name>` (STS answers are small, flat XML;
/// the five entities unescaped). Hand-written: four fields do not need an
/// XML crate.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let raw = xml[start..end].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `2026-12-03T07:23:38Z` (fractions allowed) as Unix seconds.
fn expiration(text: &str) -> Option<i64> {
    let digits: String = text
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit())
        .collect();
    if digits.len() != 14 {
        return None;
    }
    sigv4::parse_amz_date(&format!("{}T{}Z", &digits[..8], &digits[8..])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_dates_are_read() {
        let xml = "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s/k+&amp;</SecretAccessKey><SessionToken>tok</SessionToken><Expiration>2015-08-30T12:36:00.000Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        assert_eq!(tag(xml, "AccessKeyId").as_deref(), Some("ASIAX"));
        assert_eq!(tag(xml, "SecretAccessKey").as_deref(), Some("s/k+&"));
        assert_eq!(tag(xml, "Missing"), None);
        assert_eq!(expiration("2015-08-30T12:36:00.000Z"), Some(1_440_938_160));
        assert_eq!(expiration("soon"), None);
        let now = amz_date_now();
        let parsed = sigv4::parse_amz_date(&now).unwrap();
        assert!((parsed - unix_now()).abs() <= 2, "{now}");
    }
}
