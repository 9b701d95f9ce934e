//! The token vault on its SQLite store: PANs sealed with the token as associated data (a tampered
//! or moved row is an error, never a wrong PAN), keyed fingerprints, one PAR per PAN, lifecycle
//! rules, key rotation by re-wrap, the cache rebuilt from disk, and no clear PAN in the file.

use std::sync::Arc;

use crypto::AesKey;
use crypto::seal::Sealer;
use tsp::store::SqliteVaultStore;
use tsp::vault::VaultStore;
use tsp::{DomainControls, NewToken, TokenRange, TokenStatus, TokenVault, luhn_valid};
use zeroize::Zeroizing;

const PAN: &str = "4761739001010010";

fn key(b: u8) -> AesKey {
    AesKey::from_slice(&[b; 32]).expect("aes-256")
}

fn domain() -> DomainControls {
    DomainControls {
        entry_modes: vec!["07".into(), "81".into()],
        transaction_types: vec!["00".into()],
        requestor_id: "40010030273".into(),
    }
}

fn nonce(n: u8) -> [u8; 12] {
    [n; 12]
}

fn open(store: Arc<SqliteVaultStore>) -> TokenVault {
    TokenVault::open(store, Sealer::new(1, &key(1)).expect("sealer"), Zeroizing::new(vec![9u8; 32]))
        .expect("vault")
}

#[test]
fn vault_seals_binds_rotates_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vault.db");
    let store = Arc::new(SqliteVaultStore::open(&path).expect("store"));
    let v = open(store.clone());
    let range = TokenRange::new("489537", 16, ["476173"]).expect("range");
    let t1 = range.candidate(&(10u8..60).collect::<Vec<_>>());
    let t2 = range.candidate(&(73u8..123).collect::<Vec<_>>());
    assert!(luhn_valid(t1.as_bytes()) && t1 != t2);

    let par = v.par_for(PAN, "V001", &(0u8..=255).collect::<Vec<_>>());
    assert_eq!(par.len(), 29);
    v.insert(
        NewToken { token: &t1, pan: PAN, pan_expiry: "2812", par: &par, expiry: "2912", domain: domain() },
        1,
        nonce(1),
    )
    .expect("insert");
    // A second token of the same PAN shares the PAR.
    assert_eq!(v.par_for(PAN, "V001", &[7u8; 64]), par);
    v.insert(
        NewToken { token: &t2, pan: PAN, pan_expiry: "2812", par: &par, expiry: "2912", domain: domain() },
        2,
        nonce(2),
    )
    .expect("insert");
    assert_eq!(v.tokens_of(PAN).len(), 2);
    assert!(
        v.insert(
            NewToken {
                token: &t1,
                pan: PAN,
                pan_expiry: "2812",
                par: &par,
                expiry: "2912",
                domain: domain()
            },
            3,
            nonce(3)
        )
        .is_err(),
        "duplicate token"
    );

    let r1 = v.get(&t1).expect("cached");
    assert_eq!(r1.status, TokenStatus::Inactive);
    assert_eq!(v.pan(&r1).expect("opens").as_str(), PAN);
    assert_eq!(v.card(&r1).expect("opens").1, "2812", "the card's expiry is sealed with the PAN");
    assert!(
        r1.domain.allows("071", "000000")
            && !r1.domain.allows("051", "000000")
            && !r1.domain.allows("071", "013000")
    );

    // Lifecycle.
    assert!(v.set_status(&t1, TokenStatus::Suspended).is_err(), "inactive cannot be suspended");
    v.set_status(&t1, TokenStatus::Active).expect("activate");
    v.set_status(&t1, TokenStatus::Suspended).expect("suspend");
    v.set_status(&t1, TokenStatus::Active).expect("resume");
    v.set_status(&t2, TokenStatus::Deleted).expect("delete");
    assert!(v.set_status(&t2, TokenStatus::Active).is_err(), "deleted is final");

    // A row moved onto another token does not open.
    let moved = tsp::TokenRecord { token: t2.clone(), ..(*v.get(&t1).expect("t1")).clone() };
    assert!(v.pan(&moved).is_err());
    // A flipped bit does not open.
    let mut bad = (*v.get(&t1).expect("t1")).clone();
    let last = bad.pan_sealed.len() - 1;
    bad.pan_sealed[last] ^= 1;
    assert!(v.pan(&bad).is_err());

    // Rotation: add version 2, re-wrap everything, old key no longer needed for reads.
    v.add_key(2, &key(2)).expect("add key");
    let mut n = 10u8;
    assert_eq!(
        v.rewrap(2, || {
            n += 1;
            nonce(n)
        })
        .expect("rewrap"),
        2
    );
    assert_eq!(Sealer::version_of(&v.get(&t1).expect("t1").pan_sealed), Some(2));
    drop(v);

    // Reopened with only key version 2: the cache is rebuilt from disk and every PAN opens.
    let v2 = TokenVault::open(
        store.clone(),
        Sealer::new(2, &key(2)).expect("sealer"),
        Zeroizing::new(vec![9u8; 32]),
    )
    .expect("reopen");
    let r = v2.get(&t1).expect("from disk");
    assert_eq!(r.status, TokenStatus::Active);
    assert_eq!(v2.pan(&r).expect("opens").as_str(), PAN);
    assert_eq!(v2.get(&t2).expect("t2").status, TokenStatus::Deleted);
    assert_eq!(store.vault_all().expect("rows").len(), 2);

    // No clear PAN anywhere in the database files.
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(!String::from_utf8_lossy(&bytes).contains(PAN), "clear PAN on disk");
    }
}
