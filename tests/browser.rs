//! The README's main job, seen through a real browser: `dla-edge stream` with
//! no source and no model (the built-in demo and the shipped DLA-tiny), opened
//! in headless Chromium, which must show a live, non-blank overlay and stats
//! that change by themselves (tests/browser_check.py does the looking).
//!
//! Needs a Chromium (`chromium`, `chromium-browser` or `google-chrome` on PATH,
//! or `$DLA_CHROMIUM`). Without one the test says so and passes, unless
//! `DLA_REQUIRE_BROWSER=1` (set by .ci/run, which installs Debian's chromium).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dla_e2e::{bin, python, root, s};

/// The header's model and engine: the built-in model on a CPU engine is the
/// int8 DLA-tiny, on tract by default.
const ENGINE: &str = "dla-tiny-seg-int8 on tract";

/// The viewer's login token in this test.
const TOKEN: &str = "browser-test-token";

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DLA_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Kills the stream when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn headless_chromium_shows_the_live_demo_with_changing_stats() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("DLA_REQUIRE_BROWSER").is_none(),
            "DLA_REQUIRE_BROWSER is set but no chromium was found (install Debian's \
             `chromium` or set DLA_CHROMIUM)"
        );
        eprintln!("SKIPPED: no chromium on PATH; .ci/run installs one and requires this test");
        return;
    };
    // What the README tells a user to run, on a free port, with a login:
    // the check logs in through the page's form.
    let login_dir = tempfile::tempdir().unwrap();
    let login = login_dir.path().join("login");
    std::fs::write(&login, format!("{TOKEN}\n")).unwrap();
    let child = Command::new(bin("dla-edge"))
        .args([
            "stream",
            "--threads",
            "1",
            "--http",
            "127.0.0.1:0",
            "--http-login",
        ])
        .arg(&login)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dla-edge");
    let mut child = Running(child);
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("dla-edge prints the viewer URL");
        if let Some(url) = line.strip_prefix("viewer: ") {
            break url.to_string();
        }
    };

    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(root().join("tests/browser_check.py"))
        .arg(&chromium)
        .arg(&url)
        .arg(out_dir.path())
        .arg(ENGINE)
        .arg(TOKEN)
        .output()
        .expect("run tests/browser_check.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser check failed ({}):\n{report}\n{}\nscreenshots: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s(&out_dir.keep())
    );
    // The screenshots are real images of the page at its window size.
    for name in ["viewer-1.png", "viewer-2.png"] {
        let img = image::open(out_dir.path().join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (1280, 1000), "{name}");
    }
    let report: serde_json::Value =
        serde_json::from_str(report.lines().next().unwrap_or_default()).unwrap();
    assert!(report["processed_second"].as_u64() > report["processed_first"].as_u64());
    assert_eq!(report["engine"], ENGINE, "the header names the engine");
    assert_eq!(
        report["login_form_seen"], true,
        "the page asked for the login first"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the stream kept running"
    );
}
