//! Transparent mode: a sandbox namespace whose clients know nothing of a
//! proxy (no proxy variables; Node 20's global `fetch`, curl, Python's
//! `http.client`) has its port 443 and 80 traffic redirected to airlock
//! by the rules `airlock transparent rules --apply` makes, and gets the
//! same pipeline: swap, binding checks, plain-HTTP refusal, audit.

use std::process::Command;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::clients::Output;
use crate::support::upstream::{read_ws_frame, write_ws_frame_masked};
use crate::support::{
    assert_not_leaked, blocking, netns, real_secret, tunnel, Airlock, TestCa, Upstream,
};

const BOUND: &str = "api.transparent.test";
const PLAIN: &str = "plain.transparent.test";
/// What the sandbox's DNS says for them (not routable; only the redirect
/// makes a connection to them go anywhere).
const BOUND_ADDR: &str = "203.0.113.7";
const PLAIN_ADDR: &str = "203.0.113.8";
/// An address the sandbox's own DNS never gave for the bound name.
const ELSEWHERE: &str = "198.51.100.9";

/// A plain-HTTP server answering `200 plain ok` and keeping each request head.
async fn plain_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let body = "plain ok\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, heads)
}

/// A free port on `ip` (bound and released: the listener config needs a number).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The rules, applied on this side of the veth pair; removed on drop.
struct Rules(Vec<String>);

impl Rules {
    /// Gateway-mode redirects of `sandbox`'s TLS (and, given, plain HTTP)
    /// traffic to airlock, in a chain named `chain` and this process's id.
    fn gateway(
        sandbox: &netns::SandboxNamespace,
        tls_port: u16,
        http_port: Option<u16>,
        chain: &str,
    ) -> Self {
        let mut args: Vec<String> = ["transparent", "rules", "--mode", "gateway", "--interface"]
            .map(String::from)
            .to_vec();
        args.push(sandbox.host_if.clone());
        args.extend(["--tls-port".into(), tls_port.to_string()]);
        if let Some(port) = http_port {
            args.extend(["--http-port".into(), port.to_string()]);
        }
        args.extend(["--chain".into(), format!("{chain}_{}", std::process::id())]);
        Self::apply(args)
    }

    fn apply(args: Vec<String>) -> Self {
        let mut apply = args.clone();
        apply.push("--apply".into());
        let out = Command::new(crate::support::airlock::binary())
            .args(&apply)
            .output()
            .expect("airlock transparent rules");
        assert!(
            out.status.success(),
            "airlock {apply:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(args)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        let mut remove = self.0.clone();
        remove.extend(["--remove".to_owned(), "--apply".to_owned()]);
        let _ = Command::new(crate::support::airlock::binary())
            .args(&remove)
            .output();
    }
}

/// Inside a sandbox: each connection to the Unix socket `argv[1]` is
/// relayed to `argv[2]:443`, so it leaves from the sandbox and is
/// redirected; stops when its stdin closes.
const RELAY: &str = r#"
import socket, sys, threading
path, host = sys.argv[1], sys.argv[2]
def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve():
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection((host, 443), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
"#;

/// [`RELAY`] running in a sandbox: the test's own TLS clients reach the
/// sandbox's network through it (a Unix socket is in no network namespace).
struct Relay {
    child: std::process::Child,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start(sandbox: &netns::SandboxNamespace, host: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let socket = path.to_str().unwrap();
        let mut child = sandbox.spawn("python3", &["-c", RELAY, socket, host], &[]);
        let stdout = child.stdout.take().unwrap();
        let ready = blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            line
        })
        .await;
        assert_eq!(ready, "ready\n", "the relay did not start");
        Self {
            child,
            path,
            _dir: dir,
        }
    }

