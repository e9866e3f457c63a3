//! loadgen: an open-loop HTTP/1.1 load generator for the overload and soak benches, where
//! wrk falls short: it keeps a request *rate* whatever the answers take (wrk keeps a
//! number of connections busy, so an overloaded server just slows it down), measures
//! latency from when each request was due (so a server that falls behind is seen falling
//! behind: no coordinated omission), sorts answers into served (2xx), shed
//! (503 `overloaded`) and other, and signs requests on the fly with an app's secret
//! (wrk's Lua has no HMAC), so signed routes run at full rate.
//!
//! Each of `--connections` keep-alive connections is one client sending a request every
//! `connections / rate` seconds (staggered); a client whose answer comes late sends its
//! next request at once, and that request's latency counts from when it was due. What
//! fell due in the measurement and was not answered by its end (in flight, or never sent
//! because the client fell that far behind) is `unanswered`: a server that cannot keep up
//! shows there. Prints a human summary and a last line of JSON for scripts.
//!
//! ```sh
//! cargo build --release --example loadgen
//! target/release/examples/loadgen --target 127.0.0.1:8080 --rate 20000 \
//!     --connections 4000 --duration 20 --path /api/hello \
//!     --signed /signed/x --app-key demo --app-secret "$SECRET"
//! ```

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(
    about = "Open-loop HTTP/1.1 load generator (served / shed / other, latency from due time)"
)]
struct Args {
    /// Address to load.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Requests a second in all; 0 = closed loop (each connection as fast as answers come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keep-alive connections (clients), spread over the threads.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A plain GET path (repeatable; requests cycle through paths then signed paths).
    #[arg(long)]
    path: Vec<String>,
    /// A GET path signed with --app-key/--app-secret (repeatable).
    #[arg(long)]
    signed: Vec<String>,
    #[arg(long, default_value = "")]
    app_key: String,
    #[arg(
        long,
        env = "LOADGEN_APP_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    app_secret: String,
    /// Host header.
    #[arg(long, default_value = "loadgen")]
    host: String,
    /// An answer not complete within this many seconds breaks its connection (an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// A header line added to every request, `"Name: value"` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Write one line a second of the measurement to this file: second, served, shed,
    /// other, errors, served p99 from send (ms), by when the answer (or error) came.
    #[arg(long)]
    series: Option<std::path::PathBuf>,
}

/// One second of the measurement (`--series`).
struct Second {
    served: u64,
    shed: u64,
    other: u64,
    errors: u64,
    service: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second {
            served: 0,
            shed: 0,
            other: 0,
            errors: 0,
            service: Histogram::new_with_bounds(1, 120_000_000, 2).expect("constant bounds"),
        }
    }
}

/// What one thread saw during the measurement.
struct Tally {
    /// Latency from when the request was due (what its client saw).
    served: Histogram<u64>,
    shed: Histogram<u64>,
    /// Latency from when the request was sent (what the server took).
    served_service: Histogram<u64>,
    other: u64,
    /// Fell due in the measurement but were not answered by its end (sent late, or never).
    unanswered: u64,
    errors: u64,
    first_error: Option<String>,
    /// Per second of the measurement, kept with `--series`.
    series: Option<Vec<Second>>,
}

impl Tally {
    fn new() -> Tally {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("constant bounds");
        Tally {
            served: h(),
            shed: h(),
            served_service: h(),
            other: 0,
            unanswered: 0,
            errors: 0,
            first_error: None,
            series: None,
        }
    }

    /// The `--series` slot of second `n`, if kept.
    fn second(&mut self, n: usize) -> Option<&mut Second> {
        let series = self.series.as_mut()?;
        while series.len() <= n {
            series.push(Second::new());
        }
        Some(&mut series[n])
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.served.add(&other.served);
        let _ = self.served_service.add(&other.served_service);
        let _ = self.shed.add(&other.shed);
        self.other += other.other;
        self.unanswered += other.unanswered;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        if let Some(theirs) = other.series {
            for (n, s) in theirs.into_iter().enumerate() {
                if let Some(mine) = self.second(n) {
                    mine.served += s.served;
                    mine.shed += s.shed;
                    mine.other += s.other;
                    mine.errors += s.errors;
                    let _ = mine.service.add(&s.service);
                }
            }
        }
    }
}

enum Kind {
    Plain,
    Signed,
}

/// One answer.
#[derive(Clone, Copy)]
enum Outcome {
    Served,
    Shed,
    Other,
}

