//! `dla-tools` from the command line: outputs that people and scripts rely on.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn dla_tools() -> Command {
    Command::cargo_bin("dla-tools").expect("dla-tools binary is built for tests")
}

#[test]
fn bench_prints_machine_readable_medians() {
    let out = dla_tools()
        .args([
            "bench",
            "--threads",
            "1",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--json",
            "--model",
        ])
        .arg(fixture("tiny_seg.onnx"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["runs"], 3);
    assert_eq!(report["backend"], "tract");
    for stage in ["pre", "infer", "post", "total"] {
        let median = report[stage]["median_ms"].as_f64().unwrap();
        let p90 = report[stage]["p90_ms"].as_f64().unwrap();
        assert!(median >= 0.0 && p90 >= median, "{stage}: {median} / {p90}");
    }
    assert!(report["fps"].as_f64().unwrap() > 0.0);
}

#[test]
fn inspect_counts_ops_params_and_macs() {
    // tiny_seg is one 1x1 conv 3->4 on 64x64: 16 params, 64*64*4*3 MACs.
    dla_tools()
        .arg("inspect")
        .arg(fixture("tiny_seg.onnx"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Conv 1")
                .and(predicate::str::contains("params     16"))
                .and(predicate::str::contains("0.00 GMAC")),
        );
}

#[test]
fn inspect_refuses_bad_models_with_the_reason() {
    dla_tools()
        .arg("inspect")
        .arg(fixture("unsupported_op.onnx"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("unsupported_op.onnx")
                .and(predicate::str::contains("FancySegment")),
        );
}

#[test]
fn synth_rejects_bad_sizes_and_counts() {
    dla_tools()
        .args(["synth", "--out", "x", "--size", "512"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("WIDTHxHEIGHT"));
    let dir = tempfile::tempdir().unwrap();
    dla_tools()
        .args(["synth", "--count", "0", "--out"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("--count"));
}