    /// A WebSocket to the upstream's echo route through the relay, as far
    /// as its `101`; else what stopped it.
    async fn websocket(&self, tls: &TlsConnector) -> Result<TlsStream<UnixStream>, String> {
        let open = async {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|e| format!("relay: {e}"))?;
            let mut ws = tls
                .connect(ServerName::try_from(BOUND).unwrap(), stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let handshake = format!(
                "GET /ws HTTP/1.1\r\nHost: {BOUND}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            ws.write_all(handshake.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let head = tunnel::read_head(&mut ws).await;
            if !head.starts_with("HTTP/1.1 101") {
                return Err(format!("no upgrade: {head:?}"));
            }
            Ok(ws)
        };
        tokio::time::timeout(Duration::from_secs(10), open)
            .await
            .unwrap_or_else(|_| Err("no answer in 10 s".into()))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `message` on `ws` and reads it back.
async fn echo(ws: &mut TlsStream<UnixStream>, message: &str) {
    write_ws_frame_masked(ws, 0x1, message.as_bytes(), Some([1, 2, 3, 4]))
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), read_ws_frame(ws))
        .await
        .expect("no echo in 5 s");
    assert_eq!(frame, Some((0x1, message.as_bytes().to_vec())));
}

/// `airlock_open_connections` in a metrics scrape.
fn open_connections(metrics: &str) -> Option<u64> {
    crate::support::metric(metrics, "airlock_open_connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_ignore_proxy_settings_are_redirected_through_the_same_pipeline() {
    let has_iptables = Command::new("iptables").arg("-V").output().is_ok();
    if !netns::available() || !has_iptables {
        crate::support::skip("the transparent-mode test needs root, iproute2 and iptables");
        return;
    }
    let sandbox = netns::SandboxNamespace::create("tp", 232);
    sandbox.route_all_via_host();
    sandbox.set_hosts(&[(BOUND_ADDR, BOUND), (PLAIN_ADDR, PLAIN)]);

    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let (plain_port, plain_heads) = plain_upstream().await;
    let real = real_secret("transparent");
    let (tls_port, http_port) = (free_port(&sandbox.host_ip), free_port(&sandbox.host_ip));
    let cfg = format!(
        "[proxy]\nintercept = \"all\"\nupstream_ca = [{ca:?}]\n\
         [resolve]\n\"{BOUND}\" = \"127.0.0.1:{bound_port}\"\n\"{PLAIN}\" = \"127.0.0.1:{plain_port}\"\n\
         [[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{BOUND}\"]\n\
         [transparent]\nlisten = \"{ip}:{tls_port}\"\nhttp_listen = \"{ip}:{http_port}\"\n\
         [transparent.addresses]\n\"{BOUND}\" = [\"{BOUND_ADDR}\"]\n\"{PLAIN}\" = [\"{PLAIN_ADDR}/32\"]\n",
        ca = ca.cert_pem_path().display().to_string(),
        bound_port = bound.port(),
        ip = sandbox.host_ip,
    );
    let airlock = Airlock::start(&cfg);
    let _rules = Rules::gateway(&sandbox, tls_port, Some(http_port), "AL_TP");

    let placeholder = airlock.var("API_TOKEN");
    let ca_pem = airlock.ca_path().display().to_string();
    // No proxy variables: only the placeholder and the CA.
    let env = vec![
        ("API_TOKEN".to_owned(), placeholder.clone()),
        ("NODE_EXTRA_CA_CERTS".to_owned(), ca_pem.clone()),
        ("SANDBOX_CA".to_owned(), ca_pem.clone()),
    ];
    let auth = format!("Authorization: Bearer {placeholder}");
    let node_fetch = format!(
        "fetch('https://{BOUND}/node-fetch', {{ headers: {{ authorization: 'Bearer ' + process.env.API_TOKEN }} }})\
         .then(async r => console.log(r.status, (await r.text()).trim()))\
         .catch(e => {{ console.error(e.cause || e); process.exit(1); }})"
    );
    let python = format!(
        "import http.client, os, ssl\n\
         ctx = ssl.create_default_context(cafile=os.environ['SANDBOX_CA'])\n\
         c = http.client.HTTPSConnection('{BOUND}', context=ctx, timeout=10)\n\
         c.request('GET', '/python-http-client', headers={{'Authorization': 'Bearer ' + os.environ['API_TOKEN']}})\n\
         r = c.getresponse()\n\
         print(r.status, r.read().decode().strip())\n"
    );
    let elsewhere = format!("{BOUND}:443:{ELSEWHERE}");
    let outputs: Vec<Output> = blocking(move || {
        let curl = |args: &[&str]| {
            let mut full = vec!["-sS", "--noproxy", "*", "-w", " %{http_code}"];
            full.extend_from_slice(args);
            sandbox.run("curl", &full, &env, 10)
        };
        let out = vec![
            curl(&[
                "--cacert",
                &ca_pem,
                "-H",
                &auth,
                &format!("https://{BOUND}/curl"),
            ]),
            sandbox.run("node", &["-e", &node_fetch], &env, 15),
            sandbox.run("python3", &["-c", &python], &env, 15),
            curl(&[&format!("http://{PLAIN}/plain-path")]),
            curl(&[
                "-H",
                &auth,
                &format!("http://{PLAIN}/plain-with-placeholder"),
            ]),
            // The attack: SNI names the bound host, the connection goes elsewhere.
            curl(&[
                "--cacert",
                &ca_pem,
                "--resolve",
                &elsewhere,
                "-H",
                &auth,
                "-D",
                "-",
                &format!("https://{BOUND}/attack"),
            ]),
            // Ports that are not redirected lead nowhere.
            curl(&[
                "--max-time",
                "3",
                "-k",
                &format!("https://{BOUND_ADDR}:8443/direct"),
            ]),
        ];
        drop(sandbox);
        out
    })
    .await;
    let [curl, node, python, plain, plain_placeholder, attack, direct] = &outputs[..] else {
        unreachable!()
    };
    assert_eq!(curl.stdout, "ok\n 200", "curl: {}", curl.stderr);
    assert_eq!(node.stdout.trim(), "200 ok", "node fetch: {}", node.stderr);
    assert_eq!(python.stdout.trim(), "200 ok", "python: {}", python.stderr);
    assert_eq!(
        plain.stdout, "plain ok\n 200",
        "plain http: {}",
        plain.stderr
    );
    assert!(
        plain_placeholder.stdout.ends_with(" 403")
            && plain_placeholder.stdout.contains("plain http://"),
        "a placeholder over plain HTTP is refused: {plain_placeholder:?}"
    );
    assert!(
        attack
            .stdout
            .contains("x-airlock-error: destination_mismatch")
            && attack.stdout.contains(ELSEWHERE)
            && attack.stdout.ends_with(" 403"),
        "SNI of a bound host sent to another address: {attack:?}"
    );
    assert_ne!(
        direct.status, 0,
        "a port that is not redirected goes nowhere"
    );

    // The upstream saw the real token for each client, and nothing else.
    let seen = bound.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(paths, ["/curl", "/node-fetch", "/python-http-client"]);
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {real}").as_str())
        );
        assert_eq!(request.sni.as_deref(), Some(BOUND));
    }
    let heads = plain_heads.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        1,
        "only the request without a placeholder: {heads:?}"
    );
    assert!(heads[0].starts_with("GET /plain-path HTTP/1.1"));
    assert!(heads[0]
        .to_ascii_lowercase()
        .contains(&format!("host: {PLAIN}")));

    let logs = airlock.logs();
    assert!(
        logs.contains("destination_mismatch"),
        "the refusal is audited"
    );
    let texts: Vec<&str> = outputs
        .iter()
        .flat_map(|o| [o.stdout.as_str(), o.stderr.as_str()])
        .chain([logs.as_str()])
        .collect();
    assert_not_leaked(&real, &texts);
}

