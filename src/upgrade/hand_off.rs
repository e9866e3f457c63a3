//! The running gateway's side of an upgrade: start the successor, hand it the listening
//! sockets, wait until it serves.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::channel::{Channel, Received};
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
    /// This process's binary as it was started (`argv[0]`, made absolute now: a symlink
    /// such as `/usr/local/bin/ringgate -> /opt/ringgate-1.2/ringgate` is followed anew
    /// at the upgrade, to the version it points at then), else the executable's own path;
    /// and the same arguments.
    pub fn of_this_process() -> io::Result<Relaunch> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        let exe = match argv0 {
            // A path (not a bare name looked up in PATH): relative to where we started.
            Some(p) if p.components().count() > 1 => std::env::current_dir()?.join(p),
            _ => std::env::current_exe()?,
        };
        Ok(Relaunch {
            exe,
            args: args.collect(),
        })
    }
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
        let mut cmd = Command::new(&how.exe);
        cmd.args(&how.args)
            .env(CHANNEL_FD_ENV, theirs.as_raw_fd().to_string())
            // Our watchdog settings name this process; the successor's pings count once
            // systemd knows it as the main process.
            .env_remove("WATCHDOG_PID");
        crate::sys::inherit_fd(&mut cmd, theirs.as_raw_fd());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", how.exe.display()))?;
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
                // Closed, or reset: it exited (with our messages unread, if reset).
                Ok(Received::Closed) => return Err(self.gone()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(self.gone()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
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
    /// A stop was asked of this process while it started the successor: the service is
    /// to stop, so the successor (now the main process) is asked to stop too.
    pub fn stop_successor(&self) {
        log::info!(
            "upgrade: a stop came during the upgrade; asking process {} to stop",
            self.pid
        );
        crate::sys::terminate(self.pid);
    }

    /// Drained and stopped, its last quota use saved: the successor counts it now.
    pub fn finished(self) {
        let _ = self.channel.send("finished", None);
    }
}
