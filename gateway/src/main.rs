//! `osmium-server`: serves a data directory to Osmium clients over WebSocket, and manages
//! its sign-in tokens.

use clap::{Parser, Subcommand, ValueEnum};
use osmium_engine::{Durability, EngineConfig, LogConfig};
use osmium_gateway::config::{LISTEN_DEFAULT, METRICS_LISTEN_DEFAULT};
use osmium_gateway::{Advertise, Gateway, GatewayError, GatewayLimits, ServerConfig, tokens};
use osmium_proto::ids::UserId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Osmium WebSocket gateway over an osmium-state data directory.
///
/// Example: `osmium-server token create --user 1000 --name ann` (prints the token once),
/// then `osmium-server --listen 127.0.0.1:7070` and connect a client to ws://127.0.0.1:7070/.
#[derive(Debug, Parser)]
#[command(name = "osmium-server", version)]
struct Cli {
    /// The data directory (the engine's database and the tokens file).
    #[arg(long, env = "OSMIUM_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "OSMIUM_LOG", default_value = "info", global = true)]
    log_level: tracing::Level,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// WebSocket address.
    #[arg(long, env = "OSMIUM_LISTEN", default_value = LISTEN_DEFAULT)]
    listen: SocketAddr,
    /// Address of the Prometheus `GET /metrics` endpoint.
    #[arg(long, env = "OSMIUM_METRICS_LISTEN", default_value = METRICS_LISTEN_DEFAULT)]
    metrics_listen: SocketAddr,
    /// When a write is acknowledged: `sync` (fsynced, survives power loss) or `buffered`.
    #[arg(long, env = "OSMIUM_DURABILITY", value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    /// Largest frame served, in bytes (larger frames are answered with 413).
    #[arg(long, env = "OSMIUM_FRAME_BYTES_MAX", default_value_t = GatewayLimits::default().frame_bytes_max)]
    frame_bytes_max: usize,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, env = "OSMIUM_CONNECTIONS_MAX", default_value_t = GatewayLimits::default().connections_max)]
    connections_max: usize,
    /// Server messages queued per connection before a slow client is disconnected.
    #[arg(long, env = "OSMIUM_OUTBOUND_QUEUE_MAX", default_value_t = GatewayLimits::default().outbound_queue_max)]
    outbound_queue_max: usize,
    /// Bytes of server messages queued per connection before a slow client is disconnected.
    #[arg(long, env = "OSMIUM_OUTBOUND_QUEUE_BYTES_MAX", default_value_t = GatewayLimits::default().outbound_queue_bytes_max)]
    outbound_queue_bytes_max: usize,
    /// Calls of one connection running at once.
    #[arg(long, env = "OSMIUM_CALLS_IN_FLIGHT_MAX", default_value_t = GatewayLimits::default().calls_in_flight_max)]
    calls_in_flight_max: usize,
    /// `SetTyping` calls per connection per second.
    #[arg(long, env = "OSMIUM_TYPING_PER_SECOND_MAX", default_value_t = GatewayLimits::default().typing_per_second_max)]
    typing_per_second_max: u32,
    /// How long shutdown waits for calls in flight, in milliseconds.
    #[arg(long, env = "OSMIUM_SHUTDOWN_GRACE_MS", default_value_t = GatewayLimits::default().shutdown_grace_ms)]
    shutdown_grace_ms: u64,
    /// Close a connection from which nothing (frame, pong, heartbeat) arrived for this
    /// long, in milliseconds (close code 1001, reason "idle timeout"). Keep it well above
    /// the clients' heartbeat (30 s for the official client) and above --ping-interval-ms.
    #[arg(long, env = "OSMIUM_IDLE_TIMEOUT_MS", default_value_t = GatewayLimits::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
    /// Send a WebSocket ping on every connection this often, in milliseconds (a live
    /// client answers with a pong, which keeps the connection from being idle).
    #[arg(long, env = "OSMIUM_PING_INTERVAL_MS", default_value_t = GatewayLimits::default().ping_interval_ms)]
    ping_interval_ms: u64,
    /// Failed sign-ins (unknown or revoked token) allowed on one connection; after that
    /// every Authorize on it gets 429.
    #[arg(
        long,
        env = "OSMIUM_SIGN_IN_FAILURES_PER_CONNECTION_MAX",
        default_value_t = GatewayLimits::default().sign_in_failures_per_connection_max
    )]
    sign_in_failures_per_connection_max: u32,
    /// Failed sign-ins per minute per remote address (IPv4 address or IPv6 /64); over it
    /// every Authorize from there gets 429. Behind a reverse proxy every client has the
    /// proxy's address: raise this accordingly.
    #[arg(
        long,
        env = "OSMIUM_SIGN_IN_FAILURES_PER_ADDRESS_PER_MINUTE_MAX",
        default_value_t = GatewayLimits::default().sign_in_failures_per_address_per_minute_max
    )]
    sign_in_failures_per_address_per_minute_max: u32,
    /// SendMessage calls per second per user, across all of the user's connections; more
    /// get 429.
    #[arg(
        long,
        env = "OSMIUM_SEND_MESSAGE_PER_USER_PER_SECOND_MAX",
        default_value_t = GatewayLimits::default().send_message_per_user_per_second_max
    )]
    send_message_per_user_per_second_max: u32,
    /// Host name (or IP address) clients are told to connect to, in `Initialized`'s
    /// entrypoint [default: the IP address of --listen].
    #[arg(long, env = "OSMIUM_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Port clients are told to connect to, in `Initialized`'s entrypoint [default: the
    /// port of --listen].
    #[arg(long, env = "OSMIUM_ADVERTISE_PORT")]
    advertise_port: Option<u16>,
    /// Region number of this server, in `Initialized`'s entrypoint.
    #[arg(long, env = "OSMIUM_REGION", default_value_t = 0)]
    region: u32,
    /// The event log: `embedded` (the RocksDB log in --data-dir, the default), or
    /// `nats://host:port,nats://host:port,...`: the NATS JetStream log shared by every
    /// node, this node being a full replica folding it into --data-dir (issue #15).
    #[arg(long = "log", env = "OSMIUM_LOG_URL", default_value = "embedded")]
    event_log: String,
    /// This node's id (0..=1023): the worker of its snowflake ids. Every node on one
    /// replicated log needs its own.
    #[arg(long, env = "OSMIUM_NODE_ID", default_value_t = 0)]
    node_id: u16,
}