/// A WebSocket inside an intercepted redirected connection is relayed after
/// the HTTP server has let go of the socket: it keeps the connection's place
/// under `max_connections` (and in the gauge) until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_the_transparent_listener_hold_their_place_under_max_connections() {
    const MAX: u64 = 3;
    let has_iptables = Command::new("iptables").arg("-V").output().is_ok();
    if !netns::available() || !has_iptables {
        crate::support::skip("the transparent-mode test needs root, iproute2 and iptables");
        return;
    }
    let sandbox = netns::SandboxNamespace::create("tw", 233);
    sandbox.route_all_via_host();
    sandbox.set_hosts(&[(BOUND_ADDR, BOUND)]);

    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let tls_port = free_port(&sandbox.host_ip);
    let cfg = format!(
        "[proxy]\nintercept = \"all\"\nmax_connections = {MAX}\nupstream_ca = [{ca:?}]\n\
         [resolve]\n\"{BOUND}\" = \"127.0.0.1:{bound_port}\"\n\
         [transparent]\nlisten = \"{ip}:{tls_port}\"\n\
         [transparent.addresses]\n\"{BOUND}\" = [\"{BOUND_ADDR}\"]\n",
        ca = ca.cert_pem_path().display().to_string(),
        bound_port = bound.port(),
        ip = sandbox.host_ip,
    );
    let airlock = Airlock::start(&cfg);
    let _rules = Rules::gateway(&sandbox, tls_port, None, "AL_TW");
    let relay = Relay::start(&sandbox, BOUND).await;
    let tls = TlsConnector::from(tunnel::tls_config(&airlock.ca_path(), &[b"http/1.1"]));

    let mut held = Vec::new();
    for i in 0..MAX {
        let mut ws = relay
            .websocket(&tls)
            .await
            .unwrap_or_else(|e| panic!("WebSocket {i}: {e}"));
        echo(&mut ws, "opened").await;
        held.push(ws);
    }
    // Over the limit the TLS listener closes the connection unanswered (a
    // redirected client could not read a 503).
    match relay.websocket(&tls).await {
        Ok(_) => panic!("a connection past max_connections = {MAX} was served"),
        Err(e) => assert!(e.starts_with("TLS: "), "{e}"),
    }
    let metrics = airlock.scrape_metrics().await.stdout;
    assert_eq!(open_connections(&metrics), Some(MAX), "{metrics}");
    for ws in &mut held {
        echo(ws, "still relayed").await;
    }

    for mut ws in held {
        write_ws_frame_masked(&mut ws, 0x8, &[], Some([1, 2, 3, 4]))
            .await
            .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), read_ws_frame(&mut ws)).await;
        assert_eq!(frame.ok().flatten(), Some((0x8, Vec::new())), "close");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = airlock.scrape_metrics().await.stdout;
        if open_connections(&metrics) == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed WebSockets still counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = relay
        .websocket(&tls)
        .await
        .unwrap_or_else(|e| panic!("once they closed: {e}"));
    echo(&mut again, "admitted again").await;
    let handshakes = bound.requests();
    let handshakes = handshakes.iter().filter(|r| r.path_and_query == "/ws");
    assert_eq!(
        handshakes.count() as u64,
        MAX + 1,
        "the refused connection reached nothing"
    );
}

