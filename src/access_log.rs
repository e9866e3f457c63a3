//! Access logs: one JSON line per request, written off the request path.
//!
//! A worker appends each line to its own buffer (no lock, no syscall) and hands the
//! buffer to the writer thread once per tick (10 ms) through a bounded channel. If the
//! buffer is full, or the channel is (the writer cannot keep up with the disk), lines
//! are dropped and counted (`ringgate_access_log_dropped_lines_total`) rather than
//! slowing requests. The writer reopens its file when asked (SIGUSR1, logrotate's
//! convention).

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

pub use crate::config::AccessLogConfig;

/// Batches the writer may have queued before workers start dropping.
const QUEUED_BATCHES: usize = 256;

/// Shared between the writer, the workers and the admin side.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub dropped_lines: AtomicU64,
    pub written_lines: AtomicU64,
    reopen: AtomicBool,
}

impl LogCounters {
    /// Asks the writer to reopen its file (after logrotate moved it away).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
    }
}

/// The writer thread's handles for the workers.
#[derive(Clone)]
pub struct LogLink {
    batches: Sender<Vec<u8>>,
    pub counters: Arc<LogCounters>,
    config: AccessLogConfig,
}

/// Opens the log and starts the writer thread; it ends once every `LogLink` is gone,
/// after writing what it was handed.
pub fn start(config: &AccessLogConfig) -> io::Result<LogLink> {
    let mut out = Output::open(config.path.as_deref())?;
    let (batches, rx) = crossbeam_channel::bounded(QUEUED_BATCHES);
    let counters = Arc::new(LogCounters::default());
    let shared = counters.clone();
    let path = config.path.clone();
    std::thread::Builder::new()
        .name("ringgate-log".into())
        .spawn(move || write_loop(&rx, &mut out, path.as_deref(), &shared))?;
    Ok(LogLink {
        batches,
        counters,
        config: config.clone(),
    })
}

enum Output {
    Stdout(io::Stdout),
    File(io::BufWriter<File>),
}

impl Output {
    fn open(path: Option<&Path>) -> io::Result<Output> {
        Ok(match path {
            None => Output::Stdout(io::stdout()),
            Some(p) => Output::File(io::BufWriter::with_capacity(
                1 << 16,
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(s) => s,
            Output::File(f) => f,
        }
    }
}

fn write_loop(rx: &Receiver<Vec<u8>>, out: &mut Output, path: Option<&Path>, c: &LogCounters) {
    let mut trouble = Trouble::default();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => {
                // A reopen asked for before this batch came applies to it: its lines
                // belong in the new file (logrotate has moved the old one already).
                reopen_if_asked(out, path, c, &mut trouble);
                let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
                match out.writer().write_all(&batch) {
                    Ok(()) => {
                        c.written_lines.fetch_add(lines, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.dropped_lines.fetch_add(lines, Ordering::Relaxed);
                        trouble.report(&e, c);
                    }
                }
                // Under steady load the queue is never empty: a reopen must not wait.
                if !rx.is_empty() && !c.reopen.load(Ordering::Relaxed) {
                    continue;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.writer().flush();
                return;
            }
        }
        if let Err(e) = out.writer().flush() {
            trouble.report(&e, c);
        }
        reopen_if_asked(out, path, c, &mut trouble);
    }
}

/// Flushes what is buffered for the old file and opens the path afresh, if SIGUSR1 asked.
fn reopen_if_asked(out: &mut Output, path: Option<&Path>, c: &LogCounters, trouble: &mut Trouble) {
    if !c.reopen.swap(false, Ordering::SeqCst) {
        return;
    }
    if let Err(e) = out.writer().flush() {
        trouble.report(&e, c);
    }
    match Output::open(path) {
        Ok(fresh) => *out = fresh,
        Err(e) => log::error!("access_log: cannot reopen: {e}"),
    }
}

/// Write failures (a full disk, mostly), said at most once every ten seconds: the
/// gateway goes on serving and counts the lines it could not write.
#[derive(Default)]
struct Trouble {
    last_said: Option<std::time::Instant>,
}

impl Trouble {
    fn report(&mut self, e: &io::Error, c: &LogCounters) {
        if self
            .last_said
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last_said = Some(std::time::Instant::now());
        log::error!(
            "access_log: cannot write: {e}; serving on, lines dropped so far: {}",
            c.dropped_lines.load(Ordering::Relaxed)
        );
    }
}

/// A worker's side of the access log.
pub struct WorkerLog {
    link: LogLink,
    buffer: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    /// Deterministic sampling: every request adds `sample`; a line is due each time the
    /// sum passes a whole number (so 0.25 logs exactly every fourth request).
    sampled: Cell<f64>,
}

impl WorkerLog {
    pub fn new(link: LogLink) -> WorkerLog {
        let cap = link.config.buffer_bytes;
        WorkerLog {
            link,
            buffer: RefCell::new(Vec::with_capacity(cap.min(1 << 16))),
            lines: Cell::new(0),
            sampled: Cell::new(0.0),
        }
    }

    /// Whether this request is one of the sampled ones.
    pub fn sample(&self) -> bool {
        let s = self.sampled.get() + self.link.config.sample;
        if s >= 1.0 {
            self.sampled.set(s - 1.0);
            true
        } else {
            self.sampled.set(s);
            false
        }
    }

    /// Appends one line written by `write` (without its newline), or counts it dropped
    /// when the buffer is full.
    pub fn line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() >= self.link.config.buffer_bytes {
            self.link
                .counters
                .dropped_lines
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        write(&mut buffer);
        buffer.push(b'\n');
        self.lines.set(self.lines.get() + 1);
    }

    /// Hands the buffered lines to the writer (once per worker tick).
    pub fn flush(&self) {
        let lines = self.lines.replace(0);
        if lines == 0 {
            return;
        }
        let batch = std::mem::take(&mut *self.buffer.borrow_mut());
        match self.link.batches.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.link
                    .counters
                    .dropped_lines
                    .fetch_add(lines, Ordering::Relaxed);
            }
        }
    }
}

/// `2026-11-21T09:58:03.123Z` for `t`.
pub fn rfc3339_millis(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::http::date::civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut out = Vec::new();
        rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_255_083_123),
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-21T09:58:03.123Z");
        let mut out = Vec::new();
        rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400),
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn sampling_is_exact_and_full_buffers_drop_and_count() {
        let dir = std::env::temp_dir().join(format!("rg-log-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let config = AccessLogConfig {
            path: Some(path.clone()),
            sample: 0.25,
            buffer_bytes: 64,
        };
        let link = start(&config).unwrap();
        let counters = link.counters.clone();
        let log = WorkerLog::new(link);
        assert_eq!((0..100).filter(|_| log.sample()).count(), 25);
        for i in 0..10 {
            log.line(|b| b.extend_from_slice(format!("line {i} padded to twenty").as_bytes()));
        }
        log.flush();
        drop(log);
        // The counter moves when a batch enters the writer's buffer, the file when that
        // buffer is flushed: wait for the file.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut text = String::new();
        while text.lines().count() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "lines never written: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
            text = std::fs::read_to_string(&path).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(counters.written_lines.load(Ordering::Relaxed), 3);
        assert_eq!(counters.dropped_lines.load(Ordering::Relaxed), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
