//! A small HTTP/1.1 server on 127.0.0.1 for the fetch tests, told per test how to answer (and
//! how to fail). One request per connection (`Connection: close`); every request is recorded.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the server saw it; header names are lower-case.
#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An answer: status, headers, body, and how to misbehave while sending it.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes (Content-Length still says all), then close.
    pub cut_after: Option<usize>,
    /// Pause this long after the head (and any bytes before the cut) before going on.
    pub stall: Option<Duration>,
    /// Do not send a Content-Length (the body ends when the connection closes).
    pub no_length: bool,
    /// Send the body one byte at a time with this pause between bytes.
    pub drip: Option<Duration>,
    /// After the body, keep sending it again and again until the client hangs up.
    pub endless: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply { status, ..Default::default() }
    }

    pub fn ok(body: &[u8]) -> Self {
        Reply { status: 200, body: body.to_vec(), ..Default::default() }
    }

    /// `body`, honouring a `Range: bytes=N-` request with 206 and Content-Range.
    pub fn file(req: &Req, body: &[u8]) -> Self {
        let start = req.header("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-'));
        match start.and_then(|s| s.parse::<usize>().ok()) {
            Some(s) if s < body.len() => Reply::ok(&body[s..])
                .with_status(206)
                .header("content-range", &format!("bytes {s}-{}/{}", body.len() - 1, body.len())),
            Some(_) => Reply::status(416).header("content-range", &format!("bytes */{}", body.len())),
            None => Reply::ok(body),
        }
    }

    pub fn redirect(to: &str) -> Self {
        Reply::status(302).header("location", to)
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn with_status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

/// Runs until dropped. The handler gets the request and how many requests came before it.
pub struct Server {
    pub port: u16,
    log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (l, s) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (l, h) = (l.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, &l, h.as_ref()));
            }
        });
        Server { port, log, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<Req>>, handler: &Handler) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req { path, headers };
    let n = {
        let mut l = log.lock().unwrap();
        l.push(req.clone());
        l.iter().filter(|r| r.path == req.path).count() - 1
    };
    let r = handler(&req, n);
    let mut out = conn;
    let mut head = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", r.status);
    if !r.no_length {
        head += &format!("content-length: {}\r\n", r.body.len());
    }
    for (k, v) in &r.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let sent = r.cut_after.unwrap_or(r.body.len()).min(r.body.len());
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = match r.drip {
        Some(pause) => r.body[..sent].iter().try_for_each(|b| {
            std::thread::sleep(pause);
            out.write_all(&[*b]).and_then(|_| out.flush())
        }),
        None => out.write_all(&r.body[..sent]).and_then(|_| out.flush()),
    };
    while r.endless && !r.body.is_empty() && out.write_all(&r.body).is_ok() {}
    if let Some(d) = r.stall {
        std::thread::sleep(d);
    }
    // Closing without the rest of a Content-Length body is the "dropped connection".
    let _ = out.shutdown(std::net::Shutdown::Both);
}
