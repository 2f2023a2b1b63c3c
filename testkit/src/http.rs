//! Test helper: a small HTTP/1.1 server and raw clients, run inside network namespaces, so that live
//! tests know exactly what went over the wire. The server supports keep-alive, pipelining, chunked
//! request bodies, and answers with responses that are a known function of the request:
//!
//! | path        | response                                                                    |
//! |-------------|-----------------------------------------------------------------------------|
//! | `/echo`     | 200 `application/json`, body [`echo`]`(request body)`, Content-Length       |
//! | `/chunked`  | the same, `Transfer-Encoding: chunked` in small chunks                      |
//! | `/gzip`     | the same, gzip-compressed (`Content-Encoding: gzip`)                        |
//! | `/healthz`  | 200 `application/json` `{"status":"ok"}`                                    |
//! | `/page`     | 200 `text/html`                                                             |
//! | other       | 404 `application/json`                                                      |

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use node_worker::discovery::in_netns;

/// The response body the server derives from a request body.
pub fn echo(body: &[u8]) -> Vec<u8> {
    let mut out = b"{\"echo\":".to_vec();
    out.extend_from_slice(body);
    out.push(b'}');
    out
}

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A parsed HTTP message: start line, headers (names lower-cased), body (de-chunked).
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses one message from the front of `buf`: `Some((message, bytes used))` when it is complete.
fn parse_message(buf: &[u8], response_to_head: bool) -> Option<(Message, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut message = Message {
        start,
        headers,
        body: Vec::new(),
    };
    let mut pos = end + 4;
    if response_to_head {
        return Some((message, pos));
    }
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // No trailers in these tests: the final CRLF.
                if buf.len() < pos + 2 {
                    return None;
                }
                return Some((message, pos + 2));
            }
            if buf.len() < pos + size + 2 {
                return None;
            }
            message.body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    let length = message
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < pos + length {
        return None;
    }
    message.body.extend_from_slice(&buf[pos..pos + length]);
    Some((message, pos + length))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// The response to a request.
fn respond(request: &Message) -> Vec<u8> {
    let target = request.start.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    let close = request
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let connection = if close { "close" } else { "keep-alive" };
    let simple = |status: &str, content_type: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    match path {
        "/echo" => simple("200 OK", "application/json", &echo(&request.body)),
        "/chunked" => {
            let body = echo(&request.body);
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: {connection}\r\n\r\n"
            )
            .into_bytes();
            for chunk in body.chunks(11) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        "/gzip" => {
            let body = gzip(&echo(&request.body));
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            out
        }
        "/healthz" => simple("200 OK", "application/json", br#"{"status":"ok"}"#),
        "/page" => simple(
            "200 OK",
            "text/html; charset=utf-8",
            b"<!doctype html><title>page</title><p>hello</p>",
        ),
        _ => simple(
            "404 Not Found",
            "application/json",
            br#"{"error":"not found"}"#,
        ),
    }
}

/// An HTTP server on a listener bound inside a namespace; stops (and joins its threads) on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicU64>,
}

impl Server {
    /// Serves on `addr` inside `ns`.
    pub fn start(ns: &crate::netns::Netns, addr: &str) -> Server {
        let listener = ns.listen(addr);
        Self::serve(listener)
    }

    /// Serves on a listener (bound wherever the caller wants).
    pub fn serve(listener: TcpListener) -> Server {
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let accept = {
            let (stop, received, connections) = (
                Arc::clone(&stop),
                Arc::clone(&received),
                Arc::clone(&connections),
            );
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
                            handlers.push(std::thread::spawn(move || {
                                serve_connection(stream, &stop, &received);
                            }));
                            handlers.retain(|h: &JoinHandle<()>| !h.is_finished());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                for h in handlers {
                    let _ = h.join();
                }
            })
        };
        Server {
            addr,
            stop,
            accept: Some(accept),
            received,
            connections,
        }
    }

    /// The requests served so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve_connection(mut stream: TcpStream, stop: &AtomicBool, received: &Mutex<Vec<Received>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(25)));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Every complete request in the buffer (pipelining), answered in order.
        while let Some((request, used)) = parse_message(&buf, false) {
            buf.drain(..used);
            let mut parts = request.start.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            received.lock().expect("lock").push(Received {
                method: method.to_string(),
                path: path.to_string(),
                body: request.body.clone(),
            });
            if stream.write_all(&respond(&request)).is_err() {
                return;
            }
            if request
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// One request to send: method, path, extra headers, body.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with `Transfer-Encoding: chunked` instead of Content-Length.
    pub chunked_body: bool,
}

impl Request {
    /// A POST with a JSON body.
    pub fn post_json(path: &str, body: &str) -> Request {
        Request {
            method: "POST",
            path: path.to_string(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            chunked_body: false,
        }
    }

    /// A GET without a body.
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET",
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            chunked_body: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_chunked_body(mut self) -> Request {
        self.chunked_body = true;
        self
    }

    /// The bytes on the wire.
    pub fn encode(&self, host: &str, close: bool) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", self.method, self.path);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        let mut out = out.into_bytes();
        if self.chunked_body {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for chunk in self.body.chunks(100) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            if !self.body.is_empty() || self.method == "POST" {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Reads one response from `stream` (buffering what follows it in `buf`).
pub fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Message {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some((message, used)) = parse_message(buf, false) {
            buf.drain(..used);
            return message;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a whole response ({} bytes buffered)",
                buf.len()
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

/// Connects from inside `ns` to `addr`, with a generous read timeout (impaired links retransmit).
pub fn connect(ns: &crate::netns::Netns, addr: SocketAddr) -> TcpStream {
    let stream = in_netns(&ns.path(), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(10))
    })
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("connect {addr} from {}: {e}", ns.name));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let _ = stream.set_nodelay(true);
    stream
}

/// Sends `requests` one after the other on one keep-alive connection from `ns`; the last one asks the
/// server to close. Returns the responses.
pub fn keep_alive(
    ns: &crate::netns::Netns,
    addr: SocketAddr,
    requests: &[Request],
) -> Vec<Message> {
    let mut stream = connect(ns, addr);
    let host = addr.to_string();
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let last = i + 1 == requests.len();
        stream
            .write_all(&request.encode(&host, last))
            .expect("send request");
        responses.push(read_response(&mut stream, &mut buf));
    }
    responses
}

/// Writes all `requests` at once on one connection (pipelining), then reads the responses in order.
pub fn pipelined(ns: &crate::netns::Netns, addr: SocketAddr, requests: &[Request]) -> Vec<Message> {
    let mut stream = connect(ns, addr);
    let host = addr.to_string();
    let mut wire = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        wire.extend_from_slice(&request.encode(&host, i + 1 == requests.len()));
    }
    stream.write_all(&wire).expect("send pipelined requests");
    let mut buf = Vec::new();
    requests
        .iter()
        .map(|_| read_response(&mut stream, &mut buf))
        .collect()
}