/// The replicated log of `--log`, or `None` for the embedded one.
fn replica_config(event_log: &str) -> Result<Option<osmium_engine::ReplicaConfig>, GatewayError> {
    if event_log == "embedded" {
        return Ok(None);
    }
    let servers: Vec<String> = event_log.split(',').map(str::trim).filter(|server| !server.is_empty()).map(str::to_owned).collect();
    if servers.is_empty() || servers.iter().any(|server| !server.starts_with("nats://")) {
        return Err(GatewayError::InvalidArgument {
            field: "--log",
            reason: format!("{event_log:?}: use `embedded` or nats://host:port[,nats://host:port...]"),
        });
    }
    Ok(Some(osmium_engine::ReplicaConfig::with_servers(servers)))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Sync,
    Buffered,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Serve,
    /// Sign-in tokens (work while the server runs; revocation takes effect within a second).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a token for a user and prints it (only once: only its hash is stored).
    ///
    /// Example: `osmium-server token create --user 1000 --name ann`
    Create {
        /// The user id the token signs in as.
        #[arg(long)]
        user: u64,
        /// The user's display name.
        #[arg(long)]
        name: String,
    },
    /// Revokes every token of a user (only those with `--name` when given).
    Revoke {
        /// The user id.
        #[arg(long)]
        user: u64,
        /// Only the tokens with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists the stored tokens (user, name, creation time; never the tokens).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), GatewayError> {
    match cli.command {
        None | Some(Command::Serve) => serve(cli.data_dir, cli.serve).await,
        Some(Command::Token(TokenCommand::Create { user, name })) => {
            let token = tokens::create_token(&cli.data_dir, UserId(user), &name).await?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Token(TokenCommand::Revoke { user, name })) => {
            let revoked = tokens::revoke_tokens(&cli.data_dir, UserId(user), name.as_deref())?;
            println!("revoked {revoked} token(s)");
            Ok(())
        }
        Some(Command::Token(TokenCommand::List)) => {
            for entry in tokens::list_tokens(&cli.data_dir)? {
                println!("user {} name {:?} created_at_ms {}", entry.user_id, entry.name, entry.created_at_ms);
            }
            Ok(())
        }
    }
}

async fn serve(data_dir: PathBuf, args: ServeArgs) -> Result<(), GatewayError> {
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let limits = GatewayLimits {
        frame_bytes_max: args.frame_bytes_max,
        frame_bytes_close_max: args.frame_bytes_max.saturating_mul(2),
        connections_max: args.connections_max,
        outbound_queue_max: args.outbound_queue_max,
        outbound_queue_bytes_max: args.outbound_queue_bytes_max,
        calls_in_flight_max: args.calls_in_flight_max,
        typing_per_second_max: args.typing_per_second_max,
        shutdown_grace_ms: args.shutdown_grace_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        ping_interval_ms: args.ping_interval_ms,
        sign_in_failures_per_connection_max: args.sign_in_failures_per_connection_max,
        sign_in_failures_per_address_per_minute_max: args.sign_in_failures_per_address_per_minute_max,
        send_message_per_user_per_second_max: args.send_message_per_user_per_second_max,
        ..GatewayLimits::default()
    };
    if args.node_id > osmium_engine::clock::SNOWFLAKE_WORKER_MAX {
        return Err(GatewayError::InvalidArgument {
            field: "--node-id",
            reason: format!("{}: use 0 to {}", args.node_id, osmium_engine::clock::SNOWFLAKE_WORKER_MAX),
        });
    }
    let replica = replica_config(&args.event_log)?;
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
        data_dir,
        engine: EngineConfig {
            log: LogConfig { durability, snowflake_worker: args.node_id, ..LogConfig::default() },
            replica,
            ..EngineConfig::default()
        },
        limits,
        advertise: Advertise { host: args.advertise_host, port: args.advertise_port, region: args.region },
    };
    let gateway = Gateway::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: finishing calls in flight");
    gateway.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
