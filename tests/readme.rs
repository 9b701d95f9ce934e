//! The README's promise to a newcomer: exactly two set-up commands — the demo, then the tests —
//! and CI runs that same test command.

fn setup_commands(readme: &str) -> Vec<String> {
    let setup = readme.split("\n## Set up\n").nth(1).expect("a `## Set up` section");
    let block = setup.split("```sh\n").nth(1).expect("a sh code block").split("```").next().expect("closed");
    block.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn two_setup_commands_the_demo_and_the_tests_and_ci_runs_the_same_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let cmds = setup_commands(&readme);
    assert_eq!(cmds, ["cargo run --release -- demo", "cargo test --workspace"], "README set-up block");
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).expect(".ci/run");
    let last = ci.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(last, Some(cmds[1].as_str()), ".ci/run ends with the README's test command");
}
