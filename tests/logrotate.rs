//! The shipped logrotate file (`tuning/logrotate/ringgate`) run by the real logrotate
//! against a running gateway process: the access log is moved away, `SIGUSR1` makes the
//! gateway reopen its path, and no line is lost: the lines before are in the rotated file,
//! the lines after in the new one.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringgate");

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn logrotate_moves_the_log_and_the_gateway_reopens_it() {
    if Command::new("logrotate")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "CI installs logrotate");
        eprintln!("SKIPPED: logrotate not found");
        return;
    }
    let dir = temp_dir("logrotate");
    let log = dir.join("access.log");
    let up = Upstream::echo();
    let port = free_port();
    let config = dir.join("ringgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [access_log]\npath = \"{}\"\n\
             [[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\
             [[routes]]\nname = \"r\"\npath = \"/a/*\"\nupstream = \"up\"\n",
            log.display(),
            up.addr
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let child = KilledOnDrop(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "{}",
        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
    let send = |n: usize| {
        let mut c = Client::connect(addr);
        for _ in 0..n {
            assert_eq!(c.get("/a/x").status, 200);
        }
    };
    send(10);
    assert!(eventually(Duration::from_secs(3), || lines(&log) == 10));

    // The shipped file, pointed at this log and this process (the service user and
    // systemctl are the appliance's).
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/logrotate/ringgate"
    ))
    .unwrap();
    let rules = shipped
        .replace("/var/log/ringgate/access.log", &log.display().to_string())
        .replace("create 0600 ringgate ringgate", "create 0600")
        .replace("su ringgate ringgate", "")
        .replace(
            "systemctl kill --signal=USR1 --kill-whom=main ringgate.service >/dev/null 2>&1 || true",
            &format!("kill -USR1 {}", child.0.id()),
        );
    assert_ne!(rules, shipped);
    let conf = dir.join("logrotate.conf");
    std::fs::write(&conf, rules).unwrap();
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The signal is taken by the gateway's signal thread, which asks the log writer to
    // reopen: a moment for that before the next lines.
    std::thread::sleep(Duration::from_millis(300));
    send(5);
    let rotated = dir.join("access.log.1");
    assert!(
        eventually(Duration::from_secs(3), || lines(&log) == 5),
        "the new file has the lines after: {} (rotated: {}); logrotate said: {}",
        lines(&log),
        lines(&dir.join("access.log.1")),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&rotated), 10, "the rotated file has the lines before");
}
