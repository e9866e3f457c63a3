//! The admin API over real sockets: the bearer token (required beyond loopback, checked
//! on every endpoint but `/healthz`), `GET /config`, and `POST /reload` under continuous
//! keep-alive load on two workers: no request fails, the new route is live at once, a
//! bad file is refused with its reason and the old config keeps serving.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "admin-token-for-tests-0001";

fn admin_request(gw: &Gateway, raw: &str) -> Response {
    let mut c = Client::connect(gw.admin.expect("admin listener"));
    c.send(raw.as_bytes());
    c.read_response()
}

fn authed(gw: &Gateway, method: &str, path: &str) -> Response {
    admin_request(
        gw,
        &format!("{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"),
    )
}

#[test]
fn the_token_guards_every_endpoint_but_healthz() {
    let up = Upstream::echo();
    let text = config_text(Driver::Epoll, 1, "", &simple_routes(up.addr, "", "")).replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    let config = ringgate::config::parse(&text).expect("valid");
    let handle = ringgate::gateway::start(config).expect("starts");
    assert!(handle.wait_ready(Duration::from_secs(10)));
    let admin = handle.admin_addr().unwrap();
    let get = |headers: &str, path: &str| {
        let mut c = Client::connect(admin);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n{headers}\r\n").as_bytes());
        c.read_response()
    };
    for path in ["/stats", "/metrics", "/config", "/openapi.json"] {
        let r = get("", path);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            get("Authorization: Bearer wrong-token-000000000\r\n", path).status,
            401
        );
        assert_eq!(
            get(&format!("Authorization: bearer {TOKEN}\r\n"), path).status,
            200,
            "{path}"
        );
    }
    assert_eq!(
        get("", "/healthz").status,
        200,
        "health checks need no token"
    );
    handle.shutdown();
}

#[test]
fn a_token_is_required_beyond_loopback() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = format!(
        "[admin]\nlisten = \"0.0.0.0:0\"\n{}",
        simple_routes(up, "", "")
    );
    let errors = ringgate::config::parse(&text).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.path == "admin.token" && e.message.contains("not a loopback address")),
        "{errors:?}"
    );
    let short = format!("[admin]\ntoken = \"short\"\n{}", simple_routes(up, "", ""));
    let errors = ringgate::config::parse(&short).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.path == "admin.token" && !e.message.contains("short")),
        "the token is never quoted back: {errors:?}"
    );
}

/// Routes `/a/*` and, with `with_b`, `/b/*`, to `up`.
fn config_file(up: SocketAddr, with_b: bool) -> String {
    let mut body = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n\
         [[routes]]\nname = \"a\"\npath = \"/a/*\"\nupstream = \"up\"\n"
    );
    if with_b {
        body += "[[routes]]\nname = \"b\"\npath = \"/b/*\"\nupstream = \"up\"\n";
    }
    format!("[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\ndriver = \"epoll\"\n{body}")
}

