//! The switch's admin endpoint as the real binary serves it: with `[admin] token_env`, `/metrics`
//! and `/certification` answer only the bearer credential (401 without, 403 with another) while
//! the probes stay open; off loopback without any credential the switch refuses to start.

mod common;

use testkit::http::request_blocking;

const TOKEN_VAR: &str = "PAYNET_TEST_ADMIN_TOKEN";
const TOKEN: &str = "admin-credential-of-the-test-0123";

fn config(admin: &str) -> String {
    format!(
        r#"
[admin]
{admin}

[[listener]]
name = "acquirer"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"

[[listener]]
name = "bench"
listen = "127.0.0.1:0"
spec = "network"
framing = "2-byte-binary"
certification = true
"#
    )
}

#[test]
fn metrics_and_certification_need_the_bearer_and_the_probes_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = format!("listen = \"127.0.0.1:0\"\ntoken_env = \"{TOKEN_VAR}\"");
    let sw = common::start_in_with_env(dir, &config(&admin), &[(TOKEN_VAR, TOKEN)]);
    let get = |path: &str, bearer: Option<&str>| request_blocking(&sw.admin, "GET", path, bearer, "");
    for path in ["/metrics", "/certification", "/certification/TERM0001"] {
        let none = get(path, None);
        assert_eq!(none.status, 401, "{path} without a credential: {}", none.raw());
        let wrong = get(path, Some("admin-credential-of-the-test-0124"));
        assert_eq!(wrong.status, 403, "{path} with a wrong one: {}", wrong.raw());
        assert!(!wrong.raw().contains("admin-credential"), "the credential is never echoed");
    }
    let metrics = get("/metrics", Some(TOKEN));
    assert_eq!(metrics.status, 200, "{}", metrics.raw());
    assert!(metrics.body.contains("paynet_journal_rows_total"), "{}", metrics.body);
    let cert = get("/certification", Some(TOKEN));
    assert_eq!(cert.status, 200, "{}", cert.raw());
    assert!(cert.json()["terminals"].is_array(), "{}", cert.body);
    for probe in ["/health", "/ready"] {
        assert_eq!(get(probe, None).status, 200, "{probe} stays open to probes");
    }
}

#[test]
fn an_admin_port_off_loopback_without_a_credential_is_refused_at_start() {
    // Plain HTTP is accepted explicitly here, so that the missing credential alone is refused.
    let admin = "listen = \"0.0.0.0:0\"\n[admin.door]\ninsecure_plaintext = true";
    let (status, err) = common::start_refused(&config(admin));
    assert!(!status.success(), "{err}");
    assert!(err.contains("admin.listen") && err.contains("admin.token_env"), "{err}");
}
