//! The `switchboard` binary: `serve` (default), `token`, `bench`.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use switchboard::auth::{mint_hs256, ConnectionClaims, SubscriptionClaims};
use switchboard::config::{parse_duration, Config, Flags, Mode};
use switchboard::stream::{now_millis, RawJson};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Self-hosted real-time messaging server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default command).
    Serve(ConfigArgs),
    /// Print a token signed with the node's HMAC secret.
    Token(TokenArgs),
    /// Measure memory per connection, fan-out throughput and latency.
    Bench(bench::BenchArgs),
}

#[derive(Args, Clone, Default)]
struct ConfigArgs {
    /// TOML configuration file (also SWITCHBOARD_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8000.
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the SQLite database and dev-mode secrets.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Broker between nodes: memory, or redis://host:port (also SWITCHBOARD_BROKER).
    #[arg(long)]
    broker: Option<String>,
    /// Durable history store: sqlite, or postgres://… (also SWITCHBOARD_STORE).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// Lifetime, e.g. 1h, 30m, 7d; 0 for a token that never expires.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// Public connection info (JSON), shown in presence and join/leave.
    #[arg(long)]
    info: Option<String>,
    /// Comma-separated channel patterns the user may subscribe to (`orders:*`).
    #[arg(long)]
    channels: Option<String>,
    /// Mint a subscription token for this one channel instead.
    #[arg(long)]
    channel: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => token(args),
        Some(Command::Bench(args)) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Loads the layered configuration and fills dev-mode secrets.
fn load_config(args: &ConfigArgs, announce: bool) -> anyhow::Result<Config> {
    let flags = Flags {
        config: args.config.clone(),
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        broker: args.broker.clone(),
        store: args.store.clone(),
    };
    let mut config = Config::load(&flags, std::env::vars())?;
    config.validate_production()?;
    if config.mode == Mode::Dev {
        let (secrets, created) = switchboard::devmode::load_or_create(&config.data_dir)?;
        config
            .auth
            .hmac_secret
            .get_or_insert(secrets.hmac_secret.clone());
        config.auth.api_key.get_or_insert(secrets.api_key.clone());
        if announce {
            let path = switchboard::devmode::secrets_path(&config.data_dir);
            tracing::warn!("DEV MODE: no configuration given; using generated secrets from {}. Never expose a dev-mode node: configure auth.hmac_secret and auth.api_key (or SWITCHBOARD_AUTH_*) for production.", path.display());
            if created {
                eprintln!("\n  Dev-mode secrets created in {}:\n    HMAC secret: {}\n    API key:     {}\n  Mint a token: switchboard token --user 42\n", path.display(), secrets.hmac_secret, secrets.api_key);
            }
        }
    }
    Ok(config)
}

fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    init_logging();
    let config = load_config(&args, true)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        runtime.worker_threads(config.workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives while the node starts must
        // still mean a graceful stop.
        let signals = Signals::install()?;
        let running = switchboard::server::start(config).await?;
        tracing::info!(
            "switchboard {} listening on {} (WebSocket: ws://{}/connection/websocket)",
            env!("CARGO_PKG_VERSION"),
            running.local_addr(),
            running.local_addr()
        );
        signals.wait().await?;
        tracing::info!("shutting down: telling clients to reconnect and flushing the store");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGTERM and SIGINT, listened for from before the node starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        Ok(())
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config, false)?;
    let Some(secret) = config.auth.hmac_secret.as_deref() else {
        bail!("`switchboard token` signs with HS256: configure auth.hmac_secret");
    };
    let ttl = parse_duration(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let exp = (!ttl.is_zero()).then(|| now_millis() / 1000 + ttl.as_secs());
    let token = match args.channel {
        Some(channel) => mint_hs256(
            secret,
            &SubscriptionClaims {
                sub: args.user,
                channel,
                exp,
            },
        )?,
        None => {
            let info = match args.info {
                Some(text) => Some(RawJson::from_string(text).context("--info must be JSON")?),
                None => None,
            };
            let channels = args.channels.map(|c| {
                c.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            });
            mint_hs256(
                secret,
                &ConnectionClaims {
                    sub: args.user,
                    exp,
                    info,
                    channels,
                    channel: None,
                },
            )?
        }
    };
    println!("{token}");
    Ok(())
}
