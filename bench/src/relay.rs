//! The relay bound: the least a platform can cost that answers HTTP in one
//! process and runs the user's code in another, as every platform we compare
//! with does (an invoker or router in front of an isolated worker).
//!
//! A bare hyper server hands each request's params to one of two runtime
//! workers (the platform's own `host.js`/`host.py`, unsandboxed, with the same
//! newline-delimited JSON frames and the same pipelining) and answers
//! `{"result": …}`. It keeps no session, writes no log row, counts nothing and
//! checks nothing. Its ratio to a language's floor is the ceiling of that
//! ratio for any design with a process boundary between the HTTP front and the
//! script, on this machine at this moment.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

/// Workers per script, as the platform runs them on two cores.
const WORKERS: usize = 2;
/// Most frames written to a worker in one write.
const MAX_BATCH: usize = 64;

/// The runtime the relay fronts, and the adder script it prepares.
fn host_command(language: &str, runtimes: &Path) -> anyhow::Result<(Command, &'static str)> {
    let limits = ["1000", "65536", "8388608"];
    let (mut cmd, script) = match language {
        "nodejs" => {
            let mut cmd = Command::new("node");
            cmd.arg("--max-old-space-size=128").arg(runtimes.join("nodejs/host.js"));
            (cmd, "return event.params.a + event.params.b;")
        }
        "python" => {
            let mut cmd = Command::new("python3");
            cmd.args(["-I", "-S"]).arg(runtimes.join("python/host.py"));
            (cmd, "result = params['a'] + params['b']")
        }
        other => bail!("no relay for {other}"),
    };
    cmd.args(limits);
    Ok((cmd, script))
}

/// Replies of the requests written to a worker, oldest first.
type Waiting = Arc<Mutex<VecDeque<oneshot::Sender<Option<Bytes>>>>>;

/// One worker's request side; its reader task answers in the order written.
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
}

struct Job {
    params: Box<RawValue>,
    /// The answer's body, or `None` when the worker failed the request.
    reply: oneshot::Sender<Option<Bytes>>,
}

#[derive(Deserialize)]
struct Answer<'a> {
    ok: bool,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Body {
    params: Box<RawValue>,
}

impl Worker {
    async fn start(language: &str, runtimes: &Path) -> anyhow::Result<Self> {
        let (mut cmd, script) = host_command(language, runtimes)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut line = Vec::new();
        stdout.read_until(b'\n', &mut line).await?;
        let prepare = serde_json::json!({ "op": "prepare", "seq": 0, "script": script });
        stdin.write_all(format!("{prepare}\n").as_bytes()).await?;
        line.clear();
        stdout.read_until(b'\n', &mut line).await?;
        if !serde_json::from_slice::<Answer>(&line).is_ok_and(|a| a.ok) {
            bail!("{language} worker refused the adder: {}", String::from_utf8_lossy(&line));
        }
        let (jobs, queue) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(write_frames(stdin, queue, waiting.clone()));
        tokio::spawn(read_answers(stdout, waiting, child));
        Ok(Self { jobs })
    }
}

/// Writes every queued job's frame in one write, as the platform's pool does.
async fn write_frames(mut stdin: ChildStdin, mut queue: mpsc::UnboundedReceiver<Job>, waiting: Waiting) {
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(4096);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        buf.clear();
        {
            let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
            for job in batch.drain(..) {
                seq += 1;
                buf.extend_from_slice(br#"{"op":"invoke","seq":"#);
                buf.extend_from_slice(seq.to_string().as_bytes());
                buf.extend_from_slice(br#","params":"#);
                buf.extend_from_slice(job.params.get().as_bytes());
                buf.extend_from_slice(br#","context":{},"request_id":"relay"}"#);
                buf.push(b'\n');
                waiting.push_back(job.reply);
            }
        }
        if stdin.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// Answers each waiting request with its frame's `{"result": …}`.
async fn read_answers(mut stdout: BufReader<ChildStdout>, waiting: Waiting, _child: tokio::process::Child) {
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        match stdout.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let body = match serde_json::from_slice::<Answer>(&line) {
            Ok(Answer { ok: true, result: Some(result) }) => {
                Some(Bytes::from(format!(r#"{{"result":{}}}"#, result.get())))
            }
            _ => None,
        };
        let reply = waiting.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        if let Some(reply) = reply {
            let _ = reply.send(body);
        }
    }
}

async fn answer(
    workers: Arc<(Vec<Worker>, AtomicUsize)>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let reply = async {
        let body = request.into_body().collect().await.ok()?.to_bytes();
        let Body { params } = serde_json::from_slice(&body).ok()?;
        let (reply, answer) = oneshot::channel();
        let (list, next) = &*workers;
        let worker = &list[next.fetch_add(1, Ordering::Relaxed) % list.len()];
        worker.jobs.send(Job { params, reply }).ok()?;
        Some(answer.await.ok().flatten())
    };
    match reply.await {
        Some(Some(body)) => {
            let mut response = Response::new(Full::new(body));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        // The load generator counts both as errors.
        Some(None) => status(StatusCode::BAD_GATEWAY, "worker failed"),
        None => status(StatusCode::BAD_REQUEST, "bad request"),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response
}

/// Serves the relay (run as a child of the harness) until killed.
pub async fn serve(language: &str, runtimes: &Path) -> anyhow::Result<()> {
    let mut list = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        list.push(Worker::start(language, runtimes).await?);
    }
    let workers = Arc::new((list, AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let workers = workers.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let workers = workers.clone();
                async move { Ok::<_, Infallible>(answer(workers, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
