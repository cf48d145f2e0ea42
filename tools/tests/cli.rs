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

/// `dla-tools bench --json` on the tiny fixture with `extra` flags, parsed.
fn bench_json(extra: &[&str]) -> serde_json::Value {
    bench_json_on(1, extra)
}

/// [`bench_json`] with `threads` inference threads.
fn bench_json_on(threads: usize, extra: &[&str]) -> serde_json::Value {
    let out = dla_tools()
        .args([
            "bench",
            "--threads",
            &threads.to_string(),
            "--json",
            "--model",
        ])
        .arg(fixture("tiny_seg.onnx"))
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn bench_prints_machine_readable_medians() {
    let report = bench_json(&["--runs", "3", "--warmup", "1"]);
    assert_eq!(report["runs"], 3);
    assert_eq!(report["backend"], "tract");
    assert_eq!(report["argmax"], "host", "tract has no argmax of its own");
    for stage in ["pre", "infer", "post", "total"] {
        let median = report[stage]["median_ms"].as_f64().unwrap();
        let p90 = report[stage]["p90_ms"].as_f64().unwrap();
        assert!(median >= 0.0 && p90 >= median, "{stage}: {median} / {p90}");
    }
    assert!(report["fps"].as_f64().unwrap() > 0.0);
    // What ran: the fixture's one convolution on one of our kernels, and the CPU.
    let kernels = report["kernels"]
        .as_object()
        .expect("kernels per convolution");
    assert_eq!(
        kernels.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        1,
        "{kernels:?}"
    );
    assert!(report["cpu"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        report["frame"], report["input"],
        "default frame: the input size"
    );

    // --frame times a camera-sized frame; a malformed size is refused.
    let report = bench_json(&["--runs", "2", "--warmup", "0", "--frame", "320x200"]);
    assert_eq!(report["frame"], serde_json::json!([200, 320]));
    dla_tools()
        .args(["bench", "--frame", "1280", "--model"])
        .arg(fixture("tiny_seg.onnx"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("WIDTHxHEIGHT"));
}

#[test]
fn bench_paces_frames_like_a_camera() {
    // 4 frames at 20 fps start 50 ms apart: at least 150 ms of wall time
    // for frames that take well under a millisecond each.
    let started = std::time::Instant::now();
    let report = bench_json(&["--runs", "4", "--warmup", "0", "--fps", "20"]);
    let elapsed = started.elapsed();
    assert_eq!(report["paced_fps"], 20.0);
    assert!(
        elapsed >= std::time::Duration::from_millis(150),
        "paced run took only {elapsed:?}"
    );
    // Back to back, nothing is reported as paced.
    assert!(bench_json(&["--runs", "1", "--warmup", "0"])["paced_fps"].is_null());
    for bad in ["0", "-5", "fast", "inf", "1e-30"] {
        dla_tools()
            .args(["bench", &format!("--fps={bad}"), "--model"])
            .arg(fixture("tiny_seg.onnx"))
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("--fps").and(predicate::str::contains("not a frame rate")),
            );
    }
}

/// How many CPUs this process may run on (`Cpus_allowed_list` of
/// /proc/self/status, e.g. `0-1` or `0,2-3`); `None` where it is unreadable.
fn allowed_cpus() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let mut count = 0;
    for range in list.trim().split(',') {
        count += match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => 1,
        };
    }
    Some(count)
}