fn main() {
    let args = Args::parse();
    if args.path.is_empty() && args.signed.is_empty() {
        eprintln!("loadgen: give at least one --path or --signed");
        std::process::exit(2);
    }
    if !args.signed.is_empty() && (args.app_key.is_empty() || args.app_secret.is_empty()) {
        eprintln!("loadgen: --signed needs --app-key and --app-secret (or LOADGEN_APP_SECRET)");
        std::process::exit(2);
    }
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|t| {
            let args = args.clone();
            std::thread::spawn(move || run_thread(&args, t, start))
        })
        .collect();
    let mut all = Tally::new();
    if args.series.is_some() {
        all.series = Some(Vec::new());
    }
    for t in threads {
        all.merge(t.join().expect("a load thread panicked"));
    }
    report(&args, &all);
    if let (Some(path), Some(series)) = (&args.series, &all.series) {
        if let Err(e) = write_series(path, series) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

fn write_series(path: &std::path::Path, series: &[Second]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "# second served shed other errors served_p99_ms_from_send"
    )?;
    for (n, s) in series.iter().enumerate() {
        let p99 = if s.service.is_empty() {
            0.0
        } else {
            s.service.value_at_quantile(0.99) as f64 / 1000.0
        };
        writeln!(
            out,
            "{n} {} {} {} {} {p99:.3}",
            s.served, s.shed, s.other, s.errors
        )?;
    }
    out.flush()
}

fn run_thread(args: &Args, thread: usize, start: Instant) -> Tally {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("an event loop");
    rt.block_on(async {
        let mut fresh = Tally::new();
        if args.series.is_some() {
            fresh.series = Some(Vec::new());
        }
        let tally = Rc::new(RefCell::new(fresh));
        let threads = args.threads.max(1);
        let mine: Vec<usize> = (thread..args.connections).step_by(threads).collect();
        let tasks: Vec<_> = mine
            .into_iter()
            .map(|conn| monoio::spawn(client(args.clone(), thread, conn, start, tally.clone())))
            .collect();
        for t in tasks {
            t.await;
        }
        Rc::try_unwrap(tally)
            .ok()
            .expect("every client is done")
            .into_inner()
    })
}

/// One client: a keep-alive connection sending on its schedule until the end.
async fn client(args: Args, thread: usize, conn: usize, start: Instant, tally: Rc<RefCell<Tally>>) {
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    // Staggered: the clients' requests are spread over one interval, not sent at once.
    let mut due = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(conn as f64 / args.connections as f64)
        });
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut n: u64 = 0;
    let mut request = Vec::with_capacity(512);
    loop {
        let now = Instant::now();
        if due >= end || now >= end {
            break;
        }
        if interval.is_some() && now < due {
            monoio::time::sleep(due - now).await;
        }
        let sent_due = if interval.is_some() {
            due
        } else {
            Instant::now()
        };
        let counted = sent_due >= measure_from;
        if stream.is_none() {
            match TcpStream::connect(args.target).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                    buf.clear();
                }
                Err(e) => {
                    note_error(&tally, counted, measure_from, format!("connect: {e}"));
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    due = advance(due, interval);
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        build_request(&args, thread, conn, n, &mut request);
        n += 1;
        let sent = Instant::now();
        let exchange = async {
            let (written, back) = s.write_all(std::mem::take(&mut request)).await;
            request = back;
            written.map_err(|e| format!("write: {e}"))?;
            read_answer(s, &mut buf).await
        };
        // An answer still missing when the measurement ends is unanswered, not an error.
        let limit = Duration::from_secs_f64(args.timeout)
            .min(end.saturating_duration_since(Instant::now()));
        match monoio::time::timeout(limit, exchange).await {
            Ok(Ok((what, keep))) => {
                if counted {
                    let now = Instant::now();
                    let us = now.duration_since(sent_due).as_micros() as u64;
                    let service = now.duration_since(sent).as_micros() as u64;
                    let mut t = tally.borrow_mut();
                    let second = t.second(now.duration_since(measure_from).as_secs() as usize);
                    match (what, second) {
                        (Outcome::Served, Some(s)) => {
                            s.served += 1;
                            s.service.saturating_record(service.max(1));
                        }
                        (Outcome::Shed, Some(s)) => s.shed += 1,
                        (Outcome::Other, Some(s)) => s.other += 1,
                        (_, None) => {}
                    }
                    match what {
                        Outcome::Served => {
                            t.served.saturating_record(us.max(1));
                            t.served_service.saturating_record(service.max(1));
                        }
                        Outcome::Shed => t.shed.saturating_record(us.max(1)),
                        Outcome::Other => t.other += 1,
                    }
                }
                if !keep {
                    stream = None;
                }
            }
            Ok(Err(e)) => {
                note_error(&tally, counted, measure_from, e);
                stream = None;
            }
            Err(_) if Instant::now() >= end => {
                if counted {
                    tally.borrow_mut().unanswered += 1;
                }
                break;
            }
            Err(_) => {
                note_error(&tally, counted, measure_from, "timed out".to_string());
                stream = None;
            }
        }
        due = advance(due, interval);
    }
    // Requests that fell due in the measurement but were never sent: this client fell
    // behind its schedule by that many.
    if let Some(i) = interval {
        let mut t = tally.borrow_mut();
        while due < end {
            if due >= measure_from {
                t.unanswered += 1;
            }
            due += i;
        }
    }
}

fn advance(due: Instant, interval: Option<Duration>) -> Instant {
    match interval {
        Some(i) => due + i,
        None => Instant::now(),
    }
}

fn note_error(tally: &RefCell<Tally>, counted: bool, measure_from: Instant, e: String) {
    if counted {
        let mut t = tally.borrow_mut();
        t.errors += 1;
        t.first_error.get_or_insert(e);
        let n = Instant::now().duration_since(measure_from).as_secs() as usize;
        if let Some(s) = t.second(n) {
            s.errors += 1;
        }
    }
}

