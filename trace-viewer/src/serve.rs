//! The web timeline: [`Viewer::start`] serves one trace's [`Index`] on a local address
//! (`hv trace view`).
//!
//! Routes: `/` (the page), `/app.js`, `/style.css` (embedded from `trace-viewer/web/`) and the
//! API, all JSON: `/api/meta` (system, span, counts, tracks), `/api/range?from=&to=&px=[&q=]`
//! (what to draw in a time range, see [`crate::query::range`]), `/api/search?q=&after=[&dir=prev]`
//! (the total and the next or previous match, see [`crate::query::search`]), `/api/item?track=&k=`
//! (one item with its details), `/api/source?partition=&rip=` (a guest rip's source line, from the
//! partition's ELF and DWARF), `/api/irq` (the interrupt-latency histograms per partition) and,
//! for a live view, `POST /api/save`. Times are µs from the trace's first item. A bad
//! parameter is a 400 with the reason, anything else 404. Nothing is computed at start beyond the
//! index: each answer reads what it needs from the index file, so memory does not grow with the
//! trace. The server answers on its own thread until [`Viewer::shutdown`] (or drop).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::index::Index;
use crate::live::LiveTrace;
use crate::query::{Matcher, QueryError, RangeQuery, Store, params};

/// The page and its assets, embedded at build time.
const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// How often the serving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Why the viewer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server could not be set up on the bound socket.
    #[error("cannot start the HTTP server on {addr}: {message}")]
    Server {
        /// The bound address.
        addr: SocketAddr,
        /// What the server library said.
        message: String,
    },
}

/// What the server answers from.
struct Content {
    source: Source,
    matcher: Matcher,
}

/// Saves what a live view has received as a trace file; the file's path, or why not.
pub type SaveFn = Box<dyn Fn() -> Result<std::path::PathBuf, String> + Send + Sync>;

/// What a viewer shows.
enum Source {
    /// A trace file, through its index.
    File(Box<Index>),
    /// A running system's trace, growing, and how to save it.
    Live(Arc<RwLock<LiveTrace>>, SaveFn),
}

impl Content {
    /// Runs `f` on the store (a live trace stays locked for reading meanwhile).
    fn with_store<R>(&self, f: impl FnOnce(&dyn Store) -> R) -> R {
        match &self.source {
            Source::File(index) => f(&**index),
            Source::Live(live, _) => match live.read() {
                Ok(live) => f(&*live),
                Err(poisoned) => f(&*poisoned.into_inner()),
            },
        }
    }
}

/// A running viewer: answers HTTP requests on [`Viewer::addr`] until [`Viewer::shutdown`].
pub struct Viewer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer").field("addr", &self.addr).finish()
    }
}

impl Viewer {
    /// Serves the trace of `index` on `addr` (port 0 picks a free port; see [`Viewer::addr`]).
    pub fn start(index: Index, addr: SocketAddr) -> Result<Viewer, ServeError> {
        Viewer::start_source(Source::File(Box::new(index)), addr)
    }

    /// Serves a live trace on `addr`: the page follows it as it grows; its Save button calls
    /// `save` (`POST /api/save`).
    pub fn start_live(
        live: Arc<RwLock<LiveTrace>>,
        save: SaveFn,
        addr: SocketAddr,
    ) -> Result<Viewer, ServeError> {
        Viewer::start_source(Source::Live(live, save), addr)
    }