#[test]
fn bench_binds_threads_that_fill_the_cores_unless_told_not_to() {
    let Some(cpus) = allowed_cpus().filter(|&n| n >= 2) else {
        println!("SKIPPED: fewer than 2 CPUs allowed (or no /proc), nothing to bind");
        return;
    };
    let pinned = |threads: usize, extra: &[&str]| -> Vec<u64> {
        let report = bench_json_on(
            threads,
            &[&["--runs", "1", "--warmup", "0"], extra].concat(),
        );
        let cpus = report["pinned_cpus"]
            .as_array()
            .expect("pinned_cpus listed");
        cpus.iter().map(|c| c.as_u64().unwrap()).collect()
    };
    let mut bound = pinned(cpus, &[]);
    bound.dedup();
    assert_eq!(bound.len(), cpus, "one distinct CPU per worker: {bound:?}");
    assert!(
        pinned(cpus, &["--no-pin"]).is_empty(),
        "--no-pin binds none"
    );
    assert!(
        pinned(cpus - 1, &[]).is_empty(),
        "fewer threads than CPUs stay free"
    );
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

#[test]
fn eval_reports_quality_and_agreement_as_json() {
    let out = dla_tools()
        .args([
            "eval",
            "--data",
            "synth:2",
            "--threads",
            "1",
            "--json",
            "--model",
        ])
        .arg(fixture("tiny_seg.onnx"))
        .arg("--vs")
        .arg(fixture("tiny_seg.onnx"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["images"], 2);
    let quality = &report["quality"];
    assert_eq!(quality["per_class_iou"].as_array().unwrap().len(), 4);
    assert_eq!(quality["confusion"].as_array().unwrap().len(), 4);
    let miou = quality["miou"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou), "{miou}");
    // A model compared with itself agrees everywhere, to the last bit.
    let summary = &report["agreement_summary"];
    assert_eq!(summary["argmax_agreement"], 1.0);
    assert_eq!(summary["logit_mean_abs_diff"], 0.0);
    assert_eq!(summary["miou_drop_points"], 0.0);
}

#[test]
fn eval_needs_labels_unless_comparing() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::new(64, 64)
        .save(dir.path().join("frame.png"))
        .unwrap();
    dla_tools()
        .args(["eval", "--model"])
        .arg(fixture("tiny_seg.onnx"))
        .arg("--data")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("no label maps"));
    dla_tools()
        .args(["eval", "--model"])
        .arg(fixture("tiny_seg.onnx"))
        .arg("--vs")
        .arg(fixture("tiny_seg.onnx"))
        .arg("--data")
        .arg(dir.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("argmax agreement 100.000 %"));
}

#[test]
fn quantize_writes_integer_convs_and_refuses_to_quantize_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-int8.onnx");
    let report = dir.path().join("report.json");
    dla_tools()
        .arg("quantize")
        .arg(fixture("tiny_seg.onnx"))
        .arg(&out)
        .args([
            "--calib",
            "synth:2",
            "--eval",
            "synth:2:2",
            "--threads",
            "1",
        ])
        .arg("--report")
        .arg(&report)
        .assert()
        .success()
        .stdout(predicate::str::contains("argmax agreement with fp32"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["quantized_layers"], 1);
    assert_eq!(report["layers"].as_array().unwrap().len(), 1);
    let agreement = report["held_out"]["argmax_agreement"].as_f64().unwrap();
    assert!(agreement > 0.9, "{agreement}");
    dla_tools()
        .arg("inspect")
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("QLinearConv 1").and(
                predicate::str::contains("tiny-seg-int8").or(predicate::str::contains("-int8")),
            ),
        );
    dla_tools()
        .arg("quantize")
        .arg(&out)
        .arg(dir.path().join("again.onnx"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("already quantised")
                .and(predicate::str::contains("QLinearConv")),
        );
}

