#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! A git smart-HTTP server behind TLS that demands HTTP Basic auth. Each request
//! is handed to `git http-backend` as a CGI process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::test_ca::TestCa;
use super::upstream::{contains_bytes, spawn_https_server};

const BODY_SAMPLE_LIMIT: usize = 64 * 1024;
const CGI_HEADER_LIMIT: usize = 64 * 1024;
const STDERR_LIMIT: usize = 64 * 1024;

pub struct GitServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct State {
    root: PathBuf,
    home: PathBuf,
    expected_password: String,
    authorizations: Mutex<Vec<String>>,
    /// Request lines, headers and body samples of every request, for `raw_contains`.
    raw: Mutex<Vec<Vec<u8>>>,
    backend_stderr: Mutex<Vec<u8>>,
}

impl GitServer {
    /// Creates `repo.git` (one commit on `main`, push enabled) and serves it as
    /// `https://<name>/repo.git` with a leaf for `names` signed by `ca`.
    pub async fn start(ca: &TestCa, names: &[&str], expected_password: &str) -> GitServer {
        let dir = tempfile::tempdir().expect("git server temp dir");
        let root = dir.path().join("srv");
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();

        git_setup(&home, dir.path(), &["init", "-q", "-b", "main", "work"]);
        std::fs::write(work.join("README"), "hello from the test git server\n").unwrap();
        git_setup(&home, &work, &["add", "README"]);
        git_setup(
            &home,
            &work,
            &[
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
                "commit",
                "-q",
                "-m",
                "initial commit",
            ],
        );
        git_setup(
            &home,
            &root,
            &["clone", "-q", "--bare", "../work", "repo.git"],
        );
        git_setup(
            &home,
            &root.join("repo.git"),
            &["config", "http.receivepack", "true"],
        );

        let state = Arc::new(State {
            root,
            home,
            expected_password: expected_password.to_string(),
            authorizations: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
            backend_stderr: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind git server");
        let addr = listener.local_addr().unwrap();
        let config = ca.server_config(names, &[b"h2", b"http/1.1"]);
        let handler_state = state.clone();
        let task = spawn_https_server(listener, config, move |req, _sni| {
            handle(req, handler_state.clone())
        });
        GitServer {
            addr,
            state,
            task,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every `Authorization` header value received, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.authorizations.lock().unwrap().clone()
    }

    /// Whether any request carried `needle` in its path, headers or the first
    /// 64 KiB of its (possibly gzip-encoded, as git sends it) body.
    pub fn raw_contains(&self, needle: &str) -> bool {
        let raw = self.state.raw.lock().unwrap();
        raw.iter()
            .any(|blob| contains_bytes(blob, needle.as_bytes()))
    }

    /// What `git http-backend` wrote to stderr (bounded), for diagnosing failures.
    pub fn backend_stderr(&self) -> String {
        String::from_utf8_lossy(&self.state.backend_stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn git_setup(home: &Path, cwd: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

type RespBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn simple(status: StatusCode, body: &'static str) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

/// Returns `(user, password)` from a `Basic` credential.
fn decode_basic(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();

    let mut raw = format!("{} {}\n", parts.method, parts.uri).into_bytes();
    for (name, value) in &parts.headers {
        raw.extend_from_slice(name.as_str().as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value.as_bytes());
        raw.push(b'\n');
    }
    state.raw.lock().unwrap().push(raw);

    let authorization = parts
        .headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(value) = &authorization {
        state.authorizations.lock().unwrap().push(value.clone());
    }
    let Some(authorization) = authorization else {
        let mut resp = simple(StatusCode::UNAUTHORIZED, "authentication required\n");
        resp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return resp;
    };
    let user = match decode_basic(&authorization) {
        Some((user, password)) if password == state.expected_password => user,
        _ => return simple(StatusCode::FORBIDDEN, "bad credentials\n"),
    };

    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &state.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        match name.as_str() {
            "content-type" => {
                cmd.env("CONTENT_TYPE", value);
            }
            "content-length" => {
                cmd.env("CONTENT_LENGTH", value);
            }
            "git-protocol" => {
                cmd.env("GIT_PROTOCOL", value);
            }
            "authorization" => {}
            // Standard CGI meta-variables; http-backend needs HTTP_CONTENT_ENCODING
            // to gunzip the request bodies git sends compressed.
            other => {
                cmd.env(
                    format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
                    value,
                );
            }
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(_) => return simple(StatusCode::INTERNAL_SERVER_ERROR, "spawn failed\n"),
    };

    tokio::spawn(feed_stdin(body, child.stdin.take().unwrap(), state.clone()));
    tokio::spawn(drain_stderr(child.stderr.take().unwrap(), state.clone()));
    let mut stdout = child.stdout.take().unwrap();

    let (head, rest) = match read_cgi_head(&mut stdout).await {
        Some(split) => split,
        None => return simple(StatusCode::BAD_GATEWAY, "bad CGI response\n"),
    };
    let mut builder = Response::builder();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            builder = builder.status(code.parse::<u16>().unwrap_or(500));
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    builder
        .body(cgi_body(rest, stdout, child))
        .unwrap_or_else(|_| simple(StatusCode::BAD_GATEWAY, "bad CGI headers\n"))
}

async fn feed_stdin(mut body: Incoming, mut stdin: tokio::process::ChildStdin, state: Arc<State>) {
    let mut sample = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = BODY_SAMPLE_LIMIT.saturating_sub(sample.len());
        sample.extend_from_slice(&data[..room.min(data.len())]);
        if stdin.write_all(&data).await.is_err() {
            break;
        }
    }
    // Dropping stdin closes the pipe so http-backend sees EOF.
    drop(stdin);
    if !sample.is_empty() {
        state.raw.lock().unwrap().push(sample);
    }
}

async fn drain_stderr(mut stderr: impl AsyncRead + Unpin, state: Arc<State>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut log = state.backend_stderr.lock().unwrap();
        let room = STDERR_LIMIT.saturating_sub(log.len());
        log.extend_from_slice(&buf[..room.min(n)]);
    }
}

/// Reads the CGI header block; returns it and whatever body bytes came with it.
async fn read_cgi_head(stdout: &mut ChildStdout) -> Option<(String, Bytes)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stdout.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let end = [&b"\r\n\r\n"[..], b"\n\n"]
            .iter()
            .filter_map(|sep| {
                buf.windows(sep.len())
                    .position(|w| w == *sep)
                    .map(|p| (p, p + sep.len()))
            })
            .min();
        if let Some((head_end, body_start)) = end {
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            return Some((head, Bytes::copy_from_slice(&buf[body_start..])));
        }
        if buf.len() > CGI_HEADER_LIMIT {
            return None;
        }
    }
}

/// Streams `first` and then the rest of the CGI's stdout; reaps the child at EOF.
fn cgi_body(first: Bytes, stdout: ChildStdout, child: Child) -> RespBody {
    struct St {
        first: Option<Bytes>,
        stdout: ChildStdout,
        child: Child,
    }
    let state = St {
        first: Some(first).filter(|b| !b.is_empty()),
        stdout,
        child,
    };
    let stream = futures_util::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        if let Some(first) = st.first.take() {
            return Some((Ok(Frame::data(first)), Some(st)));
        }
        let mut buf = vec![0u8; 32 * 1024];
        match st.stdout.read(&mut buf).await {
            Ok(0) => {
                let _ = st.child.wait().await;
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(st)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}
