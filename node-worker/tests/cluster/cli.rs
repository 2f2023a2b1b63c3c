//! `node-worker run` from the command line: the worker contract's environment is required (exit 2 with the
//! reason), a bad flag is a usage error, and without a reachable API server it fails (exit 1) instead of
//! hanging.

use std::process::{Command, Output};

const CONTRACT: [(&str, &str); 5] = [
    ("INTERCEPTOR_CONFIG_MAP", "default-config"),
    ("INTERCEPTOR_NAME", "default"),
    ("INTERCEPTOR_UID", "uid-1"),
    ("NODE_NAME", "node-a"),
    ("POD_NAMESPACE", "interceptor-system"),
];

fn worker(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_node-worker"));
    command.env_clear().arg("run").args(args);
    // No cluster: neither in-cluster variables nor a kubeconfig that exists.
    command.env("KUBECONFIG", "/nonexistent/kubeconfig");
    command.env("HOME", "/nonexistent");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_contract_environment_is_required() {
    for (variable, _) in CONTRACT {
        let env: Vec<_> = CONTRACT
            .iter()
            .filter(|(k, _)| *k != variable)
            .copied()
            .collect();
        let output = worker(&env, &["--health-addr", "127.0.0.1:0"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert_eq!(
            stderr(&output).lines().count(),
            1,
            "one line: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).starts_with(&format!("node-worker: {variable} (or --")),
            "{}",
            stderr(&output)
        );
    }
    let mut empty = CONTRACT.to_vec();
    empty[3] = ("NODE_NAME", " ");
    let output = worker(&empty, &["--health-addr", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output).trim(), "node-worker: NODE_NAME is empty");
}

#[test]
fn a_bad_sink_is_a_usage_error() {
    let output = worker(&CONTRACT, &["--sink", "carrier-pigeon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown --sink \"carrier-pigeon\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn without_an_api_server_it_fails_with_the_reason() {
    let output = worker(
        &CONTRACT,
        &["--health-addr", "127.0.0.1:0", "--log-format", "text"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.lines()
            .any(|l| l.starts_with("node-worker: connecting to the Kubernetes API")),
        "{text}"
    );
}