#[test]
fn reload_under_load_fails_nothing_and_a_bad_file_changes_nothing() {
    let up = Upstream::echo();
    let dir = std::env::temp_dir().join(format!("ringgate-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringgate.toml");
    std::fs::write(&file, config_file(up.addr, false)).unwrap();
    let config = ringgate::config::load(&file).expect("valid");
    let handle = ringgate::gateway::start(config).expect("starts");
    assert!(handle.wait_ready(Duration::from_secs(10)));
    handle.set_config_path(Some(file.clone()));
    let (addr, admin) = (handle.listen_addrs()[0], handle.admin_addr().unwrap());
    let post = |path: &str| {
        let mut c = Client::connect(admin);
        c.send(format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes());
        c.read_response()
    };

    // Keep-alive clients on both workers, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let counter = if c.get("/a/x").status == 200 {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(Client::connect(addr).get("/b/x").status, 404);

    std::fs::write(&file, config_file(up.addr, true)).unwrap();
    let r = post("/reload");
    let reloaded = Instant::now();
    assert_eq!((r.status, r.body_str().trim()), (200, "{\"generation\":2}"));
    let mut probe = Client::connect(addr);
    while probe.get("/b/x").status != 200 {
        assert!(
            reloaded.elapsed() < Duration::from_secs(2),
            "route b never went live"
        );
    }
    let live_after = reloaded.elapsed();
    eprintln!("new route live {live_after:?} after the reload answered");
    assert!(live_after < Duration::from_millis(250), "{live_after:?}");

    // A broken file: refused with its reason, and the running config keeps serving.
    std::fs::write(&file, "[[routes]]\nname = \"\"\n").unwrap();
    let r = post("/reload");
    assert_eq!(r.status, 400);
    assert!(r.body_str().contains("reload refused"), "{}", r.body_str());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across the reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(
        Client::connect(addr).get("/b/x").status,
        200,
        "generation 2 still serves"
    );

    let mut c = Client::connect(admin);
    let r = c.get("/config");
    let summary: serde_json::Value = serde_json::from_str(&r.body_str()).unwrap();
    assert_eq!(summary["generation"], 2);
    assert_eq!(summary["routes"][1]["name"], "b");
    assert_eq!(summary["routes"][1]["upstream"], "up");
    let metrics = Client::connect(admin).get("/metrics").body_str();
    assert!(
        metrics.contains("ringgate_config_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ringgate_config_generation 2"));
    handle.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_without_a_file_is_refused() {
    let up = Upstream::echo();
    let gw = Gateway::simple(Driver::Epoll, up.addr);
    let r = authed(&gw, "POST", "/reload");
    assert_eq!(r.status, 400);
    assert!(r.body_str().contains("no config file"), "{}", r.body_str());
}

#[test]
fn watch_reloads_when_the_file_changes() {
    let up = Upstream::echo();
    let dir = std::env::temp_dir().join(format!("ringgate-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringgate.toml");
    let with_watch =
        |b: bool| config_file(up.addr, b).replace("[admin]\n", "[admin]\nwatch = true\n");
    std::fs::write(&file, with_watch(false)).unwrap();
    let handle = ringgate::gateway::start(ringgate::config::load(&file).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    handle.set_config_path(Some(file.clone()));
    let addr = handle.listen_addrs()[0];
    assert_eq!(Client::connect(addr).get("/b/x").status, 404);
    // Some file systems keep whole-second times: make the change visible in size too.
    std::fs::write(&file, with_watch(true)).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || Client::connect(addr)
            .get("/b/x")
            .status
            == 200),
        "the watcher reloaded the changed file"
    );
    // A broken edit is refused; the running config stays.
    std::fs::write(&file, "[[routes]]\nname = \"\"\nbroken = true\n").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(Client::connect(addr).get("/b/x").status, 200);
    handle.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pooled_connections_to_unchanged_targets_survive_a_reload() {
    let up = Upstream::echo();
    let other = Upstream::echo();
    let routes = |extra: &str| {
        format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n{extra}\
             [[routes]]\nname = \"a\"\npath = \"/*\"\nupstream = \"up\"\n",
            up.addr
        )
    };
    let gw = Gateway::start(Driver::Epoll, 1, "", &routes(""));
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        assert_eq!(c.get("/x").status, 200);
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    // A reload that adds an upstream leaves "up" as it was: its idle connection is kept.
    let extra = format!(
        "[[upstreams]]\nname = \"other\"\ntargets = [\"{}\"]\n",
        other.addr
    );
    assert_eq!(gw.reload(Driver::Epoll, 1, "", &routes(&extra)), 2);
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        assert_eq!(Client::connect(gw.addr).get("/y").status, 200);
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "the pooled connection carried over"
    );
}

#[test]
fn entries_are_created_replaced_and_deleted_in_the_files() {
    let up = Upstream::echo();
    let dir = std::env::temp_dir().join(format!("ringgate-crud-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringgate.toml");
    let apps = dir.join("apps.toml");
    std::fs::write(
        &apps,
        "# our apps\n[[apps]]\nkey = \"app-a\"\nsecrets = [\"secret-of-app-a-0001\"]\n",
    )
    .unwrap();
    let text = format!(
        "# the gateway's config: this comment survives edits\n{}[apps]\nfile = \"apps.toml\"\n",
        config_file(up.addr, false)
    );
    std::fs::write(&file, &text).unwrap();
    let handle = ringgate::gateway::start(ringgate::config::load(&file).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    handle.set_config_path(Some(file.clone()));
    let (addr, admin) = (handle.listen_addrs()[0], handle.admin_addr().unwrap());
    // Workers install a new generation at their next tick (10 ms).
    let soon = |path: &str, status: u16| {
        assert!(
            eventually(Duration::from_secs(2), || Client::connect(addr)
                .get(path)
                .status
                == status),
            "{path} never answered {status}"
        );
    };
    let send = |method: &str, path: &str, body: &str| {
        let mut c = Client::connect(admin);
        c.send(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        c.read_response()
    };

    let r = send(
        "PUT",
        "/routes/b",
        r#"{"path": "/b/*", "upstream": "up", "methods": ["GET"]}"#,
    );
    assert_eq!(
        (r.status, r.body_str().trim()),
        (200, r#"{"generation":2,"created":"b"}"#)
    );
    soon("/b/x", 200);
    let on_disk = std::fs::read_to_string(&file).unwrap();
    assert!(on_disk.starts_with("# the gateway's config: this comment survives edits"));
    assert!(on_disk.contains("name = \"b\""), "{on_disk}");

    // Invalid: refused with the reason; the file and the running config stay.
    let before = std::fs::read_to_string(&file).unwrap();
    let r = send(
        "PUT",
        "/routes/b",
        r#"{"path": "/b/*", "upstream": "nowhere"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body_str().contains("unknown upstream"),
        "{}",
        r.body_str()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let r = send("DELETE", "/upstreams/up", "");
    assert_eq!(r.status, 400, "routes still use it: {}", r.body_str());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let r = send("PUT", "/routes/c", r#"{"name": "other", "path": "/c"}"#);
    assert_eq!(r.status, 400, "{}", r.body_str());

    // Replace, then delete.
    let r = send(
        "PUT",
        "/routes/b",
        r#"{"path": "/bee/*", "upstream": "up"}"#,
    );
    assert_eq!(r.body_str().trim(), r#"{"generation":3,"replaced":"b"}"#);
    soon("/b/x", 404);
    soon("/bee/x", 200);
    let r = send("DELETE", "/routes/b", "");
    assert_eq!(r.body_str().trim(), r#"{"generation":4,"deleted":"b"}"#);
    soon("/bee/x", 404);
    assert_eq!(send("DELETE", "/routes/b", "").status, 400, "already gone");

    // Apps go to the apps file.
    let r = send(
        "PUT",
        "/apps/app-new",
        r#"{"secrets": ["secret-of-new-app-001"], "groups": ["trade"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let apps_text = std::fs::read_to_string(&apps).unwrap();
    assert!(
        apps_text.starts_with("# our apps") && apps_text.contains("key = \"app-new\""),
        "{apps_text}"
    );
    let r = send("PUT", "/apps/bad", r#"{"secrets": ["short"]}"#);
    assert_eq!(r.status, 400, "{}", r.body_str());
    assert!(
        !r.body_str().contains("short\""),
        "a secret is never quoted back: {}",
        r.body_str()
    );
    handle.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nested_entries_concurrent_edits_and_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::echo();
    let dir = std::env::temp_dir().join(format!("ringgate-crud2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, apps) = (dir.join("ringgate.toml"), dir.join("apps.toml"));
    std::fs::write(
        &apps,
        "[[apps]]\nkey = \"app-a\"\nsecrets = [\"secret-of-app-a-0001\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &file,
        format!(
            "{}[apps]\nfile = \"apps.toml\"\n",
            config_file(up.addr, false)
        ),
    )
    .unwrap();
    let handle = ringgate::gateway::start(ringgate::config::load(&file).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    handle.set_config_path(Some(file.clone()));
    let admin = handle.admin_addr().unwrap();
    let send = move |method: &str, path: &str, body: &str| {
        let mut c = Client::connect(admin);
        c.send(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        c.read_response()
    };
    // Nested tables and lists of tables stay inside their entry.
    let r = send(
        "PUT",
        "/routes/n",
        r#"{"path": "/n/*", "upstream": "up", "timeouts": {"connect": "200ms"},
            "breaker": {"consecutive_failures": 3},
            "limits": [{"key": "route", "rate": "100/s"}, {"key": "ip", "rate": "10/s"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let summary: serde_json::Value =
        serde_json::from_str(&Client::connect(admin).get("/config").body_str()).unwrap();
    assert_eq!(summary["routes"][1]["limits"], 2);
    // Eight app edits at once: each is applied, none lost.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                send(
                    "PUT",
                    &format!("/apps/app-{i}"),
                    &format!(r#"{{"secrets": ["secret-of-app-{i}-00001"]}}"#),
                )
                .status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let text = std::fs::read_to_string(&apps).unwrap();
    for i in 0..8 {
        assert!(
            text.contains(&format!("key = \"app-{i}\"")),
            "app-{i} lost:\n{text}"
        );
    }
    let mode = std::fs::metadata(&apps).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the apps file stays private");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("candidate"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    handle.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_cannot_drop_the_token_of_a_public_listener() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let with = |admin: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\ndriver = \"epoll\"\n[admin]\n{admin}\n{}",
            simple_routes(up, "", "")
        )
    };
    let public = with(&format!("listen = \"0.0.0.0:0\"\ntoken = \"{TOKEN}\""));
    let handle = ringgate::gateway::start(ringgate::config::parse(&public).unwrap()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    // Valid on its own (loopback needs no token), refused as a reload: the listener is
    // still bound to 0.0.0.0.
    let loopback = ringgate::config::parse(&with("listen = \"127.0.0.1:0\"")).unwrap();
    let e = handle.reload(loopback).unwrap_err();
    assert!(e.contains("admin.token") && e.contains("0.0.0.0"), "{e}");
    handle.shutdown();
}
