//! Loading the node configuration through the public API: defaults, file,
//! environment, flags, precedence, mode and the refusal messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard::config::*;
use tempfile::NamedTempFile;

/// A config file with `contents`, kept alive by the returned handle.
fn file(contents: &str) -> NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).expect("write config");
    f
}

fn flags_for(path: &Path) -> Flags {
    Flags {
        config: Some(path.to_path_buf()),
        ..Flags::default()
    }
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Loads `contents` as a file; returns the error message.
fn file_error(contents: &str) -> (String, PathBuf) {
    let f = file(contents);
    let err = Config::load(&flags_for(f.path()), no_env()).expect_err("should be refused");
    (err.to_string(), f.path().to_path_buf())
}

fn env_error(vars: &[(&str, &str)]) -> String {
    Config::load(&Flags::default(), env(vars))
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn defaults_are_dev_mode_with_builtin_chat() {
    let config = Config::load(&Flags::default(), no_env()).expect("defaults load");
    assert_eq!(config, Config::default());
    assert_eq!(config.mode, Mode::Dev);
    assert_eq!(config.listen.to_string(), "0.0.0.0:8000");
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.workers, 0);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.broker, "memory");
    assert_eq!(config.store, "sqlite");
    assert_eq!(config.auth.hmac_secret, None);
    assert_eq!(config.auth.api_key, None);
    assert_eq!(config.client.ping_interval, Duration::from_secs(25));
    assert_eq!(config.client.pong_timeout, Duration::from_secs(10));
    assert_eq!(config.client.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.client.max_subscriptions, 128);
    assert_eq!(config.client.max_data_size, 64 * 1024);
    assert_eq!(config.client.queue_max_size, 1024 * 1024);
    assert_eq!(config.client.max_channel_length, 255);
    assert_eq!(config.namespace_default, NamespaceConfig::default());
    assert_eq!(config.namespace_default.history_size, 0);
    assert!(!config.namespace_default.client_publish);

    let chat = config.namespaces.get("chat").expect("built-in chat");
    assert_eq!(
        *chat,
        NamespaceConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(3600),
            persist: true,
            presence: true,
            join_leave: true,
            client_publish: true,
            private: false,
            exclude_publisher: false,
            idempotency_window: Duration::from_secs(300),
        }
    );
    assert_eq!(config.namespaces.len(), 1);
    // Dev mode needs no secrets.
    assert!(config.validate_production().is_ok());
}

#[test]
fn file_overrides_values() {
    let f = file(
        r#"
listen = "0.0.0.0:9000"
data_dir = "/var/lib/switchboard"
workers = 4
shutdown_timeout = "30s"
broker = "memory"
store = "sqlite"
[auth]
hmac_secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
rsa_public_key = "rsa.pem"
api_key = "key"
[client]
ping_interval = "5s"
pong_timeout = 3
max_subscriptions = 16
max_data_size = "10KB"
queue_max_size = 2048
[namespace_default]
history_size = 10
presence = true
"#,
    );
    let config = Config::load(&flags_for(f.path()), no_env()).expect("file loads");
    assert_eq!(config.mode, Mode::Production);
    assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/switchboard"));
    assert_eq!(config.workers, 4);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(
        config.auth.hmac_secret.as_deref(),
        Some("s3cret-s3cret-s3cret-s3cret-s3cret")
    );
    assert_eq!(config.auth.rsa_public_key, Some(PathBuf::from("rsa.pem")));
    assert_eq!(config.auth.ecdsa_public_key, None);
    assert_eq!(config.auth.api_key.as_deref(), Some("key"));
    assert_eq!(config.client.ping_interval, Duration::from_secs(5));
    assert_eq!(config.client.pong_timeout, Duration::from_secs(3));
    assert_eq!(config.client.max_subscriptions, 16);
    assert_eq!(config.client.max_data_size, 10_000);
    assert_eq!(config.client.queue_max_size, 2048);
    // Unset keys keep their defaults.
    assert_eq!(config.client.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.client.max_channel_length, 255);
    assert_eq!(config.namespace_default.history_size, 10);
    assert!(config.namespace_default.presence);
    assert!(!config.namespace_default.persist);
    // No namespaces configured: the built-in chat stays.
    assert!(config.namespaces.contains_key("chat"));
    assert!(config.validate_production().is_ok());
}