#[test]
fn quantize_names_bad_calibration_data_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let quantize = |extra: &[&std::ffi::OsStr]| {
        let mut cmd = dla_tools();
        cmd.arg("quantize")
            .arg(fixture("tiny_seg.onnx"))
            .arg(&out)
            .args(["--eval", "none"])
            .args(extra);
        cmd.assert().failure()
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    quantize(&["--calib".as_ref(), empty.as_os_str()])
        .stderr(predicate::str::contains("no images found").and(predicate::str::contains("empty")));
    quantize(&["--calib".as_ref(), "does/not/exist".as_ref()])
        .stderr(predicate::str::contains("does/not/exist"));
    let junk = dir.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("frame.png"), b"this is not a picture").unwrap();
    quantize(&["--calib".as_ref(), junk.as_os_str()])
        .stderr(predicate::str::contains("frame.png").and(predicate::str::contains("decode")));
    quantize(&["--calib".as_ref(), "synth:0".as_ref()])
        .stderr(predicate::str::contains("at least 1"));
    quantize(&["--exclude".as_ref(), "no-such-conv".as_ref()])
        .stderr(predicate::str::contains("no-such-conv").and(predicate::str::contains("--list")));
    quantize(&["--method".as_ref(), "kl".as_ref()]).stderr(predicate::str::contains("minmax"));
    quantize(&["--weight-bits".as_ref(), "6".as_ref()]).stderr(predicate::str::contains("7..=8"));
    let missing = dir.path().join("no-such-folder/report.json");
    quantize(&["--report".as_ref(), missing.as_os_str()]).stderr(
        predicate::str::contains("no-such-folder").and(predicate::str::contains("does not exist")),
    );
    assert!(!out.exists(), "nothing is written when quantisation fails");
    dla_tools()
        .arg("quantize")
        .arg(fixture("unsupported_op.onnx"))
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("FancySegment"));
}

#[test]
fn mixed_precision_and_exclusions_keep_named_convs_in_float() {
    let dir = tempfile::tempdir().unwrap();
    let report_of = |args: &[&str]| -> serde_json::Value {
        let out = dir.path().join("out.onnx");
        let report = dir.path().join("report.json");
        dla_tools()
            .arg("quantize")
            .arg(fixture("tiny_seg.onnx"))
            .arg(&out)
            .args(["--calib", "synth:2", "--eval", "none", "--threads", "1"])
            .args(args)
            .arg("--report")
            .arg(&report)
            .assert()
            .success();
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
    };
    let listed = dla_tools()
        .arg("quantize")
        .arg(fixture("tiny_seg.onnx"))
        .arg(dir.path().join("unused.onnx"))
        .arg("--list")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let conv = String::from_utf8(listed).unwrap().trim().to_string();
    assert!(
        !conv.is_empty() && !conv.contains('\n'),
        "one conv: {conv:?}"
    );
    let excluded = report_of(&["--exclude", &conv, "--target", "ort"]);
    assert_eq!(excluded["quantized_layers"], 0);
    assert_eq!(excluded["float_layers"][0], conv.as_str());
    // A zero budget either holds with everything in int8 or floats the conv
    // that loses the most; the tiny model has only one.
    let budget = report_of(&["--accuracy-budget", "0", "--target", "ort"]);
    let floats = budget["float_layers"].as_array().unwrap().len();
    let ints = budget["quantized_layers"].as_u64().unwrap();
    assert_eq!(floats as u64 + ints, 1, "{budget}");
    dla_tools()
        .arg("quantize")
        .arg(fixture("tiny_seg.onnx"))
        .arg(dir.path().join("x.onnx"))
        .args(["--accuracy-budget", "0.5", "--sqnr-images", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--sqnr-images"));
}

#[test]
fn prune_names_bad_options_and_inputs() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.onnx");
    let prune = |extra: &[&str]| {
        let mut cmd = dla_tools();
        cmd.arg("prune").arg(&shipped).arg(&out).args(extra);
        cmd.assert().failure()
    };
    prune(&["--ratio", "1.5"]).stderr(predicate::str::contains("strictly between 0 and 1"));
    prune(&["--ratio", "0"]).stderr(predicate::str::contains("--ratio 0"));
    prune(&[]).stderr(predicate::str::contains("--ratio"));
    prune(&["--target-gmacs", "lots"]).stderr(predicate::str::contains("70%"));
    prune(&["--target-gmacs", "9.5"]).stderr(predicate::str::contains("below the model's 3.80"));
    prune(&["--ratio", "0.2", "--keep", "no-such-node"])
        .stderr(predicate::str::contains("--keep \"no-such-node\""));
    prune(&["--ratio", "0.2", "--min-keep", "2"]).stderr(predicate::str::contains("--min-keep"));
    // Options of --reconstruct alone would do nothing: refused, not ignored.
    for option in [["--refit", "linear"], ["--classifier-fit", "logits"]] {
        prune(&[&["--ratio", "0.2"][..], &option[..]].concat()).stderr(
            predicate::str::contains(option[0]).and(predicate::str::contains("--reconstruct")),
        );
    }
    // A quantised model is refused with what to do instead.
    let mut cmd = dla_tools();
    cmd.arg("prune")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg-int8.onnx"))
        .arg(&out)
        .args(["--ratio", "0.2"]);
    cmd.assert().failure().stderr(predicate::str::contains(
        "prune the fp32 model, then quantise",
    ));
    // --list shows the coupled components and writes nothing.
    let mut cmd = dla_tools();
    let listed = cmd
        .arg("prune")
        .arg(&shipped)
        .arg(&out)
        .arg("--list")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&listed);
    assert!(
        text.contains("/dla_up/ida_2/node_3/node_3.0/Conv"),
        "{text}"
    );
    assert!(
        text.contains("3328 prunable channel groups in 45 components"),
        "{text}"
    );
    assert!(!out.exists());
}