    fn start_source(source: Source, addr: SocketAddr) -> Result<Viewer, ServeError> {
        let content = Arc::new(Content {
            source,
            matcher: Matcher::default(),
        });
        let listener =
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let server = Server::from_listener(listener, None).map_err(|e| ServeError::Server {
            addr: bound,
            message: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("trace-viewer".into())
            .spawn(move || serve(&server, bound.port(), &content, &flag))
            .map_err(|e| ServeError::Server {
                addr: bound,
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(Viewer {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the viewer listens on (with the port actually bound).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops serving and waits for the serving thread (requests in progress are answered).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The serving loop, until `stop`.
fn serve(server: &Server, port: u16, content: &Arc<Content>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(POLL) {
            // Each request on its own thread: dropping a request reads what is left of its
            // body, so a client that announces a body and never sends it blocks only its own.
            Ok(Some(request)) => {
                let content = Arc::clone(content);
                let _ = std::thread::Builder::new()
                    .name("trace-viewer-request".into())
                    .spawn(move || answer(request, port, &content));
            }
            Ok(None) => {}
            // The listener failed (closed under us): nothing more will arrive.
            Err(_) => break,
        }
    }
}

/// A response: status, content type, body.
type Answer = (u16, &'static str, std::borrow::Cow<'static, [u8]>);

fn text(status: u16, message: String) -> Answer {
    (
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes().into(),
    )
}

fn json_answer(value: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => (200, "application/json", body.into()),
        Err(e) => text(500, format!("cannot serialize the answer: {e}")),
    }
}

fn query_answer<T: serde::Serialize>(result: Result<T, QueryError>) -> Answer {
    match result {
        Ok(value) => json_answer(&value),
        Err(QueryError::BadRequest(reason)) => text(400, reason),
        Err(QueryError::Unknown(reason)) => json_answer(&json!({ "error": reason })),
        Err(e @ QueryError::Index(_)) => text(500, format!("{e}")),
    }
}

/// What a route serves.
fn route(method: &Method, url: &str, content: &Content, save_header: bool) -> Answer {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = path.split('#').next().unwrap_or(path);
    let query = query.split('#').next().unwrap_or(query);
    let known = matches!(
        path,
        "/" | "/index.html"
            | "/app.js"
            | "/style.css"
            | "/api/meta"
            | "/api/range"
            | "/api/search"
            | "/api/irq"
            | "/api/item"
            | "/api/save"
            | "/api/source"
    );
    if !known {
        return text(404, "not found".into());
    }
    if path == "/api/save" {
        return save(method, content, save_header);
    }
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "method not allowed".into());
    }
    let page = |kind, body: &'static str| (200, kind, body.as_bytes().into());
    match path {
        "/" | "/index.html" => page("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => page("text/css; charset=utf-8", STYLE_CSS),
        "/api/meta" => match &content.source {
            Source::File(index) => json_answer(&meta(index)),
            Source::Live(live, _) => json_answer(&read(live).meta()),
        },
        "/api/irq" => match &content.source {
            Source::File(index) => json_answer(&index.meta().irq),
            Source::Live(live, _) => json_answer(&read(live).irq()),
        },
        "/api/range" => query_answer(RangeQuery::parse(query).and_then(|q| {
            content.with_store(|store| crate::query::range(store, &q, &content.matcher))
        })),
        "/api/item" => query_answer(item(query, content)),
        "/api/source" => query_answer(source(query, content)),
        _ => query_answer(search(query, content)),
    }
}

fn item(query: &str, content: &Content) -> Result<crate::query::ItemOut, QueryError> {
    let p = params(query);
    let number = |name: &str| {
        let v = p
            .get(name)
            .ok_or_else(|| QueryError::BadRequest(format!("missing parameter '{name}'")))?;
        v.parse::<u64>()
            .map_err(|_| QueryError::BadRequest(format!("bad number {name}={v}")))
    };
    let track = usize::try_from(number("track")?)
        .map_err(|_| QueryError::BadRequest("bad track".into()))?;
    let k = number("k")?;
    content.with_store(|store| crate::query::item(store, track, k))
}

fn source(query: &str, content: &Content) -> Result<crate::query::SourceLine, QueryError> {
    let p = params(query);
    let get = |name: &str| {
        p.get(name)
            .ok_or_else(|| QueryError::BadRequest(format!("missing parameter '{name}'")))
    };
    let partition = get("partition")?;
    let partition = partition
        .parse::<u32>()
        .map_err(|_| QueryError::BadRequest(format!("bad partition={partition}")))?;
    let rip = get("rip")?;
    let rip = match rip.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => rip.parse(),
    }
    .map_err(|_| QueryError::BadRequest(format!("bad rip={rip}")))?;
    match &content.source {
        Source::File(index) => crate::query::source(&index.meta().header, partition, rip),
        Source::Live(live, _) => {
            let header = read(live).header().clone();
            crate::query::source(&header, partition, rip)
        }
    }
}

fn search(query: &str, content: &Content) -> Result<crate::query::SearchAnswer, QueryError> {
    let p = params(query);
    let q = p
        .get("q")
        .ok_or_else(|| QueryError::BadRequest("missing parameter 'q'".into()))?;
    let after = match p.get("after") {
        None => f64::NEG_INFINITY,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|v| !v.is_nan())
            .ok_or_else(|| QueryError::BadRequest(format!("bad number after={v}")))?,
    };
    let backwards = match p.get("dir").map(String::as_str) {
        None | Some("next") => false,
        Some("prev") => true,
        Some(other) => {
            return Err(QueryError::BadRequest(format!(
                "bad dir={other} (next or prev)"
            )));
        }
    };
    content.with_store(|store| crate::query::search(store, &content.matcher, q, after, backwards))
}

fn read(live: &RwLock<LiveTrace>) -> std::sync::RwLockReadGuard<'_, LiveTrace> {
    live.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /api/save` (with an `X-Hv-Save: 1` header, which a page of another origin cannot send
/// without a CORS preflight this server never answers): a live view saves what it received.
fn save(method: &Method, content: &Content, save_header: bool) -> Answer {
    let Source::Live(_, save) = &content.source else {
        return text(
            400,
            "only a live view saves (this one shows a trace file)".into(),
        );
    };
    if *method != Method::Post {
        return text(405, "method not allowed (POST)".into());
    }
    if !save_header {
        return text(403, "missing the X-Hv-Save header".into());
    }
    match save() {
        Ok(path) => json_answer(&json!({ "path": path })),
        Err(reason) => text(500, format!("cannot save: {reason}")),
    }
}

/// `/api/meta`: what the page needs before its first range.
fn meta(index: &Index) -> serde_json::Value {
    let m = index.meta();
    json!({
        "system": m.header.system,
        "duration_us": (m.end - m.start) as f64 / 1e3,
        "records": m.records,
        "lost": m.lost,
        "items": m.items,
        "flows": m.flows,
        "tracks": m.tracks.iter().map(|t| json!({
            "label": t.label, "partition": t.partition, "vcpu": t.vcpu, "items": t.items,
        })).collect::<Vec<_>>(),
        "partitions": m.header.partitions.iter().map(|p| json!({
            "id": p.id, "name": p.name, "image": p.image,
        })).collect::<Vec<_>>(),
        "tsc_khz": m.header.clock.tsc_khz,
        "epoch_unix_ns": m.header.clock.epoch_unix_ns,
        "start_ns": m.start,
    })
}

/// Whether a request's `Host` names this server (or is absent): a page that a DNS-rebinding
/// attack loaded in a local browser names its own host, and must not read the trace.
fn local_host(request: &Request, port: u16) -> bool {
    let Some(host) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_ascii_lowercase())
    else {
        return true;
    };
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host == format!("{name}:{port}") || (port == 80 && host == *name))
}

fn answer(request: Request, port: u16, content: &Content) {
    let save_header = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("X-Hv-Save") && h.value.as_str() == "1");
    let (status, kind, body) = if local_host(&request, port) {
        route(request.method(), request.url(), content, save_header)
    } else {
        text(403, "not this server's host name".into())
    };
    let mut response = Response::from_data(body.into_owned()).with_status_code(status);
    for (name, value) in [
        ("Content-Type", kind),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        if let Ok(header) = Header::from_bytes(name, value) {
            response.add_header(header);
        }
    }
    // The client may have gone away: nothing to do about it.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};

    use hv_link::trace::{RecordKind, TraceWriter};

    use super::*;
    use crate::testing::{header, rec};

    /// A trace file with a guest slice and a marker on `a`, a halted slice on `b` vCPU 1, and
    /// its index; the directory holds both.
    fn indexed() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hvt");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = TraceWriter::new(file, &header()).unwrap();
        w.write_batch(&[
            rec(1_000, 0, 0, RecordKind::VmEntry, 0, 0),
            rec(2_000, 1, 1, RecordKind::Halt, 0, 0),
            rec(5_000, 0, 0, RecordKind::VmExit, 1, 0x1000),
            rec(6_000, 0, 0, RecordKind::Marker, 1, 0),
            rec(9_000, 1, 1, RecordKind::Wake, 0, 0),
        ])
        .unwrap();
        w.finish().unwrap();
        let (index, _) = Index::open_or_build(&path).unwrap();
        (dir, index)
    }

    fn start() -> (tempfile::TempDir, Viewer) {
        let (dir, index) = indexed();
        let viewer =
            Viewer::start(index, (Ipv4Addr::LOCALHOST, 0).into()).expect("start the viewer");
        (dir, viewer)
    }

    /// Sends `raw` and reads the whole answer (the server closes on `Connection: close`).
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read the answer");
        String::from_utf8(answer).expect("a UTF-8 answer")
    }

    /// Sends `raw` and reads whatever comes back within a moment, leaving the connection open.
    fn poke(addr: SocketAddr, raw: &[u8]) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = stream.write_all(raw);
        let _ = stream.read(&mut [0; 4096]);
        std::mem::forget(stream);
    }

    /// GETs `path`: status, Content-Type, body.
    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let answer = exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let kind = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        (status, kind, body.to_owned())
    }

    #[test]
    fn serves_the_page_the_assets_and_the_api() {
        let (_dir, viewer) = start();
        let addr = viewer.addr();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0, "port 0 is replaced by the bound port");
        assert_eq!(viewer.url(), format!("http://{addr}/"));

        let (status, kind, body) = get(addr, "/");
        assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"));
        assert!(body.contains("<canvas"), "{body}");
        assert!(body.contains("app.js") && body.contains("style.css"));
        let (status, kind, body) = get(addr, "/app.js");
        assert_eq!(
            (status, kind.as_str()),
            (200, "text/javascript; charset=utf-8")
        );
        assert!(body.contains("hvTimeline"));
        let (status, kind, _) = get(addr, "/style.css");
        assert_eq!((status, kind.as_str()), (200, "text/css; charset=utf-8"));

        let (status, kind, body) = get(addr, "/api/meta");
        assert_eq!((status, kind.as_str()), (200, "application/json"));
        let meta: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(meta["system"], "test");
        assert_eq!(meta["items"], 3);
        assert_eq!(meta["duration_us"], 8.0);
        let labels: Vec<&str> = meta["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, ["a vCPU 0", "b vCPU 0", "b vCPU 1"]);

        let (status, kind, body) = get(addr, "/api/range?from=0&to=8&px=100");
        assert_eq!((status, kind.as_str()), (200, "application/json"));
        let range: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let a = &range["tracks"][0];
        assert_eq!(a["exact"], true);
        assert_eq!(a["items"][0]["n"], "guest");
        assert_eq!(a["items"][0]["s"], 0.0);
        assert_eq!(a["items"][0]["d"], 4.0);
        let (_, _, body) = get(addr, "/api/item?track=0&k=0");
        let guest: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(
            (guest["n"].as_str(), guest["a"]["rip"].as_str()),
            (Some("guest"), Some("0x1000"))
        );
        assert_eq!(a["items"][1]["n"], "marker 1");
        assert_eq!(range["tracks"][2]["items"][0]["n"], "halted");

        let (status, _, body) = get(addr, "/api/search?q=MARK&after=-1");
        assert_eq!(status, 200);
        let found: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(found["total"], 1);
        assert_eq!(found["match"]["track"], 0);
        assert_eq!(found["match"]["item"]["s"], 5.0);
        let (_, _, body) = get(addr, "/api/search?q=marker&after=5");
        let none: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            (none["total"].as_u64(), none["match"].is_null()),
            (Some(1), true)
        );

        for (bad, why) in [
            ("/api/range?from=5&to=1", "ends before it starts"),
            ("/api/range?from=x&to=1", "bad number from=x"),
            ("/api/range?to=1", "missing parameter 'from'"),
            ("/api/range?from=0&to=1&px=0", "bad px=0"),
            ("/api/search?q=", "empty search"),
            ("/api/search?q=a&dir=up", "bad dir=up"),
            ("/api/item?track=0&k=3", "no item 3"),
            ("/api/item?track=x&k=0", "bad number track=x"),
            ("/api/source?partition=0&rip=zz", "bad rip=zz"),
            ("/api/source?partition=5&rip=0x10", "no partition 5"),
        ] {
            let (status, _, body) = get(addr, bad);
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body.contains(why), "{bad}: {body}");
        }
        let (status, _, body) = get(addr, "/api/source?partition=0&rip=0x10");
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"{"error":"cannot read the ELF and DWARF of a.elf"#),
            "{body}"
        );
        let (status, _, body) = get(addr, "/api/irq");
        assert_eq!((status, body.as_str()), (200, "[]"));

        let (status, _, _) = get(addr, "/nothing/here");
        assert_eq!(status, 404);
        let (status, _, _) = get(addr, "/api");
        assert_eq!(status, 404);
        viewer.shutdown();
    }

    #[test]
    fn other_methods_are_refused_and_junk_does_not_stop_the_server() {
        let (_dir, viewer) = start();
        let addr = viewer.addr();
        let answer = exchange(
            addr,
            format!(
                "POST /api/meta HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        // Another host name (a DNS-rebinding page) is refused; localhost is fine.
        for (host, status) in [
            (format!("evil.example:{}", addr.port()), "403"),
            (format!("localhost:{}", addr.port()), "200"),
        ] {
            let answer = exchange(
                addr,
                format!("GET /api/meta HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{host}: {answer}"
            );
        }
        // Malformed requests: garbage, a bad request line, a lying Content-Length, a hang-up.
        poke(addr, b"\x00\xff\xfe garbage\r\n\r\n");
        poke(addr, b"GET\r\n\r\n");
        poke(
            addr,
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        );
        poke(
            addr,
            b"GET /api/meta HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nabc",
        );
        drop(TcpStream::connect(addr).unwrap());
        let (status, _, _) = get(addr, "/api/meta");
        assert_eq!(status, 200, "still serving");
        viewer.shutdown();
    }

    #[test]
    fn shutdown_stops_serving_and_a_taken_port_is_a_bind_error() {
        let (_dir, viewer) = start();
        let addr = viewer.addr();
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (_dir2, index) = indexed();
        let err = Viewer::start(index, taken.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, ServeError::Bind { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot listen on"), "{err}");
        viewer.shutdown();
        // tiny_http's accept thread closes the socket a moment after the server is dropped.
        let closed = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            TcpStream::connect(addr).is_err()
        });
        assert!(closed, "still listening 5 s after shutdown");
    }
}
