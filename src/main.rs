//! The `ringgate` command line. Only argument handling and process lifecycle live here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use ringgate::config;
use ringgate::upgrade::{Predecessor, Relaunch, TakenOver};

/// jemalloc keeps objects of one size class together, so the small state of thousands of
/// parked connections does not pin the pages that their freed buffers and serving
/// futures shared with it: 1.7 KiB of resident memory per idle keep-alive connection
/// against 5.8-6.1 KiB on glibc, and at 1024-4096 busy connections 5-20% more req/s
/// (benches/load/RESULTS.md, 2026-12-05). mimalloc was tried before and put the signed
/// route's p99 at 3.5-5 ms; jemalloc keeps it level with glibc (chain.sh).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEFAULT_CONFIG: &str = "/etc/ringgate/ringgate.toml";

#[derive(Parser)]
#[command(
    name = "ringgate",
    about = "Thread-per-core API gateway on io_uring",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Report on this host for a gateway: io_uring, limits, sysctls against the shipped
    /// profile, CPUs and NUMA, NIC queues and interrupts, a recommended server.cpus.
    /// Reads only; changes nothing.
    Tune {
        /// Compare sysctls with this profile's overlay too: throughput or latency.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Validate a config file: print every problem with its path, exit 1 on any.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the gateway with a built-in demo backend on an embedded config.
    Demo {
        /// Address for the gateway's listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Address for the admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Address for the HTTPS listener (a self-signed certificate is generated).
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: String,
    },
    /// Print the RG-HMAC-SHA256 headers (and a curl command) for a request, for app developers.
    Sign {
        /// The app key.
        #[arg(long)]
        key: String,
        /// The app secret; defaults to the RINGGATE_SECRET environment variable (which,
        /// unlike an argument, does not show up in `ps` or shell history).
        #[arg(long, env = "RINGGATE_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// http://host[:port]/path[?query]
        #[arg(long)]
        url: String,
        /// A file holding the request body.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Unix seconds (default: now).
        #[arg(long)]
        timestamp: Option<u64>,
        /// 16-64 characters of [A-Za-z0-9_-] (default: fresh random).
        #[arg(long)]
        nonce: Option<String>,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // First, while no thread or descriptor of ours exists: the channel an upgrading
    // gateway passed, if it started this process.
    let predecessor = Predecessor::from_env();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("ringgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Tune { profile } => match ringgate::tune::report(profile.as_deref()) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sign {
            key,
            secret,
            method,
            url,
            body,
            timestamp,
            nonce,
        } => sign(
            &key,
            &secret,
            &method,
            &url,
            body.as_deref(),
            timestamp,
            nonce,
        ),
        Command::Run { config } => {
            init_logging();
            let predecessor = match predecessor.transpose() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: upgrade: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let Some(signals) = signals() else {
                return ExitCode::FAILURE;
            };
            for warning in config::secret_file_warnings(&config) {
                log::warn!("{warning}");
            }
            match config::load(&config) {
                Ok(cfg) => serve(cfg, None, Some(&config), signals, predecessor),
                Err(errors) => {
                    // Started by an upgrade: the running gateway says why in its log too.
                    if let Some(p) = predecessor {
                        p.failed(&format!(
                            "{}: {} config problem(s), the first: {}",
                            config.display(),
                            errors.len(),
                            errors.first().map(ToString::to_string).unwrap_or_default()
                        ));
                    }
                    report(&config.display().to_string(), &errors)
                }
            }
        }
        Command::Demo {
            listen,
            admin,
            tls_listen,
        } => {
            init_logging();
            let backend = match ringgate::demo::start_backend() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: cannot start the demo backend: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let apps = match ringgate::demo::write_demo_apps() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot write the demo apps file: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (cert, key) = match ringgate::demo::write_demo_cert() {
                Ok(files) => files,
                Err(e) => {
                    eprintln!("error: cannot write the demo certificate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let text = ringgate::demo::DEMO_CONFIG
                .replace("{backend}", &backend.to_string())
                .replace("{apps}", &apps.display().to_string())
                .replace("{cert}", &cert.display().to_string())
                .replace("{key}", &key.display().to_string())
                .replace("127.0.0.1:8443", &tls_listen)
                .replace("127.0.0.1:8080", &listen)
                .replace("127.0.0.1:9901", &admin);
            let Some(signals) = signals() else {
                return ExitCode::FAILURE;
            };
            match config::parse(&text) {
                Ok(cfg) => serve(cfg, Some(()), None, signals, None),
                Err(errors) => report("embedded demo config", &errors),
            }
        }
    }
}

/// The signals a gateway handles, registered before anything slow starts (config, Redis,
/// workers): until then the default action of SIGHUP or SIGUSR1/2, sent to the whole
/// service, would end the process; from here on they wait to be handled.
fn signals() -> Option<Signals> {
    match Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            None
        }
    }
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

fn check(path: &std::path::Path) -> ExitCode {
    for warning in config::secret_file_warnings(path) {
        eprintln!("warning: {warning}");
    }
    match config::load(path) {
        Ok(cfg) => match ringgate::snapshot::Snapshot::build(cfg, 0) {
            Ok(_) => {
                println!("{}: OK", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => report(&path.display().to_string(), &errors),
        },
        Err(errors) => report(&path.display().to_string(), &errors),
    }
}

fn sign(
    key: &str,
    secret: &str,
    method: &str,
    url: &str,
    body_file: Option<&std::path::Path>,
    timestamp: Option<u64>,
    nonce: Option<String>,
) -> ExitCode {
    use ringgate::auth::client::{fresh_nonce, sign_url};
    let body = match body_file.map(std::fs::read).transpose() {
        Ok(b) => b.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: cannot read the body file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timestamp = timestamp.unwrap_or_else(ringgate::auth::check::unix_now);
    let nonce = nonce.unwrap_or_else(fresh_nonce);
    match sign_url(
        key,
        secret.as_bytes(),
        method,
        url,
        &body,
        timestamp,
        &nonce,
    ) {
        Ok(s) => {
            let r = &s.signed;
            let headers = [
                ("X-Rg-Key", &r.key),
                ("X-Rg-Timestamp", &r.timestamp),
                ("X-Rg-Nonce", &r.nonce),
                ("X-Rg-Signature", &r.signature),
            ];
            for (name, value) in headers {
                println!("{name}: {value}");
            }
            println!("\nstring to sign:\n{}\n", r.string_to_sign);
            let mut curl = format!("curl -i -X {method}");
            for (name, value) in headers {
                curl.push_str(&format!(" -H '{name}: {value}'"));
            }
            if let Some(f) = body_file {
                curl.push_str(&format!(" --data-binary @{}", f.display()));
            }
            println!("{curl} '{url}'");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(source: &str, errors: &[config::ConfigError]) -> ExitCode {
    eprintln!(
        "{source}: {} problem{}:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        eprintln!("  {e}");
    }
    ExitCode::FAILURE
}

/// Starts the gateway and blocks until SIGTERM or SIGINT, then drains and exits 0; or
/// until SIGUSR2 started a successor that took over (an upgrade), then drains and exits 0.
/// `reload_from`: the config file SIGHUP reloads (none for the embedded demo config);
/// `predecessor`: the gateway this process takes over from (an upgrade).
fn serve(
    cfg: config::Config,
    demo: Option<()>,
    reload_from: Option<&std::path::Path>,
    mut signals: Signals,
    predecessor: Option<Predecessor>,
) -> ExitCode {
    // Read now: once a package has replaced the binary, /proc/self/exe names the old one.
    let relaunch = Relaunch::of_this_process();
    let started = match &predecessor {
        Some(p) => p
            .receive_sockets()
            .and_then(|inherited| ringgate::gateway::take_over(cfg, inherited)),
        None => ringgate::gateway::start(cfg),
    };
    let mut handle = match started {
        Ok(h) => h,
        Err(e) => {
            if let Some(p) = &predecessor {
                p.failed(&e);
            }
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    handle.set_config_path(reload_from.map(std::path::Path::to_path_buf));
    if !handle.wait_ready(std::time::Duration::from_secs(10)) {
        if let Some(p) = &predecessor {
            p.failed("workers failed to start");
        }
        eprintln!("error: workers failed to start (see the log above)");
        handle.shutdown();
        return ExitCode::FAILURE;
    }
    let addrs: Vec<String> = handle
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .chain(handle.tls_addrs().iter().map(|a| format!("{a} (https)")))
        .collect();
    log::info!(
        "ringgate {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", ")
    );
    let taken_over: Option<TakenOver> =
        predecessor.map(|p| ringgate::upgrade::take_over(p, &mut handle));
    // Under systemd (`Type=notify`): ready now, then watchdog pings and status lines.
    let mut supervisor = ringgate::control::systemd::Notifier::from_env().and_then(|notifier| {
        let watchdog = ringgate::control::systemd::watchdog_interval();
        ringgate::control::systemd::Supervisor::start(notifier, handle.shared_state(), watchdog)
            .map_err(|e| log::warn!("cannot start the systemd supervisor: {e}"))
            .ok()
    });
    if demo.is_some() {
        println!(
            "{}",
            ringgate::demo::example_commands(
                handle.listen_addrs()[0],
                handle.tls_addrs().first().copied(),
                handle.admin_addr(),
            )
        );
    }
    let mut successor = None;
    for signal in signals.forever() {
        match (signal, reload_from) {
            (SIGHUP, Some(path)) => {
                if let Some(s) = &supervisor {
                    s.reloading();
                }
                if let Err(e) = handle.reload_file(path) {
                    log::error!("reload failed, still serving the previous config:\n{e}");
                }
                if let Some(s) = &supervisor {
                    s.reloaded();
                }
            }
            (SIGHUP, None) => log::warn!("SIGHUP: the embedded demo config cannot be reloaded"),
            (SIGUSR1, _) => handle.reopen_logs(),
            // One upgrade at a time: the process this one took over from counts its last
            // quota use here once it stops; a successor started before that would read
            // the state file without it.
            (SIGUSR2, Some(_)) if taken_over.as_ref().is_some_and(|t| !t.finished()) => {
                log::warn!("SIGUSR2: the previous upgrade's old process is still draining; upgrade again once it has stopped")
            }
            (SIGUSR2, Some(_)) => {
                match ringgate::upgrade::start_successor(&handle, relaunch.as_ref()) {
                    Ok(s) => {
                        successor = Some(s);
                        break;
                    }
                    Err(e) => log::error!("upgrade failed, still serving: {e}"),
                }
            }
            (SIGUSR2, None) => log::warn!("SIGUSR2: the demo cannot be upgraded in place"),
            _ => break,
        }
    }
    let report = match successor {
        Some(successor) => {
            // A stop asked while the successor started is the service's: passed on.
            // (A reload or log reopening asked meanwhile is moot: the successor read the
            // config and opened the log afresh.)
            let stop_asked = signals.pending().any(|s| s == SIGTERM || s == SIGINT);
            let pid = successor.pid();
            if let Some(s) = supervisor.take() {
                s.handed_over(pid);
            }
            // Until systemd has seen `MAINPID=`, a stop may still come here: passed on.
            let forwarding = signals.handle();
            let forwarder = std::thread::Builder::new()
                .name("ringgate-signals".into())
                .spawn(move || {
                    for s in signals.forever() {
                        if s == SIGTERM || s == SIGINT {
                            ringgate::upgrade::stop_successor(pid);
                        }
                    }
                });
            log::info!("upgrade: process {pid} serves; draining");
            let mut released = None;
            let state = handle.shared_state();
            let report = handle.hand_over(|| {
                let r = successor.release();
                if stop_asked {
                    r.stop_successor();
                }
                // What the replay cache holds now, and (below) what it took since.
                r.send_nonces(&state.nonces);
                released = Some(r);
            });
            if let Some(released) = released {
                released.send_nonces(&state.nonces);
                released.finished();
            }
            forwarding.close();
            if let Ok(forwarder) = forwarder {
                let _ = forwarder.join();
            }
            report
        }
        None => {
            log::info!("draining");
            if let Some(s) = &supervisor {
                s.stopping();
            }
            match &taken_over {
                Some(t) => handle.shutdown_after(|| t.wait_finished()),
                None => handle.shutdown(),
            }
        }
    };
    drop(supervisor);
    if report.unfinished_connections > 0 {
        log::warn!(
            "drain timeout: {} connections were cut",
            report.unfinished_connections
        );
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}
