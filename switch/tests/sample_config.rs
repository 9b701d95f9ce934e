//! The commented sample configuration in `config/` parses and validates.

use switch::config::SwitchConfig;

#[test]
fn sample_switch_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switch.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let cfg = SwitchConfig::from_toml(&text).unwrap();
    assert_eq!(cfg.validate(), Vec::<String>::new());
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.issuers[0].stand_in.max_amount_minor, 10_000);
}
