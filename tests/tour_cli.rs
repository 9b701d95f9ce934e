//! `paynet tour` (a short contactless session without the phone): switch, issuer simulator and a
//! terminal session, each receipt line as expected, PANs masked, exit 0.

#[test]
fn tour_runs_the_network_and_every_answer_is_as_expected() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_paynet")).arg("tour").output().expect("run paynet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all 6 answers as expected"), "{stdout}");
    assert!(stdout.contains("ARPC ok"));
    assert!(stdout.contains("476173******"), "PANs masked");
    for line in stdout.lines() {
        assert!(
            !line.split_whitespace().any(|w| w.len() >= 13 && w.bytes().all(|b| b.is_ascii_digit())),
            "clear PAN: {line}"
        );
    }
}
