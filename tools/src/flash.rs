//! `dla-tools flash`: puts a bundle on a board over ssh, installs it, starts
//! the service and waits until the board's viewer reports frames, then prints
//! the board's first FPS. Uses the system's `ssh` and `scp`, so keys, agents
//! and `~/.ssh/config` work as they do for the user.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args as ClapArgs;

use crate::bundle::Board;

/// Arguments of `dla-tools flash`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Steps: check the board's architecture (ssh uname -m), copy the bundle's \
    .tar.gz (scp), unpack and run install.sh (with sudo unless you log in as root), then poll the \
    viewer's /stats.json (directly, or through an ssh tunnel when it listens on 127.0.0.1) until \
    frames flow.\n\n\
Examples:\n  \
    dla-tools flash --board rpi5 --host pi@raspberrypi.local                 # bundles first\n  \
    dla-tools flash --board rpi4 --host pi@10.0.0.7 --bundle dist/dla-edge-rpi4-0.1.0-arm64\n  \
    dla-tools flash --board rpi4 --host pi@10.0.0.7 --dry-run"
)]
pub struct Args {
    /// Board profile (as for `bundle`).
    #[arg(long, value_enum)]
    board: Board,
    /// Where to ssh to, `user@host`.
    #[arg(long)]
    host: String,
    /// ssh port.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// Private key for ssh/scp (default: ssh's own choice).
    #[arg(long, short = 'i', value_name = "KEY")]
    identity: Option<PathBuf>,
    /// Extra ssh options, `-o` style (repeatable), e.g. StrictHostKeyChecking=accept-new.
    #[arg(long = "ssh-option", value_name = "OPT")]
    ssh_options: Vec<String>,
    /// A bundle folder made by `dla-tools bundle` (its .tar.gz must sit next to
    /// it); default: bundle now into ./dist.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Install under this folder on the board instead of / (no sudo, no systemd).
    #[arg(long, value_name = "DIR")]
    root: Option<String>,
    /// Print the steps without doing them.
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for the first frames.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    wait: u64,
}

/// Quotes a word for the remote shell.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| sh_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Remote<'a> {
    args: &'a Args,
}

impl Remote<'_> {
    fn common(&self, cmd: &mut Command, port_flag: &str) {
        cmd.args([port_flag, &self.args.port.to_string()]);
        cmd.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
        if let Some(key) = &self.args.identity {
            cmd.arg("-i").arg(key);
        }
        for o in &self.args.ssh_options {
            cmd.args(["-o", o]);
        }
    }

    fn ssh(&self, remote_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, "-p");
        cmd.arg(&self.args.host).arg(remote_command);
        cmd
    }

    fn scp(&self, local: &Path, remote_path: &str) -> Command {
        let mut cmd = Command::new("scp");
        self.common(&mut cmd, "-P");
        cmd.arg("-q")
            .arg(local)
            .arg(format!("{}:{remote_path}", self.args.host));
        cmd
    }

    /// Runs `cmd` (or prints it on --dry-run); returns stdout.
    fn run(&self, what: &str, mut cmd: Command) -> anyhow::Result<String> {
        println!("{what}: {}", show(&cmd));
        if self.args.dry_run {
            return Ok(String::new());
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}

/// The viewer address in a bundle's config.toml, if the viewer is on.
fn viewer_listen(config: &str) -> anyhow::Result<Option<String>> {
    let table: toml::Table = toml::from_str(config).context("the bundle's config.toml")?;
    let listen = table
        .get("viewer")
        .and_then(|v| v.get("listen"))
        .and_then(|v| v.as_str())
        .unwrap_or("127.0.0.1:8080");
    Ok((listen != "off").then(|| listen.to_string()))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1);
    (status == Some("200")).then(|| body.to_string())
}

