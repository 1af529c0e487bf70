//! The binary's command-line contract, as other tools rely on it.

use std::process::Command;

#[test]
fn an_invalid_revision_exits_with_status_2_and_explains_valid_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "serve",
            "--revision",
            "Canary.v2",
            "--source",
            "deploy/examples/mesh",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DNS-1123") && stderr.contains("canary"),
        "{stderr}"
    );
}

#[test]
fn a_missing_source_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "serve",
            "--revision",
            "canary",
            "--source",
            "/nonexistent/mesh",
        ])
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/mesh is not a directory"),
        "{stderr}"
    );
}
