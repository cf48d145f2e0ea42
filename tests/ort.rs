//! The ONNX Runtime backend through the real binaries (dla-tools is built
//! with it by default): same labels as tract, loud errors instead of silent
//! CPU fallbacks, a clear message when no library exists, and the
//! side-by-side benchmark. No GPU is needed: CUDA is requested from the
//! CPU-only PyPI library on purpose.

use dla_e2e::{root, run_with_ort, s};

fn shipped() -> String {
    s(&root().join("models/dla-tiny-seg.onnx")).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed ({}):\n{}",
        out.status,
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn ort_cpu_labels_agree_with_tract() {
    let model = shipped();
    let out = run_with_ort(
        "dla-tools",
        &[
            "eval",
            "--model",
            &model,
            "--backend",
            "ort-cpu",
            "--vs",
            &model,
            "--data",
            "synth:3:7",
            "--threads",
            "2",
            "--json",
        ],
    );
    let report = ok_json(&out);
    let agreement = report["agreement_summary"]["argmax_agreement"]
        .as_f64()
        .unwrap();
    println!("onnxruntime vs tract: argmax agreement {agreement:.6}");
    assert!(
        agreement >= 0.9999,
        "argmax agreement {agreement} < 99.99 %"
    );
}

/// The shipped int8 model (7-bit weights) on our own int8 operators
/// (runtime/src/ops, the u8 x s8 kernel) and on onnxruntime's QLinearConv,
/// same file and inputs: two independent integer engines agree to the last
/// rounding (100 % of argmax pixels, SQNR 86 dB on 4 held-out scenes).
/// With 8-bit weights they did not (99.89 %, 38 dB, stock tract alike):
/// onnxruntime's AVX2 kernel saturates 16-bit pair sums that 7-bit weights
/// cannot reach.
#[test]
fn int8_on_our_kernels_agrees_with_onnx_runtime() {
    let model = s(&root().join("models/dla-tiny-seg-int8.onnx")).to_string();
    let out = run_with_ort(
        "dla-tools",
        &[
            "eval",
            "--model",
            &model,
            "--vs",
            &model,
            "--vs-backend",
            "ort-cpu",
            "--data",
            "synth:3:2",
            "--threads",
            "2",
            "--json",
        ],
    );
    let report = ok_json(&out);
    let summary = &report["agreement_summary"];
    let agreement = summary["argmax_agreement"].as_f64().unwrap();
    let sqnr = summary["logit_sqnr_db"].as_f64().unwrap();
    println!("int8, our kernels vs onnxruntime: agreement {agreement:.6}, SQNR {sqnr:.1} dB");
    assert!(agreement >= 0.9999, "argmax agreement {agreement}");
    assert!(sqnr >= 60.0, "logit SQNR {sqnr} dB");
}

#[test]
fn cuda_on_a_cpu_only_library_fails_loudly_unless_fallback_is_allowed() {
    let model = shipped();
    let args = [
        "bench",
        "--model",
        &model,
        "--backend",
        "ort-cuda",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
    ];
    let out = run_with_ort("dla-tools", &args);
    assert!(!out.status.success(), "ort-cuda ran on a CPU-only library");
    let err = stderr(&out);
    assert!(err.contains("CUDAExecutionProvider"), "{err}");
    assert!(err.contains("--allow-cpu-fallback"), "{err}");

    let mut allowed = args.to_vec();
    allowed.push("--allow-cpu-fallback");
    let report = ok_json(&run_with_ort("dla-tools", &allowed));
    // The report says where it really ran.
    assert_eq!(report["backend"], "ort-cpu");

    let out = run_with_ort(
        "dla-tools",
        &[
            "bench",
            "--model",
            &model,
            "--backend",
            "ort-tensorrt",
            "--runs",
            "1",
        ],
    );
    assert!(
        !out.status.success(),
        "ort-tensorrt ran on a CPU-only library"
    );
    assert!(
        stderr(&out).contains("TensorrtExecutionProvider"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_library_says_where_and_how_to_install() {
    let model = shipped();
    let out = run_with_ort(
        "dla-tools",
        &[
            "bench",
            "--model",
            &model,
            "--backend",
            "ort-cpu",
            "--ort-lib",
            "/nonexistent",
            "--runs",
            "1",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(err.contains("pip install onnxruntime"), "{err}");
}

#[test]
fn bench_vs_ort_reports_both_engines_and_the_ratio() {
    let model = shipped();
    let report = ok_json(&run_with_ort(
        "dla-tools",
        &[
            "bench",
            "--model",
            &model,
            "--vs",
            "ort",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ],
    ));
    println!("{report}");
    assert_eq!(report["ours"]["backend"], "tract");
    assert_eq!(report["theirs"]["backend"], "ort-cpu");
    let ours = report["ours"]["median_ms"].as_f64().unwrap();
    let theirs = report["theirs"]["median_ms"].as_f64().unwrap();
    let ratio = report["ratio"].as_f64().unwrap();
    assert!(ours > 0.0 && theirs > 0.0);
    assert!((ratio - ours / theirs).abs() < 1e-9);
    assert!(report["argmax_agreement"].as_f64().unwrap() >= 0.9999);
    assert!(report["onnxruntime"].as_str().is_some());
}

/// `--argmax engine` on the CPU provider: the warm-up frame checks ONNX
/// Runtime's labels against ours, the timed frames use them, and the report
/// says so; `auto` keeps the argmax on the host there (it is slower).
#[test]
fn bench_says_where_the_argmax_ran() {
    let model = shipped();
    let bench = |argmax: &str| {
        let args = [
            "bench",
            "--model",
            &model,
            "--backend",
            "ort-cpu",
            "--argmax",
            argmax,
            "--frame",
            "640x360",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ];
        ok_json(&run_with_ort("dla-tools", &args))
    };
    let mut nodes = vec![];
    for (argmax, expected) in [("engine", "engine"), ("host", "host"), ("auto", "host")] {
        let report = bench(argmax);
        assert_eq!(report["argmax"], expected, "--argmax {argmax}: {report}");
        // ONNX Runtime's own count of the nodes it placed on each provider.
        let placement = report["placement"].as_object().expect("placement");
        assert_eq!(placement.len(), 1, "{report}");
        nodes.push(placement["CPUExecutionProvider"].as_u64().unwrap());
    }
    // The engine's argmax adds nodes to the graph; host and auto load it as is.
    assert!(nodes[0] > nodes[1] && nodes[1] == nodes[2], "{nodes:?}");
}

#[test]
fn dla_edge_segment_runs_on_ort_or_says_how_to_build_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_with_ort(
        "dla-edge",
        &[
            "segment",
            "--input",
            s(&root().join("models/samples/street-0.jpg")),
            "--out",
            s(tmp.path()),
            "--visualize",
            "labels",
            "--backend",
            "ort-cpu",
            "--threads",
            "1",
        ],
    );
    // dla-edge has ort only when built with `--features ort` (or when a
    // workspace build unifies it in from dla-tools): either way must be clear.
    if out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The backend, and where ONNX Runtime placed the network's nodes.
        assert!(stdout.contains("on ort-cpu ("), "{stdout}");
        assert!(stdout.contains(" nodes on CPU)"), "{stdout}");
        assert!(tmp.path().join("street-0.labels.png").is_file());
    } else {
        let err = stderr(&out);
        assert!(err.contains("--features ort"), "{err}");
    }
}

/// `scripts/cpuid-mask.c`, which cpu-bench.sh preloads to show both engines
/// an older CPU: under `CPUID_MASK=avx2` the process sees AVX2 + FMA and
/// nothing newer (our kernel dispatch reads the same `cpuid` as ONNX
/// Runtime's), under `avxvnni` AVX-VNNI stays, and a mask it does not know is
/// refused by name.
#[test]
fn cpuid_mask_shows_the_process_an_older_cpu() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |flag: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
    };
    if !has("cpuid_fault") || !has("avx2") {
        eprintln!("SKIPPED: this CPU cannot trap cpuid (no cpuid_fault) or has no AVX2");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("cpuid-mask.so");
    let built = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o", s(&lib)])
        .arg(root().join("scripts/cpuid-mask.c"))
        .status()
        .expect("run cc");
    assert!(built.success(), "cc failed on scripts/cpuid-mask.c");
    let int8 = root().join("models/dla-tiny-seg-int8.onnx");
    let kernels = |mask: &str| {
        std::process::Command::new(dla_e2e::bin("dla-tools"))
            .args(["inspect", s(&int8), "--kernels"])
            .env("CPUID_MASK", mask)
            .env("LD_PRELOAD", &lib)
            .output()
            .expect("run dla-tools")
    };
    let out = kernels("avx2");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on x86_64 with avx2 + fma:"), "{text}");
    assert!(text.contains("58 convolution(s) on avx2 u8 x s8"), "{text}");
    if has("avx_vnni") {
        let text = String::from_utf8_lossy(&kernels("avxvnni").stdout).into_owned();
        assert!(
            text.contains("on x86_64 with avx2 + fma + avxvnni:"),
            "{text}"
        );
    }
    let refused = kernels("sse2");
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("CPUID_MASK=sse2: expected avx2 or avxvnni"));
}

/// `scripts/cpu-bench.sh` on a model given by path, one run per pair at 1
/// thread, two rounds: it quantizes ONNX Runtime's int8 model, runs every
/// pair (and each older instruction set this CPU also has) twice and prints
/// one table whose ratios and ranges come from the runs.
#[test]
fn cpu_bench_script_prints_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let tools = dla_e2e::bin("dla-tools");
    let lib = dla_e2e::ort_library();
    let (fp32, int8) = (shipped(), root().join("models/dla-tiny-seg-int8.onnx"));
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/cpu-bench.sh"))
        .args(["--model", &fp32, "--int8", s(&int8)])
        .args(["--tools", s(&tools), "--ort-lib", s(&lib), "--threads", "1"])
        .args(["--runs", "1", "--rounds", "2", "--out", s(tmp.path())])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    println!("{table}");
    // Every cell is the median of its two rounds (the lower one), with
    // the range of both.
    let run = |file: String| -> serde_json::Value {
        let text = std::fs::read_to_string(tmp.path().join(file)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let ratio = |file: String| run(file)["ratio"].as_f64().unwrap();
    let cell = |name: &str| -> (String, String) {
        let (a, b) = (
            ratio(format!("{name}.json")),
            ratio(format!("{name}.r2.json")),
        );
        let (lo, hi) = (a.min(b), a.max(b));
        (format!("**{lo:.2}x**"), format!("; {lo:.2}–{hi:.2}x)"))
    };
    for (label, name) in [
        ("ours fp32 / ORT fp32 |", "fp32-vs-ort-t1-native"),
        ("ours int8 / ORT int8 |", "int8-vs-ort-t1-native"),
        ("int8 speed-up over fp32 |", "fp32-vs-int8-t1-native"),
    ] {
        let line = table.lines().find(|l| l.contains(label)).expect(label);
        let (median, range) = cell(name);
        assert!(
            line.contains(&median) && line.contains(&range),
            "{line} vs {median} {range}"
        );
    }
    // On a CPU newer than AVX2 the rows as on AVX2 only come from their runs too.
    if tmp.path().join("int8-vs-ort-t1-avx2.r2.json").is_file() {
        let line = table
            .lines()
            .find(|l| {
                l.starts_with("| ours int8 / ORT int8 (")
                    && (l.contains("AVX2 only") || l.contains("held to avx2"))
            })
            .expect("an AVX2 row");
        let (median, range) = cell("int8-vs-ort-t1-avx2");
        assert!(
            line.contains(&median) && line.contains(&range),
            "{line} vs {median} {range}"
        );
    } else {
        eprintln!("SKIPPED: rows as on AVX2 only: this CPU has nothing newer than AVX2");
    }
    let agreement = run("int8-vs-ort-t1-native.json".into())["argmax_agreement"]
        .as_f64()
        .unwrap();
    assert!(agreement > 0.99, "int8 agreement with ORT {agreement}");
    assert!(table.starts_with("CPU: "), "{table}");
    assert!(table.contains("dla-tiny-seg at 512x256"), "{table}");
    assert!(table.contains("the median of 2 rounds"), "{table}");
    assert!(table.contains("convolution(s) on"), "{table}");
}
