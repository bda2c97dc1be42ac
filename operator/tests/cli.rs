//! The operator binary's `crd` subcommand prints exactly the committed CRD:
//! the one test that `crds/logdrain.yaml` is not stale (tests/tests/chart.rs
//! checks the chart's copy against it).
//!
//! Being an integration test of this package also makes `cargo test` build
//! the `drainpipe-operator` binary, which the end-to-end tests in `tests/`
//! run as a process.

use std::process::Command;

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_drainpipe-operator"))
        .arg("crd")
        .output()
        .expect("run drainpipe-operator crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/logdrain.yaml"),
    )
    .expect("crds/logdrain.yaml");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "crds/logdrain.yaml is stale: drainpipe-operator crd > crds/logdrain.yaml"
    );
}
