//! The `switchboard` binary as an operator runs it: `token`, dev mode,
//! production refusals, and the precedence of flags, environment and file.
//! Every run starts from an empty environment (only `PATH`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{free_port, unix_now, Process, Ws};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const SECRET: &str = "cli-test-secret-that-is-long-enough-0000";
const API_KEY: &str = "cli-test-api-key";

/// `switchboard <args>` with only `PATH` and `env` set, run in `cwd`.
fn command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs to completion; returns (exit code, stdout, stderr). Panics if it
/// is still running after 10 s (a server that should have refused to start).
fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (Option<i32>, String, String) {
    let mut child = command(args, env, cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`switchboard {}` still running after 10 s; stderr: {}",
                args.join(" "),
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close at exit; give the readers a moment to finish.
    std::thread::sleep(Duration::from_millis(50));
    let out = stdout.lock().unwrap().clone();
    let err = stderr.lock().unwrap().clone();
    (status.code(), out, err)
}

/// Reads a pipe to the end in a thread (so the child never blocks on it).
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// `GET /health` over a plain socket: the status, or `None` if refused.
fn health(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1)?.parse().ok()
}

/// `127.0.0.1:<a free port>`.
fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A server started by a test, with its output collected.
struct Server {
    process: Process,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `switchboard <args>` and waits until `expect` answers /health
    /// with 200; panics (with stderr) if it exits or never answers.
    fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path, expect: SocketAddr) -> Server {
        let mut child: Child = command(args, env, cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut server = Server {
            process: Process {
                child,
                addr: expect,
            },
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while health(expect) != Some(200) {
            if let Some(status) = server.process.child.try_wait().unwrap() {
                panic!("server exited with {status}; stderr: {}", server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "nothing answered on {expect}; stderr: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    /// A dev-mode node (no environment, no config file) on a free port.
    fn dev(data_dir: &Path) -> Server {
        let addr = free_addr();
        let args = [
            "serve",
            "--listen",
            &addr.to_string(),
            "--data-dir",
            path_str(data_dir),
        ];
        Server::start(&args, &[], data_dir, addr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 2 s) until stderr satisfies `f`.
    fn wait_stderr(&self, f: impl Fn(&str) -> bool) -> bool {
        wait_until(|| f(&self.stderr()))
    }

    /// Waits (up to 2 s) until stdout and stderr together satisfy `f`.
    fn wait_output(&self, f: impl Fn(&str) -> bool) -> bool {
        wait_until(|| f(&self.output()))
    }

    /// Everything printed so far (logs go to stdout, notices to stderr).
    fn output(&self) -> String {
        format!("{}{}", self.stdout.lock().unwrap(), self.stderr())
    }

    /// Stops the node with SIGKILL (graceful shutdown is tested in
    /// lifecycle.rs; nothing here depends on it).
    fn stop(self) {
        drop(self.process);
    }
}

/// Polls `f` for up to 2 s.
fn wait_until(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The dev-mode secrets file of `data_dir`.
fn dev_secrets(data_dir: &Path) -> Value {
    let text = std::fs::read_to_string(data_dir.join("dev-secrets.json"))
        .expect("dev-secrets.json exists");
    serde_json::from_str(&text).expect("dev-secrets.json is JSON")
}

/// `switchboard token --data-dir <dir> <args>` in dev mode; returns the token.
fn mint(data_dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["token", "--data-dir", path_str(data_dir)];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run(&all, &[], data_dir);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let token = stdout.trim().to_string();
    assert_eq!(token.lines().count(), 1, "one line, the token: {stdout:?}");
    token
}

/// The decoded header and payload of a JWT.
fn decode(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
    let part = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url")).expect("JSON")
    };
    (part(parts[0]), part(parts[1]))
}

/// A config file in `dir` with `contents`.
fn config_file(dir: &Path, contents: &str) -> PathBuf {
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, contents).unwrap();
    path
}

fn secrets_toml() -> String {
    format!("[auth]\nhmac_secret = \"{SECRET}\"\napi_key = \"{API_KEY}\"\n")
}

/// Asserts `switchboard serve` with `args`/`env` exits with code 2 and an
/// error naming every one of `culprits`.
fn assert_refused(args: &[&str], env: &[(&str, &str)], cwd: &Path, culprits: &[&str]) {
    let (code, _, stderr) = run(args, env, cwd);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    for culprit in culprits {
        assert!(
            stderr.contains(culprit),
            "the error should name `{culprit}`: {stderr}"
        );
    }
}

// ----------------------------------------------------------------- token

#[test]
fn token_in_dev_mode_creates_the_secrets_and_prints_a_24h_jwt_for_the_user() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().join("dev-secrets.json").exists());
    let token = mint(dir.path(), &["--user", "42"]);
    let secrets = dev_secrets(dir.path());
    let secret = secrets["hmac_secret"].as_str().expect("hmac_secret");
    assert!(
        secrets["api_key"].as_str().is_some_and(|k| !k.is_empty()),
        "{secrets}"
    );

    let (header, claims) = decode(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["sub"], "42");
    let exp = claims["exp"].as_u64().expect("exp");
    let expected = unix_now() + 24 * 3600;
    assert!(
        exp.abs_diff(expected) <= 5,
        "exp {exp}, expected about {expected}"
    );
    let verifier = switchboard::auth::Verifier::new(Some(secret), None, None).unwrap();
    let verified = verifier
        .connection(&token)
        .expect("signed with the dev secret");
    assert_eq!(verified.sub, "42");
}

#[test]
fn token_ttl_sets_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (_, claims) = decode(&mint(dir.path(), &["--user", "42", "--ttl", "1h"]));
    let exp = claims["exp"].as_u64().expect("exp");
    let expected = unix_now() + 3600;
    assert!(
        exp.abs_diff(expected) <= 5,
        "exp {exp}, expected about {expected}"
    );
}

#[test]
fn token_ttl_zero_never_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (_, claims) = decode(&mint(dir.path(), &["--user", "42", "--ttl", "0"]));
    assert_eq!(claims["sub"], "42");
    assert!(claims.get("exp").is_none(), "no exp claim: {claims}");
}

#[test]
fn token_info_is_carried_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_, claims) = decode(&mint(
        dir.path(),
        &["--user", "42", "--info", r#"{"name":"Asha"}"#],
    ));
    assert_eq!(claims["info"], json!({"name": "Asha"}));
}

