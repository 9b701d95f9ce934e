//! The provisioning API's OpenAPI document, served by the API itself, and a property-based API
//! fuzzer driven by it: schemathesis 3.39.16 (in its own venv) generates requests from the document
//! against the running token service, with and without credentials, and checks that no answer is a
//! server error, every status and body is the documented one, and nothing provisions without valid
//! credentials.

use paynet::network::{self, Options};
use serde_json::json;

async fn get(base: &str, path: &str) -> (u16, String) {
    let r = testkit::http::get(base, path, None).await;
    (r.status, r.body)
}

const SCRIPT: &str = r#"
import sys, json, subprocess
req = json.load(sys.stdin)
cmd = [sys.executable, "-m", "schemathesis.cli", "run", req["url"],
       "--experimental=openapi-3.1", "--checks", "all", "--hypothesis-max-examples", "40", "--hypothesis-seed", "7",
       "--hypothesis-suppress-health-check", "all", "--request-timeout", "10000",
       "-H", "Authorization: Bearer " + req["auth"]]
p = subprocess.run(cmd, capture_output=True, text=True)
print(json.dumps({"code": p.returncode, "tail": (p.stdout + p.stderr)[-4000:]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_its_document_and_survives_schemathesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = network::start(Options::new(dir.path())).await.expect("network");
    let (status, body) = get(&net.ports.provisioning_api, "/openapi.json").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON document");
    assert_eq!(doc["openapi"], "3.1.0");
    for p in ["/v1/provision", "/v1/provision/{id}/otp", "/v1/tokens/{token_ref}/{action}"] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    assert!(doc["components"]["securitySchemes"]["requestor"].is_object());

    let r = &net.ports.token_requestors[0];
    let url = format!("{}/openapi.json", net.ports.provisioning_api);
    let auth = format!("{}:{}", r.id, r.secret);
    let oracle = match testkit::PythonOracle::new(
        env!("CARGO_TARGET_TMPDIR"),
        &["schemathesis==3.39.16", "hypothesis==6.122.1"],
    ) {
        Ok(o) => o,
        Err(reason) => {
            eprintln!("SKIPPED schemathesis run: {reason}");
            net.shutdown().await;
            return;
        }
    };
    for auth in [auth.clone(), format!("{}:wrong-secret", r.id)] {
        let input = json!({"url": url, "auth": auth});
        let out = tokio::task::spawn_blocking(move || oracle_run(&input)).await.expect("join");
        assert_eq!(out["code"], 0, "schemathesis found problems:\n{}", out["tail"].as_str().unwrap_or(""));
    }
    let _ = &oracle;
    net.shutdown().await;
}

fn oracle_run(input: &serde_json::Value) -> serde_json::Value {
    let oracle = testkit::PythonOracle::new(
        env!("CARGO_TARGET_TMPDIR"),
        &["schemathesis==3.39.16", "hypothesis==6.122.1"],
    )
    .expect("venv");
    oracle.run(SCRIPT, input)
}