/// `distill` refuses a teacher that prepares its input differently, and
/// names both models, before it fits anything.
#[test]
fn distill_refuses_a_teacher_that_sees_a_different_input() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg.onnx");
    let tmp = tempfile::tempdir().unwrap();
    dla_tools()
        .arg("distill")
        .arg(fixture("tiny_seg.onnx"))
        .arg(tmp.path().join("out.onnx"))
        .arg("--teacher")
        .arg(&shipped)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("tiny_seg.onnx").and(predicate::str::contains("--teacher")),
        );
    assert!(!tmp.path().join("out.onnx").exists());
    dla_tools()
        .args([
            "distill",
            "a.onnx",
            "b.onnx",
            "--teacher",
            "c.onnx",
            "--epochs",
            "0",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--epochs"));
}

#[test]
fn inspect_kernels_names_the_kernel_of_every_convolution() {
    use dla_runtime::ops::kernels::{Cpu, Int8Kernel};
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/dla-tiny-seg-int8.onnx");
    let out = dla_tools()
        .arg("inspect")
        .arg(&model)
        .arg("--kernels")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("kernels    on {}:", Cpu::detect().describe())),
        "{text}"
    );
    // Every quantized convolution is listed with a kernel this CPU has.
    let qlinear: usize = text
        .split("QLinearConv ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the ops line counts QLinearConv");
    let names: Vec<&str> = Int8Kernel::ALL.iter().map(|k| k.name()).collect();
    let convs: Vec<&str> = text.lines().filter(|l| l.contains(" MMAC; ")).collect();
    assert_eq!(convs.len(), qlinear, "{text}");
    for line in &convs {
        let kernel = line.trim_end_matches(", reads in place");
        assert!(names.iter().any(|n| kernel.ends_with(n)), "{line}");
    }
    // Every layer has its channels in fours but the 3-channel stem: on a
    // CPU with a quad kernel (AVX2, NEON) they all read in place, and the
    // stem too on AVX-512 VNNI (column quads); elsewhere the stem gathers.
    let in_place = convs.iter().filter(|l| l.ends_with(", reads in place"));
    let cpu = Cpu::detect();
    let quads = usize::from(cpu.avx2 || cpu.neon);
    let stem_in_place = cpu.avx512_vnni;
    let stems = usize::from(stem_in_place);
    assert_eq!(
        in_place.count(),
        quads * (convs.len() - 1) + stems,
        "{text}"
    );
    let stem = convs.iter().find(|l| l.contains(" 3 -> ")).expect("a stem");
    assert_eq!(stem.ends_with(", reads in place"), stem_in_place, "{stem}");
}