#[test]
fn token_channels_become_a_list_of_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let (_, claims) = decode(&mint(
        dir.path(),
        &["--user", "42", "--channels", "orders:*,chat:*"],
    ));
    assert_eq!(claims["channels"], json!(["orders:*", "chat:*"]));
}

#[test]
fn token_channel_mints_a_subscription_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_, claims) = decode(&mint(dir.path(), &["--user", "42", "--channel", "chat:x"]));
    assert_eq!(claims["sub"], "42");
    assert_eq!(claims["channel"], "chat:x");
    assert!(claims.get("channels").is_none(), "{claims}");
}

// -------------------------------------------------------------- dev mode

#[cfg(unix)]
#[test]
fn dev_secrets_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    mint(dir.path(), &["--user", "42"]);
    let mode = std::fs::metadata(dir.path().join("dev-secrets.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn dev_mode_server_prints_its_generated_secrets_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    let secrets = dev_secrets(dir.path());
    let api_key = secrets["api_key"].as_str().unwrap();
    let hmac_secret = secrets["hmac_secret"].as_str().unwrap();
    let printed = server.wait_stderr(|e| e.contains(api_key) && e.contains(hmac_secret));
    assert!(printed, "stderr shows both secrets: {}", server.stderr());
    server.stop();
}

#[test]
fn dev_mode_server_warns_that_it_runs_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    let warned = server.wait_output(|o| o.to_lowercase().contains("dev mode"));
    assert!(warned, "a loud dev-mode warning: {}", server.output());
    server.stop();
}

