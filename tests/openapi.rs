//! `GET /openapi.json`: the document lists the configured routes (paths, methods, path
//! parameters, the HMAC security requirement, limits as extensions) and validates
//! against the OpenAPI 3.1 schema with `openapi-spec-validator` (a Python package that
//! `.ci/run` installs; the validation is skipped, saying so, when it is missing).

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

fn document(gw: &Gateway) -> Value {
    let r = Client::connect(gw.admin.expect("admin listener")).get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.body_str()).expect("JSON")
}

#[test]
fn openapi_lists_the_routes_and_validates() {
    let dir = std::env::temp_dir().join(format!("ringgate-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let apps = dir.join("apps.toml");
    std::fs::write(
        &apps,
        "[[apps]]\nkey = \"a\"\nsecrets = [\"secret-of-app-a-0001\"]\n",
    )
    .unwrap();
    let body = format!(
        "[apps]\nfile = \"{}\"\n\
         [[upstreams]]\nname = \"up\"\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"orders.get\"\npath = \"/v1/orders/{{id}}/items/{{item}}\"\nmethods = [\"GET\"]\nupstream = \"up\"\nauth = \"hmac\"\n\
         limits = [ {{ key = \"app\", rate = \"100/s\" }}, {{ key = \"app\", quota = \"1000/day\" }} ]\n\
         [[routes]]\nname = \"static\"\npath = \"/static/*\"\nupstream = \"up\"\n",
        apps.display()
    );
    let gw = Gateway::start(Driver::Epoll, 1, "", &body);
    let doc = document(&gw);
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/v1/orders/{id}/items/{item}"]["get"];
    assert_eq!(op["operationId"], "orders.get.get");
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["id", "item"]);
    assert_eq!(op["security"][0]["rgHmac"], serde_json::json!([]));
    assert_eq!(op["x-ringgate-limits"][0]["rate"], "100/s");
    assert_eq!(op["x-ringgate-limits"][1]["quota"], "1000/day");
    assert!(doc["paths"]["/v1/orders/{id}/items/{item}"]["post"].is_null());
    // A route naming no methods is listed under every common one, as a prefix.
    let prefix = &doc["paths"]["/static/*"];
    for m in ["get", "post", "put", "delete", "patch", "head", "options"] {
        assert_eq!(prefix[m]["x-ringgate-match"], "prefix", "{m}");
        assert!(prefix[m]["security"].is_null());
    }

    let file = dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    match Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            eprintln!("SKIPPED: openapi-spec-validator not installed (pip install openapi-spec-validator)");
        }
        Ok(out) => panic!(
            "not a valid OpenAPI document:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("SKIPPED: python3 not found ({e})"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