/// Kills an ssh tunnel when flash ends.
struct Tunnel(Child);

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `dla-tools flash`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let profile = args.board.profile();
    let remote = Remote { args };
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => {
            println!(
                "bundle: dla-tools bundle --board {} --out dist",
                profile.name
            );
            if args.dry_run {
                PathBuf::from(format!("dist/dla-edge-{}-VERSION-ARCH", profile.name))
            } else {
                crate::bundle::make(args.board, Path::new("dist"))?
            }
        }
    };
    let name = bundle
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--bundle {}: not a folder name", bundle.display()))?
        .to_string();
    let tarball = bundle.with_file_name(format!("{name}.tar.gz"));
    let (manifest, config) = if args.dry_run && args.bundle.is_none() {
        (serde_json::json!({"target": profile.target}), String::new())
    } else {
        let read = |f: &str| {
            std::fs::read_to_string(bundle.join(f)).with_context(|| {
                format!(
                    "--bundle {}: no {f} (made by dla-tools bundle?)",
                    bundle.display()
                )
            })
        };
        if !tarball.is_file() {
            bail!("{}: not found next to the bundle folder", tarball.display());
        }
        (
            serde_json::from_str(&read("BUNDLE.json")?)?,
            read("config.toml")?,
        )
    };
    let want_arch = manifest["target"]
        .as_str()
        .and_then(|t| t.split('-').next())
        .unwrap_or("aarch64")
        .to_string();

    let arch = remote.run("check the board", remote.ssh("uname -m"))?;
    let arch = arch.trim();
    if !args.dry_run && arch != want_arch {
        bail!(
            "{} is {arch}, but the bundle was built for {want_arch}: bundle with --target \
             matching the board",
            args.host
        );
    }

    let remote_tar = format!("/tmp/{name}.tar.gz");
    remote.run("copy", remote.scp(&tarball, &remote_tar))?;
    let root_flag = args
        .root
        .as_ref()
        .map(|r| format!(" --root {}", sh_quote(r)))
        .unwrap_or_default();
    let install = format!(
        "set -e; d=$(mktemp -d); tar -xzf {tar} -C \"$d\"; rm -f {tar}; \
         if [ \"$(id -u)\" = 0 ] || [ -n {root} ]; then S=; else S=sudo; fi; \
         $S \"$d/{name}/install.sh\"{root_flag}; rm -rf \"$d\"",
        tar = sh_quote(&remote_tar),
        root = sh_quote(args.root.as_deref().unwrap_or("")),
        name = name,
    );
    let printed = remote.run("install", remote.ssh(&install))?;
    for line in printed.lines() {
        println!("  board: {line}");
    }

    let Some(listen) = viewer_listen(&config)? else {
        println!("viewer: off in the config; not waiting for frames");
        return Ok(());
    };
    let port = listen.rsplit(':').next().unwrap_or("8080").to_string();
    let host_only = args
        .host
        .rsplit('@')
        .next()
        .unwrap_or(&args.host)
        .to_string();
    let loopback = listen.starts_with("127.") || listen.starts_with("[::1]");
    let (_tunnel, addr) = if loopback && !is_local(&host_only) {
        // Reach a board-local viewer through an ssh tunnel.
        let local = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new("ssh");
        remote.common(&mut cmd, "-p");
        cmd.args(["-N", "-L", &format!("{local}:{listen}")])
            .arg(&args.host);
        println!("tunnel: {}", show(&cmd));
        let tunnel = if args.dry_run {
            None
        } else {
            Some(Tunnel(
                cmd.stdin(Stdio::null())
                    .spawn()
                    .context("starting ssh -L")?,
            ))
        };
        (tunnel, format!("127.0.0.1:{local}"))
    } else {
        let host = if loopback { "127.0.0.1" } else { &host_only };
        (None, format!("{host}:{port}"))
    };
    println!("check: GET http://{addr}/stats.json until frames flow");
    if args.dry_run {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        if let Some(stats) = http_get(&addr, "/stats.json")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        {
            let frames = stats["frames_processed"].as_u64().unwrap_or(0);
            match first {
                None if frames > 0 => first = Some((Instant::now(), frames)),
                Some((t0, f0)) if frames >= f0 + 5 || t0.elapsed() > Duration::from_secs(10) => {
                    let fps = (frames - f0) as f64 / t0.elapsed().as_secs_f64();
                    println!(
                        "running: {} on the board's viewer http://{listen}/, {frames} frames, \
                         {fps:.1} FPS (board's own estimate {:.1}), source {}",
                        args.host,
                        stats["fps"].as_f64().unwrap_or(0.0),
                        stats["source"].as_str().unwrap_or("?")
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the board's viewer at {addr} showed no frames within {} s: see the service log \
                 (journalctl -u dla-edge, or var/log/dla-edge.log under --root)",
                args.wait
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}