/// The `n`-th request of a client: paths first, then signed paths, in turn.
fn build_request(args: &Args, thread: usize, conn: usize, n: u64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let kinds = args.path.len() + args.signed.len();
    let pick = (n as usize + conn) % kinds;
    let (kind, path) = if pick < args.path.len() {
        (Kind::Plain, &args.path[pick])
    } else {
        (Kind::Signed, &args.signed[pick - args.path.len()])
    };
    let _ = write!(out, "GET {path} HTTP/1.1\r\nHost: {}\r\n", args.host);
    for h in &args.header {
        let _ = write!(out, "{h}\r\n");
    }
    if let Kind::Signed = kind {
        // Unique per process, thread, connection and request (16-64 characters).
        let nonce = format!(
            "loadgen-{:08}-{thread:03}-{conn:06}-{n:012}",
            std::process::id()
        );
        let (bare, query) = path.split_once('?').unwrap_or((path, ""));
        let signed = ringgate::auth::sign::sign_request(
            &args.app_key,
            args.app_secret.as_bytes(),
            "GET",
            bare,
            query,
            b"",
            ringgate::auth::check::unix_now(),
            &nonce,
        )
        .expect("a signable path (absolute, no control bytes, a valid query)");
        let _ = write!(
            out,
            "X-Rg-Key: {}\r\nX-Rg-Timestamp: {}\r\nX-Rg-Nonce: {}\r\nX-Rg-Signature: {}\r\n",
            signed.key, signed.timestamp, signed.nonce, signed.signature
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads one answer (Content-Length framed; chunked is not expected of the gateway's
/// error bodies or of the bench upstreams); says what it was and whether the connection
/// stays open.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(Outcome, bool), String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                if header("transfer-encoding").is_some() {
                    return Err("chunked answer: not supported by loadgen".into());
                }
                let len: usize = header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let keep = header("connection").as_deref() != Some("close");
                while buf.len() < head_len + len {
                    fill(s, buf).await?;
                }
                let body = &buf[head_len..head_len + len];
                let outcome = match status {
                    200..=299 => Outcome::Served,
                    503 if names_overloaded(body) => Outcome::Shed,
                    _ => Outcome::Other,
                };
                buf.drain(..head_len + len);
                return Ok((outcome, keep));
            }
            Ok(httparse::Status::Partial) => fill(s, buf).await?,
            Err(e) => return Err(format!("bad answer: {e}")),
        }
    }
}

fn names_overloaded(body: &[u8]) -> bool {
    body.windows(12).any(|w| w == b"\"overloaded\"")
}

/// Reads more of the answer after what `buf` holds.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut v = std::mem::take(buf);
    if v.capacity() - v.len() < 4096 {
        v.reserve(16 * 1024);
    }
    let (len, cap) = (v.len(), v.capacity());
    let (r, back) = s.read(monoio::buf::SliceMut::new(v, len, cap)).await;
    *buf = back.into_inner();
    match r {
        Ok(0) => Err("closed by the server".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn report(args: &Args, t: &Tally) {
    let secs = args.duration;
    let served = t.served.len();
    let shed = t.shed.len();
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    println!(
        "offered {:.0}/s over {} connections for {secs} s: served {served} ({:.0}/s), shed {shed} ({:.0}/s), other {}, unanswered {}, errors {}",
        args.rate,
        args.connections,
        served as f64 / secs,
        shed as f64 / secs,
        t.other,
        t.unanswered,
        t.errors
    );
    println!(
        "served latency from due time: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; shed p99 {:.2} ms",
        ms(&t.served, 0.5),
        ms(&t.served, 0.99),
        ms(&t.served, 0.999),
        t.served.max() as f64 / 1000.0,
        ms(&t.shed, 0.99)
    );
    println!(
        "served latency from send: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        ms(&t.served_service, 0.5),
        ms(&t.served_service, 0.99),
        ms(&t.served_service, 0.999)
    );
    if let Some(e) = &t.first_error {
        println!("first error: {e}");
    }
    println!(
        "{{\"offered_rps\":{:.0},\"connections\":{},\"seconds\":{secs},\"served\":{served},\"shed\":{shed},\"other\":{},\"unanswered\":{},\"errors\":{},\"served_rps\":{:.0},\"shed_rps\":{:.0},\"served_p50_ms\":{:.3},\"served_p99_ms\":{:.3},\"served_p999_ms\":{:.3},\"served_max_ms\":{:.3},\"served_service_p50_ms\":{:.3},\"served_service_p99_ms\":{:.3},\"shed_p99_ms\":{:.3}}}",
        args.rate,
        args.connections,
        t.other,
        t.unanswered,
        t.errors,
        served as f64 / secs,
        shed as f64 / secs,
        ms(&t.served, 0.5),
        ms(&t.served, 0.99),
        ms(&t.served, 0.999),
        t.served.max() as f64 / 1000.0,
        ms(&t.served_service, 0.5),
        ms(&t.served_service, 0.99),
        ms(&t.shed, 0.99)
    );
}