#[test]
fn secrets_are_not_in_debug_output() {
    let f = file("[auth]\nhmac_secret = \"topsecret-hmac\"\napi_key = \"topsecret-api\"\n");
    let config = Config::load(&flags_for(f.path()), no_env()).expect("loads");
    let debug = format!("{config:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn unknown_top_level_key_is_refused() {
    let (msg, path) = file_error("listen = \"0.0.0.0:1\"\nlisten_addr = \"x\"\n");
    assert!(msg.contains("unknown key `listen_addr`"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn unknown_auth_key_is_refused() {
    let (msg, _) = file_error("[auth]\nhmac_secret = \"x\"\nhmac_secrett = \"y\"\n");
    assert!(msg.contains("unknown key `auth.hmac_secrett`"), "{msg}");
    assert!(msg.contains("did you mean `auth.hmac_secret`"), "{msg}");
}

#[test]
fn unknown_client_key_message_matches_contract() {
    let f = file("[client]\npingg = \"5s\"\n");
    let err = Config::load(&flags_for(f.path()), no_env()).expect_err("refused");
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("unknown key `client.pingg` in {}", f.path().display())
    );
}

#[test]
fn unknown_namespace_key_is_refused() {
    let (msg, _) = file_error("[namespaces.chat]\nhistory_size = 5\nhistroy_ttl = \"1h\"\n");
    assert!(
        msg.contains("unknown key `namespaces.chat.histroy_ttl`"),
        "{msg}"
    );
    assert!(
        msg.contains("did you mean `namespaces.chat.history_ttl`"),
        "{msg}"
    );
}

#[test]
fn unknown_section_is_refused() {
    let (msg, _) = file_error("[namespace.chat]\npersist = true\n");
    assert!(msg.contains("unknown key `namespace`"), "{msg}");
}

#[test]
fn wrong_type_is_refused_naming_the_key() {
    let (msg, path) = file_error("[client]\nmax_subscriptions = \"many\"\n");
    assert!(
        msg.contains("bad value for `client.max_subscriptions`"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("expected a non-negative integer"), "{msg}");

    let (msg, _) = file_error("[namespaces.chat]\npersist = \"yes\"\n");
    assert!(
        msg.contains("bad value for `namespaces.chat.persist`"),
        "{msg}"
    );
    assert!(msg.contains("expected true or false"), "{msg}");

    let (msg, _) = file_error("auth = \"nope\"\n");
    assert!(msg.contains("bad value for `auth`"), "{msg}");

    let (msg, _) = file_error("workers = -1\n");
    assert!(msg.contains("bad value for `workers`"), "{msg}");
}

#[test]
fn bad_duration_is_refused_naming_the_key() {
    let (msg, _) = file_error("[client]\nping_interval = \"25 parsecs\"\n");
    assert!(
        msg.contains("bad value for `client.ping_interval`"),
        "{msg}"
    );
    assert!(
        msg.contains("expected a duration like 25s, 500ms, 1h"),
        "{msg}"
    );
    let (msg, _) = file_error("[client]\nping_interval = 0\n");
    assert!(
        msg.contains("bad value for `client.ping_interval`"),
        "{msg}"
    );
}

#[test]
fn bad_size_is_refused_naming_the_key() {
    let (msg, _) = file_error("[client]\nmax_data_size = \"64QB\"\n");
    assert!(
        msg.contains("bad value for `client.max_data_size`"),
        "{msg}"
    );
    assert!(msg.contains("expected a size"), "{msg}");
}

#[test]
fn bad_listen_address_is_refused_naming_the_key() {
    let (msg, _) = file_error("listen = \"localhost\"\n");
    assert!(msg.contains("bad value for `listen`"), "{msg}");
    assert!(msg.contains("127.0.0.1:8000"), "{msg}");
}

#[test]
fn unsupported_backends_are_refused_clearly() {
    let (msg, _) = file_error("broker = \"nats://:hunter2@localhost:4222\"\n");
    assert!(msg.contains("bad value for `broker`"), "{msg}");
    assert!(msg.contains("\"memory\" or a URL like redis://"), "{msg}");
    assert!(!msg.contains("hunter2"), "must not echo the URL: {msg}");

    let (msg, _) = file_error("store = \"mysql://db/switchboard\"\n");
    assert!(msg.contains("bad value for `store`"), "{msg}");
    assert!(
        msg.contains("\"sqlite\" or a URL like postgres://"),
        "{msg}"
    );
}

#[test]
fn invalid_toml_names_the_file() {
    let (msg, path) = file_error("listen = \n");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("TOML"), "{msg}");
}

#[test]
fn env_beats_file() {
    let f = file(
        "listen = \"0.0.0.0:9000\"\n[client]\nmax_subscriptions = 16\nping_interval = \"5s\"\n",
    );
    let config = Config::load(
        &flags_for(f.path()),
        env(&[
            ("SWITCHBOARD_LISTEN", "0.0.0.0:9100"),
            ("SWITCHBOARD_CLIENT_MAX_SUBSCRIPTIONS", "32"),
            ("SWITCHBOARD_NAMESPACE_DEFAULT_HISTORY_SIZE", "7"),
            ("SWITCHBOARD_NAMESPACE_DEFAULT_PRESENCE", "true"),
            ("SWITCHBOARD_AUTH_HMAC_SECRET", "from-env"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .expect("loads");
    assert_eq!(config.listen.to_string(), "0.0.0.0:9100");
    assert_eq!(config.client.max_subscriptions, 32);
    assert_eq!(config.client.ping_interval, Duration::from_secs(5));
    assert_eq!(config.namespace_default.history_size, 7);
    assert!(config.namespace_default.presence);
    assert_eq!(config.auth.hmac_secret.as_deref(), Some("from-env"));
}

#[test]
fn env_bad_value_names_the_variable() {
    let msg = env_error(&[("SWITCHBOARD_CLIENT_PING_INTERVAL", "soon")]);
    assert!(
        msg.starts_with(
            "bad value for `client.ping_interval` (SWITCHBOARD_CLIENT_PING_INTERVAL): \
             expected a duration like 25s, 500ms, 1h"
        ),
        "{msg}"
    );
    let msg = env_error(&[("SWITCHBOARD_WORKERS", "four")]);
    assert!(msg.contains("`workers` (SWITCHBOARD_WORKERS)"), "{msg}");
    let msg = env_error(&[("SWITCHBOARD_NAMESPACES_CHAT_PERSIST", "perhaps")]);
    assert!(
        msg.contains("`namespaces.chat.persist` (SWITCHBOARD_NAMESPACES_CHAT_PERSIST)"),
        "{msg}"
    );
    let msg = env_error(&[("SWITCHBOARD_LISTEN", "nowhere")]);
    assert!(msg.contains("`listen` (SWITCHBOARD_LISTEN)"), "{msg}");
}

#[test]
fn env_namespaces_match_file_names_case_insensitively() {
    let f = file("[namespaces.Chat_Room]\nhistory_size = 5\npersist = true\n");
    let config = Config::load(
        &flags_for(f.path()),
        env(&[
            ("SWITCHBOARD_NAMESPACES_CHAT_ROOM_HISTORY_SIZE", "50"),
            ("SWITCHBOARD_NAMESPACES_NEWS_FEED_CLIENT_PUBLISH", "1"),
        ]),
    )
    .expect("loads");
    let room = config.namespace(Some("Chat_Room")).expect("file namespace");
    assert_eq!(room.history_size, 50);
    assert!(room.persist);
    let news = config.namespace(Some("news_feed")).expect("env namespace");
    assert!(news.client_publish);
    // The file's namespaces replace the built-in map.
    assert_eq!(config.namespaces.len(), 2);
}

#[test]
fn env_namespace_is_added_beside_builtin_chat() {
    let config = Config::load(
        &Flags::default(),
        env(&[("SWITCHBOARD_NAMESPACES_ALERTS_PRIVATE", "true")]),
    )
    .expect("loads");
    assert_eq!(
        config.namespaces.keys().collect::<Vec<_>>(),
        ["alerts", "chat"]
    );
    assert_eq!(
        config.namespace(Some("chat")),
        Some(&NamespaceConfig::builtin_chat())
    );
    let alerts = config.namespace(Some("alerts")).expect("alerts");
    assert!(alerts.private);
    assert_eq!(
        alerts.history_size, 0,
        "unset keys use the built-in defaults"
    );
}

#[test]
fn flag_beats_env() {
    let config = Config::load(
        &Flags {
            listen: Some("127.0.0.1:7000".into()),
            data_dir: Some("/tmp/flag-data".into()),
            ..Flags::default()
        },
        env(&[
            ("SWITCHBOARD_LISTEN", "0.0.0.0:9100"),
            ("SWITCHBOARD_DATA_DIR", "/tmp/env-data"),
        ]),
    )
    .expect("loads");
    assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(config.data_dir, PathBuf::from("/tmp/flag-data"));
}

#[test]
fn bad_listen_flag_names_the_flag() {
    let err = Config::load(
        &Flags {
            listen: Some("8000".into()),
            ..Flags::default()
        },
        no_env(),
    )
    .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("bad value for `listen` (--listen)"), "{msg}");
}

#[test]
fn config_env_var_selects_the_file_and_flag_wins() {
    let from_env = file("workers = 2\n");
    let from_flag = file("workers = 3\n");
    let vars = env(&[("SWITCHBOARD_CONFIG", &from_env.path().display().to_string())]);
    let config = Config::load(&Flags::default(), vars.clone()).expect("loads");
    assert_eq!(config.workers, 2);
    assert_eq!(config.mode, Mode::Production);
    let config = Config::load(&flags_for(from_flag.path()), vars).expect("loads");
    assert_eq!(config.workers, 3);
}

#[test]
fn any_switchboard_variable_means_production() {
    let config =
        Config::load(&Flags::default(), env(&[("SWITCHBOARD_WORKERS", "2")])).expect("loads");
    assert_eq!(config.mode, Mode::Production);
    assert_eq!(config.workers, 2);
}

#[test]
fn flags_alone_stay_in_dev_mode() {
    let config = Config::load(
        &Flags {
            listen: Some("127.0.0.1:7000".into()),
            ..Flags::default()
        },
        env(&[("HOME", "/root")]),
    )
    .expect("loads");
    assert_eq!(config.mode, Mode::Dev);
}

#[test]
fn production_requires_secrets() {
    let config =
        Config::load(&Flags::default(), env(&[("SWITCHBOARD_WORKERS", "2")])).expect("loads");
    let err = config.validate_production().expect_err("no hmac secret");
    assert!(
        matches!(err, ConfigError::MissingInProduction { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("auth.hmac_secret"), "{msg}");
    assert!(msg.contains("SWITCHBOARD_AUTH_HMAC_SECRET"), "{msg}");

    let config = Config::load(
        &Flags::default(),
        env(&[(
            "SWITCHBOARD_AUTH_HMAC_SECRET",
            "0123456789abcdef0123456789abcdef",
        )]),
    )
    .expect("loads");
    let msg = config
        .validate_production()
        .expect_err("no api key")
        .to_string();
    assert!(msg.contains("auth.api_key"), "{msg}");
    assert!(msg.contains("SWITCHBOARD_AUTH_API_KEY"), "{msg}");

    let config = Config::load(
        &Flags::default(),
        env(&[
            (
                "SWITCHBOARD_AUTH_ECDSA_PUBLIC_KEY",
                "/etc/switchboard/ec.pem",
            ),
            ("SWITCHBOARD_AUTH_API_KEY", "api"),
        ]),
    )
    .expect("loads");
    assert!(
        config.validate_production().is_ok(),
        "a public key is enough"
    );
}

#[test]
fn empty_secret_is_refused() {
    let msg = env_error(&[("SWITCHBOARD_AUTH_HMAC_SECRET", "")]);
    assert!(
        msg.contains("`auth.hmac_secret` (SWITCHBOARD_AUTH_HMAC_SECRET)"),
        "{msg}"
    );
}

#[test]
fn switchboard_log_is_ignored() {
    let config = Config::load(
        &Flags::default(),
        env(&[("SWITCHBOARD_LOG", "debug,hyper=info")]),
    )
    .expect("loads");
    assert_eq!(config.mode, Mode::Dev);
    assert_eq!(config, Config::default());
}

#[test]
fn unknown_switchboard_variable_is_refused_naming_it() {
    let msg = env_error(&[("SWITCHBOARD_FOO", "1")]);
    assert!(msg.contains("SWITCHBOARD_FOO"), "{msg}");
    let msg = env_error(&[("SWITCHBOARD_LISTN", "0.0.0.0:1")]);
    assert!(msg.contains("`SWITCHBOARD_LISTN`"), "{msg}");
    assert!(msg.contains("did you mean `SWITCHBOARD_LISTEN`"), "{msg}");
    let msg = env_error(&[("SWITCHBOARD_NAMESPACES_CHAT_COLOUR", "red")]);
    assert!(msg.contains("SWITCHBOARD_NAMESPACES_CHAT_COLOUR"), "{msg}");
}

#[test]
fn namespace_name_with_bad_characters_is_refused() {
    let (msg, _) = file_error("[namespaces.\"chat:room\"]\npersist = true\n");
    assert!(msg.contains("bad namespace name `chat:room`"), "{msg}");
    let (msg, _) = file_error(&format!("[namespaces.{}]\n", "n".repeat(65)));
    assert!(msg.contains("bad namespace name"), "{msg}");
    let msg = env_error(&[("SWITCHBOARD_NAMESPACES_A.B_PERSIST", "true")]);
    assert!(msg.contains("bad namespace name `a.b`"), "{msg}");
    assert!(msg.contains("SWITCHBOARD_NAMESPACES_A.B_PERSIST"), "{msg}");
}

#[test]
fn namespace_lookup() {
    let config = Config::default();
    assert_eq!(config.namespace(None), Some(&config.namespace_default));
    assert_eq!(
        config.namespace(Some("chat")),
        Some(&NamespaceConfig::builtin_chat())
    );
    assert_eq!(config.namespace(Some("nope")), None);
}

#[test]
fn file_namespaces_replace_builtin_chat() {
    let f = file(
        "[namespace_default]\nhistory_size = 3\n[namespaces.news]\nhistory_size = 10\nhistory_ttl = 60\n",
    );
    let config = Config::load(&flags_for(f.path()), no_env()).expect("loads");
    assert_eq!(config.namespaces.keys().collect::<Vec<_>>(), ["news"]);
    assert_eq!(config.namespace(Some("chat")), None);
    let news = config.namespace(Some("news")).expect("news");
    assert_eq!(news.history_size, 10);
    assert_eq!(news.history_ttl, Duration::from_secs(60));
    // Unset keys come from the built-in defaults, not from [namespace_default].
    assert_eq!(
        *news,
        NamespaceConfig {
            history_size: 10,
            history_ttl: Duration::from_secs(60),
            ..NamespaceConfig::default()
        }
    );
}

#[test]
fn empty_namespaces_table_means_no_namespaces() {
    let f = file("[namespaces]\n");
    let config = Config::load(&flags_for(f.path()), no_env()).expect("loads");
    assert!(config.namespaces.is_empty());
}

#[test]
fn missing_config_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("does-not-exist.toml");
    let err = Config::load(&flags_for(&path), no_env()).expect_err("refused");
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.starts_with("cannot read config file"), "{msg}");
}

#[test]
fn parse_helpers_are_public() {
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_size("1MiB"), Ok(1 << 20));
}

#[test]
fn env_variable_patches_one_key_of_builtin_chat() {
    let config = Config::load(
        &Flags::default(),
        env(&[("SWITCHBOARD_NAMESPACES_CHAT_HISTORY_SIZE", "500")]),
    )
    .expect("loads");
    let chat = config.namespace(Some("chat")).expect("chat");
    assert_eq!(chat.history_size, 500);
    let builtin = NamespaceConfig::builtin_chat();
    assert_eq!(
        NamespaceConfig {
            history_size: builtin.history_size,
            ..*chat
        },
        builtin,
        "every other key keeps its built-in value"
    );
}

#[test]
fn allowed_origins_come_from_the_file_or_a_comma_separated_variable() {
    let f = file("allowed_origins = [\"https://Shop.example/\", \"*\"]\n");
    let config = Config::load(&flags_for(f.path()), no_env()).expect("loads");
    assert_eq!(config.allowed_origins, ["https://shop.example", "*"]);
    let config = Config::load(
        &Flags::default(),
        env(&[(
            "SWITCHBOARD_ALLOWED_ORIGINS",
            "https://a.example, http://localhost:3000",
        )]),
    )
    .expect("loads");
    assert_eq!(
        config.allowed_origins,
        ["https://a.example", "http://localhost:3000"]
    );
}

#[test]
fn a_malformed_origin_is_refused_naming_the_key() {
    let (err, _) = file_error("allowed_origins = [\"shop.example/path\"]\n");
    assert!(err.contains("allowed_origins"), "{err}");
}

#[test]
fn redis_and_postgres_urls_are_accepted_from_file_env_and_flags() {
    let f = file("broker = \"redis://127.0.0.1:6379\"\nstore = \"postgres://u@db/sb\"\n");
    let c = Config::load(&flags_for(f.path()), no_env()).unwrap();
    assert_eq!(c.broker, "redis://127.0.0.1:6379");
    assert_eq!(c.store, "postgres://u@db/sb");

    let c = Config::load(
        &Flags::default(),
        env(&[
            ("SWITCHBOARD_BROKER", "redis://r:6379"),
            ("SWITCHBOARD_STORE", "postgresql://db/x"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (c.broker.as_str(), c.store.as_str()),
        ("redis://r:6379", "postgresql://db/x")
    );

    let c = Config::load(
        &Flags {
            broker: Some("redis://flag:6379".into()),
            store: Some("postgres://flag/db".into()),
            ..Flags::default()
        },
        env(&[("SWITCHBOARD_BROKER", "redis://env:6379")]),
    )
    .unwrap();
    assert_eq!(
        (c.broker.as_str(), c.store.as_str()),
        ("redis://flag:6379", "postgres://flag/db")
    );
}

#[test]
fn a_bad_backend_flag_names_the_flag_without_echoing_it() {
    let err = Config::load(
        &Flags {
            broker: Some("amqp://guest:s3cret@h".into()),
            ..Flags::default()
        },
        no_env(),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("--broker"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
