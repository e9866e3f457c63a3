//! The monitoring kit in `tuning/monitoring/` (Prometheus alert rules, Grafana dashboard)
//! names only metrics that `GET /metrics` exports: every `ringgate_*` name in them is a
//! family in a real scrape (histogram series by their family's name).

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use support::*;

/// Every `ringgate_[a-z_]*` word in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ringgate_") {
        let start = i + at;
        let mut end = start + "ringgate_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        i = end;
    }
    names
}

#[test]
fn the_kit_uses_only_exported_metric_names() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // A breaker, cluster limits and a TLS certificate, so that every family is exported.
    let dir = support::temp_dir("kit");
    tls_support::make_cert(&dir, "api", &["api.example.com"], 2100);
    let body = format!(
        "[cluster]\nredis = \"redis://127.0.0.1:1/0\"\ngateways = 1\n{}\
         [tls]\nlisten = [\"127.0.0.1:0\"]\n[[tls.certs]]\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n",
        simple_routes(up, "", "breaker = { consecutive_failures = 5 }"),
        d = dir.display()
    );
    let gw = Gateway::start(Driver::Epoll, 1, "", &body);
    assert_eq!(Client::connect(gw.addr).get("/x").status, 502);
    let metrics = Client::connect(gw.admin.unwrap())
        .get("/metrics")
        .body_str();
    let families: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert!(families.len() >= 11, "{families:?}");
    // The certificate's expiry, by its first name: 2100-01-01.
    assert!(
        metrics.lines().any(|l| l
            .starts_with("ringgate_tls_cert_not_after_seconds{name=\"api.example.com\"")
            && l.ends_with(" 4102444800")),
        "{metrics}"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["ringgate-alerts.yml", "ringgate-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{root}/tuning/monitoring/{file}")).unwrap();
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{file} uses {name}, which /metrics does not export ({families:?})"
            );
        }
    }
    // The dashboard is JSON.
    let dash = std::fs::read_to_string(format!("{root}/tuning/monitoring/ringgate-dashboard.json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).unwrap();
    assert!(v["panels"].as_array().is_some_and(|p| p.len() >= 8));
}