#[test]
fn inspect_describes_any_onnx_file_and_marks_assumed_card_fields() {
    dla_tools()
        .arg("inspect")
        .arg(fixture("plain-dla-dynamic.onnx"))
        .args(["--input-size", "640x352"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("card       none")
                .and(predicate::str::contains(
                    "1x3x352x640  (free in the graph; as asked)",
                ))
                .and(predicate::str::contains(
                    "std [0.229, 0.224, 0.225]  (default)",
                ))
                .and(predicate::str::contains(
                    "classes    5  (default: numbered)",
                )),
        );
    // A model that cannot run here is still described, then refused.
    dla_tools()
        .arg("inspect")
        .arg(fixture("argmax_output.onnx"))
        .assert()
        .failure()
        .stdout(
            predicate::str::contains("output     labels i64 1x64x64")
                .and(predicate::str::contains("ArgMax 1, Conv 1")),
        )
        .stderr(predicate::str::contains("without its final argmax"));
}

#[test]
fn card_writes_checks_and_embeds_a_card_that_every_command_then_finds() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mine.onnx");
    std::fs::copy(fixture("no_card.onnx"), &model).unwrap();
    let check = || dla_tools().args(["card", "--check"]).arg(&model).assert();
    check()
        .failure()
        .stderr(predicate::str::contains("mine.onnx has no model card"));
    // A card that does not fit the graph writes nothing.
    dla_tools()
        .arg("card")
        .arg(&model)
        .args(["--classes", "19"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("4 channels but the model card lists 19 classes")
                .and(predicate::str::contains("nothing was written")),
        );
    assert!(!dir.path().join("mine.onnx.card.json").exists());
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "# ours\nroad #804080\nsky\nwater #0000ff\ncat\n").unwrap();
    dla_tools()
        .arg("card")
        .arg(&model)
        .args([
            "--classes",
            classes.to_str().unwrap(),
            "--mean",
            "0.5,0.5,0.5",
        ])
        .args(["--std", "0.25,0.25,0.25", "--name", "garden"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "mine.onnx.card.json: garden (4 classes, input 64x64",
        ));
    check()
        .success()
        .stdout(predicate::str::contains("ok: the card in"));
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("mine.onnx.card.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(card["classes"][0]["name"], "road");
    assert_eq!(
        card["classes"][0]["color"],
        serde_json::json!([128, 64, 128])
    );
    assert_eq!(card["classes"][2]["color"], serde_json::json!([0, 0, 255]));
    assert_eq!(card["input"]["std"], serde_json::json!([0.25, 0.25, 0.25]));
    // Embedded: a self-contained model whose inspect shows the card.
    let embedded = dir.path().join("garden.onnx");
    dla_tools()
        .arg("card")
        .arg(&model)
        .arg("--embed")
        .arg("--out")
        .arg(&embedded)
        .assert()
        .success();
    dla_tools()
        .arg("inspect")
        .arg(&embedded)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("card       in the ONNX metadata")
                .and(predicate::str::contains("name       garden"))
                .and(predicate::str::contains("#0000ff  water")),
        );
    // A sidecar cannot override an embedded card; the tool says how instead.
    dla_tools()
        .arg("card")
        .arg(&embedded)
        .args(["--classes", "4"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("pass --embed"));
}

#[test]
fn model_writers_refuse_an_output_they_could_not_write_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture("plain-dla.onnx"), &model).unwrap();
    std::fs::copy(
        fixture("plain-dla.onnx.data"),
        dir.path().join("plain-dla.onnx.data"),
    )
    .unwrap();
    let before = std::fs::read(&model).unwrap();
    let m = model.to_str().unwrap();
    let folder = dir.path().to_str().unwrap();
    let missing = dir.path().join("no/such/folder/out.onnx");
    for (output, needle) in [
        (m, "is the input; write to another file"),
        (folder, "is a folder; name the file to write"),
        (missing.to_str().unwrap(), "does not exist; create it first"),
    ] {
        for args in [
            vec!["quantize", m, output, "--calib", "synth:64"],
            vec![
                "prune",
                m,
                output,
                "--target-gmacs",
                "70%",
                "--calib",
                "synth:64",
            ],
            vec!["distill", m, output, "--teacher", m, "--data", "synth:64"],
        ] {
            // Refused up front: nothing of calibration, pruning or fitting ran.
            dla_tools()
                .args(&args)
                .assert()
                .failure()
                .stderr(predicate::str::contains(needle))
                .stdout(predicate::str::is_empty());
        }
    }
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the input is untouched"
    );
}
