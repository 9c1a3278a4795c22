//! The web timeline: [`Viewer::start`] serves one trace on a local address (`hv trace view`).
//!
//! Routes: `/` (the page), `/app.js`, `/style.css` (embedded from `trace-viewer/web/`),
//! `/api/trace` (the trace as Perfetto JSON trace events, see [`crate::export::perfetto`]) and
//! `/api/stats` ([`Stats`] as JSON); anything else is 404. Both API bodies are computed once, at
//! start. The server answers on its own thread until [`Viewer::shutdown`] (or drop).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::Trace;
use crate::stats::Stats;

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
    /// The trace could not be turned into JSON.
    #[error("cannot export the trace as JSON")]
    Export(#[source] std::io::Error),
    /// The statistics could not be turned into JSON.
    #[error("cannot serialize the trace statistics")]
    Stats(#[source] serde_json::Error),
}

/// The bodies the server hands out.
struct Content {
    trace_json: Vec<u8>,
    stats_json: Vec<u8>,
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
    /// Serves `trace` on `addr` (port 0 picks a free port; see [`Viewer::addr`]).
    pub fn start(trace: &Trace, addr: SocketAddr) -> Result<Viewer, ServeError> {
        let mut trace_json = Vec::new();
        crate::export::perfetto(trace, &mut trace_json).map_err(ServeError::Export)?;
        let stats_json = serde_json::to_vec(&Stats::compute(trace)).map_err(ServeError::Stats)?;
        let content = Arc::new(Content {
            trace_json,
            stats_json,
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

/// What a route serves: status, content type, body.
fn route<'a>(method: &Method, url: &str, content: &'a Content) -> (u16, &'static str, &'a [u8]) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let found: Option<(&'static str, &'a [u8])> = match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML.as_bytes())),
        "/app.js" => Some(("text/javascript; charset=utf-8", APP_JS.as_bytes())),
        "/style.css" => Some(("text/css; charset=utf-8", STYLE_CSS.as_bytes())),
        "/api/trace" => Some(("application/json", &content.trace_json)),
        "/api/stats" => Some(("application/json", &content.stats_json)),
        _ => None,
    };
    match (method, found) {
        (Method::Get | Method::Head, Some((kind, body))) => (200, kind, body),
        (_, Some(_)) => (405, "text/plain; charset=utf-8", b"method not allowed\n"),
        (_, None) => (404, "text/plain; charset=utf-8", b"not found\n"),
    }
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
    let (status, kind, body) = if local_host(&request, port) {
        route(request.method(), request.url(), content)
    } else {
        (
            403,
            "text/plain; charset=utf-8",
            &b"not this server's host name\n"[..],
        )
    };
    let mut response = Response::from_data(body).with_status_code(status);
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

    use hv_link::trace::RecordKind;

    use super::*;
    use crate::testing::{header, rec};

    fn trace() -> Trace {
        Trace::new(
            header(),
            vec![
                rec(1_000, 0, 0, RecordKind::VmEntry, 0, 0),
                rec(5_000, 0, 0, RecordKind::VmExit, 1, 0x1000),
                rec(6_000, 0, 0, RecordKind::Marker, 1, 0),
                rec(2_000, 1, 1, RecordKind::Halt, 0, 0),
                rec(9_000, 1, 1, RecordKind::Wake, 0, 0),
            ],
        )
    }

    fn start() -> Viewer {
        Viewer::start(&trace(), (Ipv4Addr::LOCALHOST, 0).into()).expect("start the viewer")
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
        let viewer = start();
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

        let (status, kind, body) = get(addr, "/api/trace");
        assert_eq!((status, kind.as_str()), (200, "application/json"));
        let events: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let events = events
            .as_array()
            .or_else(|| events["traceEvents"].as_array())
            .expect("an array of events");
        assert!(
            events
                .iter()
                .any(|e| e["name"] == "guest" && e["ph"] == "X")
        );
        assert!(
            events
                .iter()
                .any(|e| e["name"] == "halted" && e["ph"] == "X")
        );
        assert!(events.iter().any(|e| e["name"] == "thread_name"));

        let (status, kind, body) = get(addr, "/api/stats?x=1");
        assert_eq!((status, kind.as_str()), (200, "application/json"));
        let stats: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(stats["system"], "test");

        let (status, _, _) = get(addr, "/nothing/here");
        assert_eq!(status, 404);
        let (status, _, _) = get(addr, "/api");
        assert_eq!(status, 404);
        viewer.shutdown();
    }

    #[test]
    fn other_methods_are_refused_and_junk_does_not_stop_the_server() {
        let viewer = start();
        let addr = viewer.addr();
        let answer = exchange(
            addr,
            format!(
                "POST /api/trace HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
                format!("GET /api/trace HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
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
            b"GET /api/trace HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nabc",
        );
        drop(TcpStream::connect(addr).unwrap());
        let (status, _, _) = get(addr, "/api/stats");
        assert_eq!(status, 200, "still serving");
        viewer.shutdown();
    }

    #[test]
    fn shutdown_stops_serving_and_a_taken_port_is_a_bind_error() {
        let viewer = start();
        let addr = viewer.addr();
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let err = Viewer::start(&trace(), taken.local_addr().unwrap()).unwrap_err();
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
