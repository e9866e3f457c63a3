//! The running gateway's side of an upgrade: start the successor, hand it the listening
//! sockets, wait until it serves.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::channel::{timed_out, Channel, Received};
use super::CHANNEL_FD_ENV;
use crate::runtime::GatewayHandle;

/// How to start a successor: the binary at the path this process was started from (a
/// package upgrade has put the new one there) with the same arguments.
#[derive(Clone, Debug)]
pub struct Relaunch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Relaunch {
    /// This process's binary as it was started (`argv[0]`: a symlink such as
    /// `/usr/local/bin/ringgate -> /opt/ringgate-1.2/ringgate` is followed anew at the
    /// upgrade, to the version it points at then), made absolute now: relative to the
    /// working directory, or found in `PATH` when a bare name. Where that names no file
    /// (a made-up `argv[0]`), the executable's own path. The same arguments.
    pub fn of_this_process() -> io::Result<Relaunch> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        let exe = argv0
            .and_then(|p| absolute_program(&p))
            .filter(|p| p.is_file());
        Ok(Relaunch {
            exe: match exe {
                Some(p) => p,
                None => std::env::current_exe()?,
            },
            args: args.collect(),
        })
    }
}

/// `program` as an absolute path: as is, against the working directory, or searched in
/// `PATH` (a bare name), as a shell would have found it.
fn absolute_program(program: &std::path::Path) -> Option<PathBuf> {
    if program.is_absolute() {
        return Some(program.to_path_buf());
    }
    if program.components().count() > 1 {
        return std::env::current_dir().ok().map(|d| d.join(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Sends what `nonces` holds, a shard at a time.
fn send_nonces(channel: &Channel, nonces: &crate::auth::nonce::NonceCache) -> io::Result<()> {
    let mut sent = Ok(());
    nonces.for_each_live_shard(crate::clock::unix_now(), |entries| {
        if sent.is_ok() {
            sent = channel.send_entries(entries);
        }
    });
    sent
}

/// See `Released::stop_successor`.
pub fn stop_successor(pid: u32) {
    log::info!("upgrade: a stop came during the upgrade; asking process {pid} to stop");
    crate::sys::terminate(pid);
}

/// A successor started and handed the sockets, not yet serving.
pub struct Successor {
    channel: Channel,
    child: Child,
}

impl Successor {
    /// Starts the successor and hands it a copy of every listening socket. From here on
    /// a drain of this gateway leaves the sockets listening (see `abandon` if it fails).
    pub fn start(handle: &GatewayHandle, how: &Relaunch) -> Result<Successor, String> {
        let (ours, theirs) =
            crate::sys::seqpacket_pair().map_err(|e| format!("cannot make a channel: {e}"))?;
        // The state file as the successor will read it, and half of what is left of each
        // quota for each process while both serve.
        handle.split_quotas_for_successor();
        let mut cmd = Command::new(&how.exe);
        cmd.args(&how.args)
            .env(CHANNEL_FD_ENV, theirs.as_raw_fd().to_string())
            // Our watchdog settings name this process; the successor's pings count once
            // systemd knows it as the main process.
            .env_remove("WATCHDOG_PID");
        crate::sys::inherit_fd(&mut cmd, theirs.as_raw_fd());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                handle.whole_quotas_again();
                return Err(format!("cannot start {}: {e}", how.exe.display()));
            }
        };
        drop(theirs);
        let successor = Successor {
            channel: Channel::new(ours),
            child,
        };
        if let Err(e) = successor.send_sockets(handle) {
            successor.abandon(handle);
            return Err(format!("cannot hand the sockets over: {e}"));
        }
        Ok(successor)
    }

    fn send_sockets(&self, handle: &GatewayHandle) -> io::Result<()> {
        for (name, socket) in handle.handover_sockets() {
            self.channel
                .send(&format!("listener {name}"), Some(&socket))?;
        }
        self.channel.send(
            &format!("drain-timeout {}", handle.drain_timeout().as_millis()),
            None,
        )?;
        // The replay cache: its keys, a probe fingerprint (a successor that fingerprints
        // differently takes neither), and what it holds now, for the successor to know
        // before it serves.
        let nonces = &handle.state().nonces;
        let [k0, k1, k2, k3, k4, k5, k6, k7] = nonces.keys();
        let probe = nonces.probe();
        self.channel.send(
            &format!(
                "nonce-keys {k0} {k1} {k2} {k3} {k4} {k5} {k6} {k7} {} {}",
                (probe >> 64) as u64,
                probe as u64
            ),
            None,
        )?;
        send_nonces(&self.channel, nonces)?;
        if let Some([a, b, c, d]) = handle.key_seeds() {
            self.channel
                .send(&format!("key-seeds {a} {b} {c} {d}"), None)?;
        }
        self.channel.send("end", None)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the successor to serve. On failure (it said so, exited,
    /// or did not answer in time: then it is killed) the successor is gone and the error
    /// says why; call `abandon`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stop();
                return Err(format!(
                    "no word from the new process within {timeout:?}; stopped it"
                ));
            }
            match self.channel.receive(left) {
                Ok(Received::Message(m, _)) if m.starts_with("ready ") => return Ok(()),
                Ok(Received::Message(m, _)) if m.starts_with("failed ") => {
                    return Err(format!("the new process failed: {}", &m["failed ".len()..]))
                }
                Ok(Received::Message(m, _)) => log::warn!("upgrade: unexpected message {m:?}"),
                Ok(Received::Entries(_)) => log::warn!("upgrade: unexpected replay cache entries"),
                // Closed, or reset: it exited (with our messages unread, if reset).
                Ok(Received::Closed) => return Err(self.gone()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(self.gone()),
                Err(e) if timed_out(&e) => {}
                Err(e) => {
                    self.stop();
                    return Err(format!(
                        "the channel to the new process failed ({e}); stopped it"
                    ));
                }
            }
        }
    }

    /// Why the successor closed its channel: its exit status (it is stopped if it has
    /// not exited within a second).
    fn gone(&mut self) -> String {
        match self.exited_within(Duration::from_secs(1)) {
            Some(status) => format!("the new process exited ({status})"),
            None => {
                self.stop();
                "the new process closed its channel; stopped it".to_string()
            }
        }
    }

    /// Stops the successor: SIGTERM first (it may have accepted connections on the shared
    /// sockets; its drain serves them and leaves the sockets listening), SIGKILL if it
    /// has not exited within a few seconds.
    fn stop(&mut self) {
        crate::sys::terminate(self.child.id());
        if self.exited_within(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
        }
    }

    /// The successor's exit status, if it exits within `within`.
    fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The upgrade failed: the successor is stopped (if it still runs) and reaped, and
    /// the sockets are this gateway's alone again.
    pub fn abandon(mut self, handle: &GatewayHandle) {
        if self.exited_within(Duration::ZERO).is_none() {
            self.stop();
        }
        let _ = self.child.wait();
        handle.listeners_released();
        handle.sweep_listeners();
        handle.whole_quotas_again();
    }

    /// This gateway no longer accepts (it drains next): the successor has the sockets to
    /// itself. Its process is not waited for: it outlives this one.
    pub fn release(self) -> Released {
        if let Err(e) = self.channel.send("released", None) {
            log::warn!("upgrade: cannot tell the new process it is on its own: {e}");
        }
        Released {
            pid: self.child.id(),
            channel: self.channel,
        }
    }
}

/// The successor serves alone; this gateway drains.
pub struct Released {
    channel: Channel,
    pid: u32,
}

impl Released {
    /// A stop was asked of this process during the upgrade (while the successor
    /// started, or while this one drains: systemd may not have seen `MAINPID=` yet): the
    /// service is to stop, so the successor (now the main process) is asked to stop too.
    pub fn stop_successor(&self) {
        stop_successor(self.pid);
    }

    /// Hands the successor what the replay cache holds now (it fingerprints alike: the keys
    /// went with the sockets), so a request this process accepted is a replay there too.
    pub fn send_nonces(&self, nonces: &crate::auth::nonce::NonceCache) {
        if let Err(e) = send_nonces(&self.channel, nonces) {
            log::warn!("upgrade: cannot hand the replay cache over: {e}");
        }
    }

    /// Drained and stopped, its last quota use saved: the successor counts it now.
    pub fn finished(self) {
        let _ = self.channel.send("finished", None);
    }
}
