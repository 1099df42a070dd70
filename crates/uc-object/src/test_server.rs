//! An S3-compatible server on 127.0.0.1 for tests: `s3s-fs` over a temporary folder, with SigV4
//! authentication, ranged GETs and multipart uploads, that a test can stop mid-run.

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

/// The access key id the server accepts.
pub const ACCESS_KEY: &str = "uc-test-access-key";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "uc-test-secret-key-0123456789";

/// A running server; stopped on drop.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
    gate: Arc<Gate>,
}

/// What the server does with the requests to come (a test changes it while the server runs).
struct Gate {
    /// Requests still answered before the server plays dead (or stalls).
    budget: AtomicI64,
    /// Past the budget: hold requests unanswered instead of dropping them.
    stall: AtomicBool,
    /// Drop every n-th request (0: none), as a flaky network does.
    every: AtomicI64,
    /// Requests received, and answered.
    seen: AtomicI64,
    served: AtomicI64,
}

impl S3Server {
    /// Starts a server on a free port of 127.0.0.1, storing buckets as folders of a temp dir.
    pub fn start() -> std::io::Result<S3Server> {
        S3Server::start_with(true)
    }

    /// The same server without authentication: it also answers Google Cloud Storage's XML API
    /// (S3's requests under another name), which object_store's `gs://` client speaks to an
    /// emulator given by [`S3Server::gcs_env`].
    pub fn start_anonymous() -> std::io::Result<S3Server> {
        S3Server::start_with(false)
    }

    /// The environment a `gs://` client needs to use this server: a service-account key with the
    /// server as base URL and OAuth off (how object_store talks to GCS emulators).
    pub fn gcs_env(&self) -> Vec<(String, String)> {
        let key = format!(
            r#"{{"private_key": "", "private_key_id": "", "client_email": "uc-test", "disable_oauth": true, "gcs_base_url": "{}"}}"#,
            self.endpoint()
        );
        vec![("GOOGLE_SERVICE_ACCOUNT_KEY".to_string(), key)]
    }

    fn start_with(auth: bool) -> std::io::Result<S3Server> {
        let root = tempfile::tempdir()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut b = S3ServiceBuilder::new(fs);
        if auth {
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        }
        let service = b.build();
        let gate = Arc::new(Gate {
            budget: AtomicI64::new(i64::MAX),
            stall: AtomicBool::new(false),
            every: AtomicI64::new(0),
            seen: AtomicI64::new(0),
            served: AtomicI64::new(0),
        });
        let g = gate.clone();
        let service =
            hyper::service::service_fn(move |req| gated(service.clone(), g.clone(), auth, req));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        rt.spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3Server {
            addr,
            root,
            rt: Some(rt),
            gate,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a client needs: endpoint, credentials, region, plain HTTP.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates bucket `name` (a folder of the server's root).
    pub fn bucket(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.path().join(name))
    }

    /// The folder holding the buckets: objects are its files (tests put fixtures there directly).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Serves `n` more requests, then answers none (each connection is dropped unanswered) until
    /// [`S3Server::revive`].
    pub fn fail_after(&self, n: i64) {
        self.gate.budget.store(n, Ordering::SeqCst);
    }

    /// Serves `n` more requests, then accepts requests and never answers them (a stalled server).
    pub fn stall_after(&self, n: i64) {
        self.gate.stall.store(true, Ordering::SeqCst);
        self.gate.budget.store(n, Ordering::SeqCst);
    }

    /// Drops every `n`-th request it receives unanswered (0: none) until [`S3Server::revive`]:
    /// transient failures a client must retry.
    pub fn drop_every(&self, n: i64) {
        self.gate.every.store(n, Ordering::SeqCst);
    }

    /// Serves every request again after [`S3Server::fail_after`], [`S3Server::stall_after`] or
    /// [`S3Server::drop_every`].
    pub fn revive(&self) {
        self.gate.stall.store(false, Ordering::SeqCst);
        self.gate.every.store(0, Ordering::SeqCst);
        self.gate.budget.store(i64::MAX, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn served(&self) -> i64 {
        self.gate.served.load(Ordering::SeqCst)
    }

    /// Stops serving: open connections are dropped and new ones refused.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

type BoxErr = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One request through the gate: past the budget the server behaves as if it had died (no answer,
/// the connection dropped) or, when stalled, never answers; a flaky one drops every n-th request.
async fn gated(
    inner: s3s::service::S3Service,
    gate: Arc<Gate>,
    signed: bool,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Result<s3s::HttpResponse, BoxErr> {
    // A GCS client's OAuth token (empty towards an emulator) is no S3 signature: the anonymous
    // server takes such requests as unsigned ones; the signing server refuses them.
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer"));
    if bearer && !signed {
        req.headers_mut().remove(hyper::header::AUTHORIZATION);
    }
    let k = gate.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let every = gate.every.load(Ordering::SeqCst);
    if every > 0 && k % every == 0 {
        return Err("request dropped".into());
    }
    if gate.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
        if gate.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        return Err("server stopped".into());
    }
    gate.served.fetch_add(1, Ordering::SeqCst);
    match hyper::service::Service::call(&inner, req).await {
        Ok(r) => Ok(r),
        Err(e) => Err(format!("{e:?}").into()),
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
