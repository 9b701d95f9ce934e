//! Inputs shared by the comparison bench and its check: the sample 0100 without DE 55 (the other
//! crate's generic spec reads DE 55 as BER-TLV over binary data, which iso87ascii carries as hex
//! text, so it cannot round-trip it).

/// The sample message (examples/0100-contactless.json) as a JSON value, DE 55 removed.
pub fn sample_json() -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/0100-contactless.json")).expect("sample JSON");
    if let Some(fields) = v.get_mut("fields").and_then(|f| f.as_object_mut()) {
        fields.remove("55");
    }
    v
}

/// The other crate's bundled generic ISO 8583:1987 spec (ASCII MTI, hex-ASCII bitmaps, ASCII
/// LLVAR prefixes: the iso87ascii layout).
/// Read from the crate's own source in the cargo registry, so none of it is copied here.
pub fn other_spec() -> iso8583_codec_rs::LoadedSpec {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries = std::fs::read_dir(home.join("registry/src")).expect("cargo registry sources");
    for reg in registries.flatten() {
        let path = reg.path().join("iso8583-codec-rs-0.1.0/specifications/fields.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return iso8583_codec_rs::load_spec(&text).expect("bundled spec loads");
        }
    }
    panic!("iso8583-codec-rs 0.1.0 sources not found under {}", home.display());
}
