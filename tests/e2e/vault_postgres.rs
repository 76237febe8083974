//! Several vault replicas on one PostgreSQL database: tokens survive
//! restarts, and a refresh happens once across replicas (row lock).
//! Uses the server on 127.0.0.1:5432 (database `test`) and says clearly
//! when it is not there.

use std::time::Duration;

use crate::support::clients::python;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, skip, Airlock, TestCa};

/// `psql` on the local server's `test` database, running `sql`.
fn psql(sql: &str) -> std::io::Result<std::process::Output> {
    std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
}

/// A database made for one test, dropped when the test ends (pass or fail).
pub(crate) struct TestDatabase {
    name: String,
}

impl TestDatabase {
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE: a replica killed a moment ago may still hold a connection.
        match psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "could not drop test database {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}

/// A fresh database on the local PostgreSQL, or `None` (skip; a failure
/// under `CI=true`) when unreachable.
pub(crate) fn fresh_database() -> Option<TestDatabase> {
    let name = format!(
        "airlock_e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    match psql(&format!("CREATE DATABASE {name}")) {
        Ok(o) if o.status.success() => Some(TestDatabase { name }),
        Ok(o) => {
            skip(&format!(
                "PostgreSQL at 127.0.0.1:5432 refused CREATE DATABASE: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
            None
        }
        Err(e) => {
            skip(&format!(
                "psql is not available ({e}); PostgreSQL tests need it"
            ));
            None
        }
    }
}

pub(crate) const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_refresh_and_survive_restarts() {
    let Some(database) = fresh_database() else {
        return;
    };
    let db = database.url();
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
    let cfg = super::vault::acme_config(
        &ca,
        provider.port(),
        &format!("database_url = {db:?}\nrefresh_interval_secs = 3600"),
        "",
    );
    let env = [
        ("AIRLOCK_MASTER_KEY", KEY),
        ("AIRLOCK_ADMIN_TOKEN", "admin-token-for-replicas-0001"),
        ("AIRLOCK_SERVICE_TOKEN", "service-token-for-replicas-01"),
    ];
    let a = Airlock::start_with_env(&cfg, &env);
    let b = Airlock::start_with_env(&cfg, &env);
    assert_eq!(
        a.var("ACME_TOKEN"),
        b.var("ACME_TOKEN"),
        "replicas share the sidecar sandbox's bindings"
    );
    let w = super::vault::World {
        ca,
        provider,
        airlock: a,
    };
    // Longer-lived than a background pass (3600 s): a new replica's first
    // pass must find nothing due, so every refresh counted is the test's.
    w.provider
        .set_access_token_lifetime(Duration::from_secs(4 * 3600));
    w.connect("tenant").await;
    let old = w.provider.issued_access_tokens()[0].clone();

    // 40 proxies report the same failed token to two replicas at once.
    w.provider.set_token_delay(Duration::from_millis(300));
    let script = format!(
        r#"
import json, urllib.request, concurrent.futures
def call(url):
    req = urllib.request.Request(url + '/v1/service/refresh', method='POST',
        data=json.dumps({{'sandbox': 'default', 'placeholder': {placeholder:?}, 'failed_token': {old:?}}}).encode(),
        headers={{'authorization': 'Bearer service-token-for-replicas-01', 'content-type': 'application/json'}})
    return json.load(urllib.request.urlopen(req))['token']
with concurrent.futures.ThreadPoolExecutor(40) as ex:
    tokens = set(ex.map(call, [{a:?}, {b:?}] * 20))
print('one-new-token' if len(tokens) == 1 and {old:?} not in tokens else 'tokens differ: %d' % len(tokens))
"#,
        placeholder = w.airlock.var("ACME_TOKEN"),
        a = w.airlock.vault_url(),
        b = b.vault_url(),
    );
    let out = blocking(move || python(&[], &script)).await;
    assert_eq!(out.stdout.trim(), "one-new-token", "{}", out.stderr);
    assert_eq!(
        w.provider.refresh_count(),
        1,
        "one refresh across both replicas"
    );

    // Restart: a new replica on the same database serves the connection.
    let placeholder = w.airlock.var("ACME_TOKEN");
    drop(b);
    let super::vault::World {
        ca,
        provider,
        airlock,
    } = w;
    drop(airlock);
    let c = Airlock::start_with_env(&cfg, &env);
    assert_eq!(c.var("ACME_TOKEN"), placeholder);
    let w = super::vault::World {
        ca,
        provider,
        airlock: c,
    };
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.provider.authorize_count(), 1);
    assert_eq!(w.provider.refresh_count(), 1);
}