/// Without a redirect (a DNS answer naming airlock; here curl's
/// `--connect-to`), the SNI alone names the destination. Runs anywhere:
/// no namespace, no iptables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sent_to_the_listener_itself_goes_where_its_sni_says() {
    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let real = real_secret("transparent-dns");
    let tls_port = free_port("127.0.0.1");
    let cfg = format!(
        "[proxy]\nupstream_ca = [{ca:?}]\n[resolve]\n\"{BOUND}\" = \"127.0.0.1:{port}\"\n\
         [[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{BOUND}\"]\n\
         [transparent]\nlisten = \"127.0.0.1:{tls_port}\"\n",
        ca = ca.cert_pem_path().display().to_string(),
        port = bound.port(),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("API_TOKEN");
    let ca_pem = airlock.ca_path().display().to_string();
    let to_listener = format!("{BOUND}:443:127.0.0.1:{tls_port}");
    let auth = format!("Authorization: Bearer {placeholder}");
    let (ok, not_tls) = blocking(move || {
        let ok = crate::support::clients::curl(
            &[],
            &[
                "--noproxy",
                "*",
                "--cacert",
                &ca_pem,
                "--connect-to",
                &to_listener,
                "-H",
                &auth,
                "-w",
                " %{http_code}",
                &format!("https://{BOUND}/by-sni"),
            ],
        );
        // Plain HTTP on the TLS listener gets an answer it can read.
        let not_tls = crate::support::clients::curl(
            &[],
            &[
                "--noproxy",
                "*",
                "-w",
                " %{http_code}",
                &format!("http://127.0.0.1:{tls_port}/"),
            ],
        );
        (ok, not_tls)
    })
    .await;
    assert_eq!(ok.stdout, "ok\n 200", "{}", ok.stderr);
    assert_eq!(
        bound.requests()[0].header("authorization"),
        Some(format!("Bearer {real}").as_str())
    );
    assert!(
        not_tls.stdout.ends_with(" 400") && not_tls.stdout.contains("expected a TLS ClientHello"),
        "{not_tls:?}"
    );
    assert_not_leaked(&real, &[&ok.stdout, &ok.stderr, &airlock.logs()]);
}

/// A shared gateway names the sandbox by source address: a connection from
/// an address no `transparent.sources` entry covers is refused, inside TLS,
/// and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_gateway_refuses_redirected_connections_from_unknown_sources() {
    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let tls_port = free_port("127.0.0.1");
    let cfg = format!(
        "[proxy]\nrequire_auth = true\nupstream_ca = [{ca:?}]\n[resolve]\n\"{BOUND}\" = \"127.0.0.1:{port}\"\n\
         [transparent]\nlisten = \"127.0.0.1:{tls_port}\"\n[transparent.sources]\n\"10.99.0.0/24\" = \"sb-1\"\n",
        ca = ca.cert_pem_path().display().to_string(),
        port = bound.port(),
    );
    let airlock = Airlock::start(&cfg);
    let ca_pem = airlock.ca_path().display().to_string();
    let to_listener = format!("{BOUND}:443:127.0.0.1:{tls_port}");
    let out = blocking(move || {
        crate::support::clients::curl(
            &[],
            &[
                "--noproxy",
                "*",
                "--cacert",
                &ca_pem,
                "--connect-to",
                &to_listener,
                "-D",
                "-",
                "-w",
                " %{http_code}",
                &format!("https://{BOUND}/who"),
            ],
        )
    })
    .await;
    assert!(
        out.stdout.contains("x-airlock-error: unknown_source")
            && out.stdout.contains("transparent.sources")
            && out.stdout.ends_with(" 403"),
        "{out:?}"
    );
    assert!(bound.requests().is_empty());
}
