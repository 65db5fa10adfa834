//! The `ocsuite` binary: parse the command line, then call the library.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ocsuite::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ocsuite",
    version,
    about = "Self-hostable multi-tenant online C-suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first). The default.
    Serve,
    /// Run job workers only (no HTTP), e.g. beside `serve` with OCSUITE_WORKERS=0, or as
    /// several processes against one PostgreSQL.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Encryption key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Receipt logs: check an export offline, rotate the signing key.
    Receipts {
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Take a consistent backup while the server runs: a new folder under OUT with the
    /// database copy and a manifest (rows per table, SHA-256, master-key check).
    Backup {
        /// The folder to create the backup in.
        #[arg(long, default_value = "backups")]
        out: std::path::PathBuf,
        /// Also save the master key in the backup (mode 0600). Without it, keep the key
        /// elsewhere: the backup's secrets cannot be read without it.
        #[arg(long)]
        with_master_key: bool,
    },
    /// Restore a backup folder into the configured database (stop the server first),
    /// then check every table's rows and decrypt every stored secret.
    Restore {
        /// The backup folder (the one holding manifest.json).
        dir: std::path::PathBuf,
        /// Replace an SQLite database that already holds data (it is kept beside it).
        #[arg(long)]
        force: bool,
    },
    /// Measure the configured model on twenty fixed scenarios (tools, grounding,
    /// action items, refusals) on a throwaway database, and print the table.
    Eval {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a platform super-admin (or promote an existing user).
    CreateSuperAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (required: never pass it as an argument).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Check an export archive (.zip) or a receipt bundle (receipts.json) offline: the
    /// signatures, every receipt's inclusion, consistency between checkpoints, the
    /// archive's signed manifest and its audit log. Exits 0 when it verifies, 1 when not.
    Verify {
        file: std::path::PathBuf,
        /// A verifier key to trust (from /.well-known/ocsuite-log-keys); repeatable.
        /// Without one, the keys inside the file are used and the report says so.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// Retire the key that signs checkpoints and make a new one (both stay published).
    RotateKey,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a key version and re-encrypt every stored secret under it, online.
    Rotate,
}

/// Logs to stderr, and spans to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set (see `ocsuite::telemetry::traces`); the exporter is returned to be flushed at exit.
fn init_logging(
    format: LogFormat,
    default: &str,
) -> Result<Option<ocsuite::telemetry::traces::Exporter>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // The filter (RUST_LOG) chooses what is logged; traces choose their own spans.
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
    };
    let (otel, exporter) = match ocsuite::telemetry::traces::layer()? {
        Some((layer, exporter)) => (Some(layer), Some(exporter)),
        None => (None, None),
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(exporter)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Checking a file needs no configuration, database or network.
    if let Some(Command::Receipts {
        command: ReceiptsCommand::Verify { file, keys },
    }) = &cli.command
    {
        let out = ocsuite::receipts::verify::verify_file(file, keys);
        for l in &out.lines {
            println!("{l}");
        }
        return if out.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let config = match Config::load().and_then(|c| ocsuite::check_services(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // The evaluation prints a table; the server it starts only speaks up about problems.
    let quiet = matches!(cli.command, Some(Command::Eval { .. }));
    let traces = match init_logging(config.log_format, if quiet { "warn" } else { "info" }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Worker => {
            tracing::info!(workers = config.workers, "ocsuite worker starting");
            ocsuite::work(config, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => ocsuite::store::migrate(&config)
            .await
            .map_err(|e| e.to_string()),
        Command::Admin {
            command: AdminCommand::CreateSuperAdmin { email, name, .. },
        } => create_super_admin(config, email, name).await,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => rotate(config).await,
        Command::Eval { json } => eval(config, json).await,
        Command::Backup {
            out,
            with_master_key,
        } => backup(config, out, with_master_key).await,
        Command::Restore { dir, force } => restore(config, dir, force).await,
        Command::Receipts {
            command: ReceiptsCommand::RotateKey,
        } => ocsuite::receipts::keys::admin_rotate(config)
            .await
            .map(|id| println!("log key {id} now signs checkpoints"))
            .map_err(|e| e.to_string()),
        Command::Receipts {
            command: ReceiptsCommand::Verify { .. },
        } => Ok(()),
    };
    if let Some(t) = traces {
        // Blocks while the last batch is sent; off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ocsuite failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let addr = config.addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (OCSUITE_ADDR): {e}"))?;
    tracing::info!(%addr, "ocsuite listening");
    ocsuite::run(config, listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining in-flight requests");
}

async fn create_super_admin(
    config: Config,
    email: String,
    name: Option<String>,
) -> Result<(), String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| format!("reading password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    let user = ocsuite::auth::admin::create_super_admin(config, &email, name.as_deref(), password)
        .await
        .map_err(|e| e.to_string())?;
    println!("super-admin {} ({})", user.email, user.id);
    Ok(())
}

async fn rotate(config: Config) -> Result<(), String> {
    let report = ocsuite::crypto::admin_rotate(config)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "key version {} is current; re-encrypted {} tenant secrets and {} user secrets",
        report.new_version, report.tenant_secrets, report.user_secrets
    );
    Ok(())
}

/// `ocsuite backup`: prints where the backup went and what it holds.
async fn backup(config: Config, out: std::path::PathBuf, with_key: bool) -> Result<(), String> {
    let t = ocsuite::backup::take(&config, &out, with_key)
        .await
        .map_err(|e| e.to_string())?;
    let rows: i64 = t.manifest.tables.values().sum();
    println!(
        "backup {} ({} bytes, {} tables, {rows} rows, snapshot at {}) in {:.1} s",
        t.dir.display(),
        t.manifest.bytes,
        t.manifest.tables.len(),
        t.manifest.snapshot_at.to_rfc3339(),
        t.seconds
    );
    if !with_key {
        println!(
            "the master key is not in the backup: keep OCSUITE_MASTER_KEY (or data/master.key) safe elsewhere"
        );
    }
    Ok(())
}

/// `ocsuite restore`: prints what was restored and checked.
async fn restore(config: Config, dir: std::path::PathBuf, force: bool) -> Result<(), String> {
    let r = ocsuite::backup::restore(&config, &dir, force)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "restored {} tables, {} rows; {} stored secrets decrypt; ready in {:.1} s",
        r.tables, r.rows, r.secrets, r.seconds
    );
    Ok(())
}

/// `ocsuite eval`: runs the scenarios and prints the report.
async fn eval(config: Config, json: bool) -> Result<(), String> {
    let report = ocsuite::eval::run(config).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", report.table());
    }
    Ok(())
}
