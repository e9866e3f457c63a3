//! systemd's notify protocol (`Type=notify`): a datagram per state change to the socket
//! named by `NOTIFY_SOCKET`: `READY=1` once every worker listens, `RELOADING=1` and
//! `READY=1` around a reload, `STOPPING=1` on drain, `STATUS=` lines (generation and
//! request rate), and `WATCHDOG=1` pings every quarter `WATCHDOG_USEC` while every
//! worker's event loop is ticking: a worker stuck for half the interval stops the pings,
//! and systemd restarts the service (`WatchdogSec=`, `Restart=on-failure`).
//!
//! At an upgrade the old process names its successor the main process (`MAINPID=`) and
//! falls silent; the successor says `READY=1` and pings from then on.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) nothing is sent. Sending is best effort:
//! a failed send is logged once, never fatal.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::runtime::GatewayState;

/// How often the status line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Pings go out at least this often (and every quarter of the watchdog interval).
const PING_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// A worker counts as stuck only after this long without a tick (it ticks every 10 ms):
/// scheduling jitter and short pauses (a page fault storm, a VM pause) must not cost a
/// restart.
const STUCK_AT_LEAST: Duration = Duration::from_millis(200);

/// The socket systemd listens on.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    failed_once: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); `None` when
    /// it is unset or unusable (said in the log).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy().into_owned();
        match Notifier::to(&name) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {name:?}: {e}; not telling systemd our state");
                None
            }
        }
    }

    /// The socket `name` names (a path, or `@name`), as `NOTIFY_SOCKET` would.
    pub fn to(name: &str) -> io::Result<Notifier> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither a path nor an abstract name",
                ))
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
            failed_once: AtomicBool::new(false),
        })
    }

    /// Sends `state` (newline-separated `KEY=value` lines).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            if !self.failed_once.swap(true, Ordering::Relaxed) {
                log::warn!("cannot notify systemd: {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Before a reload; `READY=1` follows when it is done (applied or refused). (With
    /// `Type=notify` and `ExecReload=kill -HUP`, systemd 252 shows these in the unit's
    /// state but does not wait for them: `systemctl reload` returns once the signal is
    /// sent; the config is checked before that.)
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={}",
            crate::sys::monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` names one): pings go out at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The status line: the generation and the request rate.
fn status_line(state: &GatewayState, rate: Option<f64>) -> String {
    let generation = state.generation.load(Ordering::Relaxed);
    match rate {
        Some(rate) => format!("generation {generation}, {rate:.0} req/s"),
        None => format!("generation {generation}"),
    }
}

/// A thread of the control side that pings the watchdog while the workers are alive and
/// keeps the status line current.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    /// Draining: the workers' loops end one by one, so pings no longer depend on them
    /// (systemd's stop timeout bounds the drain).
    stopping: Arc<AtomicBool>,
    notifier: Arc<Notifier>,
    state: Arc<GatewayState>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Says `READY=1` and starts pinging (every quarter of `watchdog`, when set).
    pub fn start(
        notifier: Notifier,
        state: Arc<GatewayState>,
        watchdog: Option<Duration>,
    ) -> io::Result<Supervisor> {
        let notifier = Arc::new(notifier);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, stopping, notifier, state) = (
                stop.clone(),
                stopping.clone(),
                notifier.clone(),
                state.clone(),
            );
            std::thread::Builder::new()
                .name("ringgate-systemd".into())
                .spawn(move || supervise(&notifier, &state, watchdog, &stop, &stopping))?
        };
        // Ready only once the pings can follow: systemd arms its watchdog at READY=1.
        notifier.ready(&status_line(&state, None));
        Ok(Supervisor {
            stop,
            stopping,
            notifier,
            state,
            thread: Some(thread),
        })
    }

    pub fn reloading(&self) {
        self.notifier.reloading();
    }

    /// After a reload (applied or not): ready again, with the generation now serving.
    pub fn reloaded(&self) {
        self.notifier.ready(&status_line(&self.state, None));
    }

    /// An upgrade's successor (`pid`, in this service's cgroup: this process started it)
    /// serves: it becomes the service's main process, which this one stops being. The
    /// pings stop here (systemd takes them from the main process only); the successor's
    /// own supervisor says `READY=1` and pings from now on.
    pub fn handed_over(self, pid: u32) {
        self.notifier.send(&format!(
            "MAINPID={pid}\nSTATUS=handed over to process {pid}"
        ));
    }

    /// Draining: says so, and pings on without looking at the workers.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.notifier.stopping();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn supervise(
    notifier: &Notifier,
    state: &GatewayState,
    watchdog: Option<Duration>,
    stop: &AtomicBool,
    stopping: &AtomicBool,
) {
    // Pings every quarter interval, and a worker stuck for half of it withholds them: a
    // stall shorter than about half the interval never costs a restart, one longer than
    // the interval always does (systemd's timer runs from the last ping).
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 4).min(PING_AT_MOST_EVERY));
    let stuck_after = watchdog.map_or(Duration::MAX, |w| (w / 2).max(STUCK_AT_LEAST));
    let mut last_status = Instant::now();
    let mut last_total: Option<(Instant, u64)> = None;
    let mut said_stuck = false;
    while !stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(every);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let draining = stopping.load(Ordering::SeqCst);
        let stuck = if draining || watchdog.is_none() {
            Vec::new()
        } else {
            state.stuck_workers(stuck_after)
        };
        if watchdog.is_some() {
            if stuck.is_empty() {
                notifier.send("WATCHDOG=1");
                said_stuck = false;
            } else if !said_stuck {
                log::error!(
                    "worker(s) {stuck:?} stopped ticking; withholding the watchdog's pings (systemd restarts the service if it lasts)"
                );
                said_stuck = true;
            }
        }
        if !draining && last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            let total = requests_total(state);
            let rate = last_total.map(|(at, before)| {
                total.saturating_sub(before) as f64 / at.elapsed().as_secs_f64().max(1e-3)
            });
            last_total = Some((Instant::now(), total));
            notifier.send(&format!("STATUS={}", status_line(state, rate)));
        }
    }
}

/// Requests answered so far, over every worker and route (a scrape: workers answer on
/// their next tick; one that does not within 100 ms counts as it last answered).
fn requests_total(state: &GatewayState) -> u64 {
    state
        .scrape_metrics(Duration::from_millis(100))
        .iter()
        .flat_map(|r| &r.routes)
        .map(|route| route.requests.iter().flatten().sum::<u64>())
        .sum()
}
