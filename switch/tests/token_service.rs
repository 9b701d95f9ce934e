//! The `switch` binary with its token service on: the vault, the detokenize stage and the
//! provisioning API start from the configuration (`[token_service]`), the API serves its OpenAPI
//! document, refuses unauthenticated calls, and answers a valid requestor.

mod common;

use sha2::Digest;

fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let r = testkit::http::request_blocking(addr, method, path, auth, body);
    (r.status, r.body)
}

#[test]
fn switch_binary_runs_the_token_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::add_key(dir.path(), "switch.vault", "D0000D0AB00N0000", &"11".repeat(32));
    common::add_key(dir.path(), "token.imk-ac", "D0000E0TX00N0000", "0123456789ABCDEFFEDCBA9876543210");
    let secret = "requestor-secret";
    let sha = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[keys]\nkeystore = \"keys.toml\"\n[[listener]]\nname = \"acquirer\"\nlisten = \"127.0.0.1:0\"\n\
         [token_service]\nenabled = true\nlisten = \"127.0.0.1:0\"\nvault_key = \"switch.vault\"\n\
         [[token_service.range]]\nprefix = \"489537\"\nlength = 16\nimk_ac = \"token.imk-ac\"\n\
         [[token_service.requestor]]\nid = \"40010030273\"\nkind = \"wallet\"\nsecret_sha256 = \"{sha}\"\n"
    );
    let sw = common::start_in(dir, &cfg);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sw.dir.path().join("ready.json")).expect("ready"))
            .expect("json");
    let api = ready["provisioning_api"]
        .as_str()
        .expect("provisioning API address")
        .trim_start_matches("http://")
        .to_string();
    let (st, doc) = http(&api, "GET", "/openapi.json", None, "");
    assert_eq!(st, 200);
    assert!(doc.contains("\"/v1/provision\""), "{doc}");
    let body = r#"{"request_id":"1","pan":"4111111111111111","expiry":"2912","device_public_key":"046B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C2964FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"}"#;
    assert_eq!(http(&api, "POST", "/v1/provision", None, body).0, 401);
    let (st, a) = http(&api, "POST", "/v1/provision", Some(&format!("40010030273:{secret}")), body);
    assert_eq!(st, 200, "{a}");
    assert!(a.contains("not_eligible"), "no issuer is routed for that PAN: {a}");
}

#[test]
fn vault_key_rotation_with_rewrap_vault() {
    use crypto::seal::Sealer;
    use tsp::TokenVault;
    use tsp::vault::{DomainControls, NewToken};
    let dir = tempfile::tempdir().expect("tempdir");
    let (k1, k2) = ("11".repeat(32), "22".repeat(32));
    common::add_key(dir.path(), "switch.vault", "D0000D0AB00N0000", &k1);
    common::add_key(dir.path(), "switch.vault.2", "D0000D0AB00N0000", &k2);
    common::add_key(dir.path(), "token.imk-ac", "D0000E0TX00N0000", "0123456789ABCDEFFEDCBA9876543210");
    let aes = |h: &str| crypto::AesKey::from_slice(&hex::decode(h).expect("hex")).expect("key");
    let db = dir.path().join("data").join("vault.db");
    std::fs::create_dir_all(db.parent().expect("data")).expect("data dir");
    // The vault's PAN-index key (the vault checks every PAN against it).
    let ks = crypto::keystore::Keystore::from_toml(
        crypto::keystore::Lmk::from_hex(common::LMK_HEX).expect("LMK"),
        &std::fs::read_to_string(dir.path().join("keys.toml")).expect("keystore"),
    )
    .expect("keystore");
    let fingerprint =
        switch::keys::token_service_keys(&ks, &Default::default()).expect("token service keys").vault_index;
    let open = |sealer: Sealer| {
        let store = std::sync::Arc::new(tsp::store::SqliteVaultStore::open(&db).expect("store"));
        TokenVault::open(store, sealer, fingerprint.clone()).expect("vault")
    };
    // Two tokens sealed under data key version 1.
    {
        let v = open(Sealer::new(1, &aes(&k1)).expect("sealer"));
        for (i, token) in ["4895370000000013", "4895370000000021"].into_iter().enumerate() {
            let domain = DomainControls {
                entry_modes: vec!["07".into()],
                transaction_types: vec!["00".into()],
                requestor_id: "40010030273".into(),
            };
            let new = NewToken {
                token,
                pan: "4761739001010010",
                pan_expiry: "2912",
                par: "P1",
                expiry: "2912",
                domain,
            };
            v.insert(new, 1_000, [i as u8 + 1; 12]).expect("insert");
        }
    }
    // The operator makes version 2 current, keeps version 1 readable, and re-wraps.
    let cfg = "[admin]\nlisten = \"127.0.0.1:0\"\n[keys]\nkeystore = \"keys.toml\"\n[[listener]]\nname = \"acquirer\"\nlisten = \"127.0.0.1:0\"\n\
         [token_service]\nenabled = true\nlisten = \"127.0.0.1:0\"\nvault_key = \"switch.vault.2\"\nvault_key_version = 2\n\
         [[token_service.vault_old_key]]\nversion = 1\nkey = \"switch.vault\"\n\
         [[token_service.range]]\nprefix = \"489537\"\nlength = 16\nimk_ac = \"token.imk-ac\"\n\
         [[token_service.requestor]]\nid = \"40010030273\"\nkind = \"wallet\"\nsecret_sha256 = \"00000000000000000000000000000000000000000000000000000000000000aa\"\n";
    let cfg_path = dir.path().join("switch.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let rewrap = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["--config", cfg_path.to_str().expect("path"), "--rewrap-vault"])
            .env("PAYNET_LMK", common::LMK_HEX)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(rewrap().trim(), "vault: 2 rows re-sealed under data key version 2");
    assert_eq!(rewrap().trim(), "vault: 0 rows re-sealed under data key version 2", "idempotent");
    // Every row now opens with version 2 alone, and no longer with version 1.
    let v2 = open(Sealer::new(2, &aes(&k2)).expect("sealer"));
    let rec = v2.get("4895370000000021").expect("token");
    assert_eq!(v2.pan(&rec).expect("opens under v2").as_str(), "4761739001010010");
    let v1 = open(Sealer::new(1, &aes(&k1)).expect("sealer"));
    assert!(v1.pan(&v1.get("4895370000000013").expect("token")).is_err(), "version 1 retired");
}