#[test]
fn dev_mode_secrets_are_not_printed_again_on_later_starts() {
    let dir = tempfile::tempdir().unwrap();
    Server::dev(dir.path()).stop();
    let secrets = dev_secrets(dir.path());
    let again = Server::dev(dir.path());
    // The notice would come before the node listens; let the pipe drain.
    std::thread::sleep(Duration::from_millis(200));
    let stderr = again.stderr();
    assert!(
        !stderr.contains(secrets["api_key"].as_str().unwrap()),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains(secrets["hmac_secret"].as_str().unwrap()),
        "stderr: {stderr}"
    );
    again.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_server_accepts_a_token_minted_with_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    let token = mint(dir.path(), &["--user", "42"]);
    let mut ws = Ws::open(&format!(
        "ws://{}/connection/websocket",
        server.process.addr
    ))
    .await;
    let connected = ws.connect(&token).await;
    assert_eq!(connected["user"], "42");
    drop(ws);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_server_accepts_the_api_key_from_the_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    let key = dev_secrets(dir.path())["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = common::api_call(server.process.addr, "info", json!({}), Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = common::api_call(server.process.addr, "info", json!({}), Some("wrong")).await;
    assert_eq!(status, 401);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_tokens_keep_working_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    Server::dev(dir.path()).stop();
    let token = mint(dir.path(), &["--user", "42"]);
    let secrets = dev_secrets(dir.path());

    let server = Server::dev(dir.path());
    assert_eq!(
        dev_secrets(dir.path()),
        secrets,
        "the secrets are kept, not regenerated"
    );
    let mut ws = Ws::open(&format!(
        "ws://{}/connection/websocket",
        server.process.addr
    ))
    .await;
    let connected = ws.connect(&token).await;
    assert_eq!(connected["user"], "42");
    drop(ws);
    server.stop();
}

// ---------------------------------------------------- production refusal

#[test]
fn a_config_file_without_hmac_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "listen = \"127.0.0.1:0\"\n[auth]\napi_key = \"k\"\n",
    );
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--data-dir",
        path_str(dir.path()),
    ];
    assert_refused(&args, &[], dir.path(), &["auth.hmac_secret"]);
}

#[test]
fn an_environment_without_hmac_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["serve", "--data-dir", path_str(dir.path())];
    let env = [("SWITCHBOARD_LISTEN", "127.0.0.1:0")];
    assert_refused(
        &args,
        &env,
        dir.path(),
        &["auth.hmac_secret", "SWITCHBOARD_AUTH_HMAC_SECRET"],
    );
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &format!("{}[client]\nping_intervall = \"1s\"\n", secrets_toml()),
    );
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path_str(dir.path()),
    ];
    assert_refused(&args, &[], dir.path(), &["client.ping_intervall"]);
}

#[test]
fn a_bad_value_in_the_config_file_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &format!("{}[client]\nping_interval = \"soon\"\n", secrets_toml()),
    );
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path_str(dir.path()),
    ];
    assert_refused(&args, &[], dir.path(), &["client.ping_interval"]);
}

#[test]
fn an_unknown_switchboard_variable_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path_str(dir.path()),
    ];
    let env = [
        ("SWITCHBOARD_AUTH_HMAC_SECRET", SECRET),
        ("SWITCHBOARD_AUTH_API_KEY", API_KEY),
        ("SWITCHBOARD_FOO", "1"),
    ];
    assert_refused(&args, &env, dir.path(), &["SWITCHBOARD_FOO"]);
}

// ------------------------------------------------------------ precedence

#[test]
fn listen_from_the_config_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = free_addr();
    let file = config_file(
        dir.path(),
        &format!("listen = \"{from_file}\"\n{}", secrets_toml()),
    );
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--data-dir",
        path_str(dir.path()),
    ];
    Server::start(&args, &[], dir.path(), from_file).stop();
}

#[test]
fn listen_from_the_environment_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env) = (free_addr(), free_addr());
    let file = config_file(
        dir.path(),
        &format!("listen = \"{from_file}\"\n{}", secrets_toml()),
    );
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--data-dir",
        path_str(dir.path()),
    ];
    let env_listen = from_env.to_string();
    let server = Server::start(
        &args,
        &[("SWITCHBOARD_LISTEN", &env_listen)],
        dir.path(),
        from_env,
    );
    assert_eq!(health(from_file), None, "the file's address is not used");
    server.stop();
}

#[test]
fn the_listen_flag_beats_the_environment_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env, from_flag) = (free_addr(), free_addr(), free_addr());
    let file = config_file(
        dir.path(),
        &format!("listen = \"{from_file}\"\n{}", secrets_toml()),
    );
    let flag = from_flag.to_string();
    let args = [
        "serve",
        "--config",
        path_str(&file),
        "--listen",
        &flag,
        "--data-dir",
        path_str(dir.path()),
    ];
    let env_listen = from_env.to_string();
    let server = Server::start(
        &args,
        &[("SWITCHBOARD_LISTEN", &env_listen)],
        dir.path(),
        from_flag,
    );
    assert_eq!(health(from_file), None, "the file's address is not used");
    assert_eq!(
        health(from_env),
        None,
        "the environment's address is not used"
    );
    server.stop();
}

// ------------------------------------------------------------------ help

#[test]
fn help_lists_the_serve_and_token_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(&["--help"], &[], dir.path());
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"serve"), "{stdout}");
    assert!(commands.contains(&"token"), "{stdout}");
}
