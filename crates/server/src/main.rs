//! `augur`: runs the server (`augur serve`), checks configuration (`augur config check`) and
//! talks to a server (`augur predict`, `augur get`, `augur workflow apply|run`, `augur run get`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use augur_server::cli::{self, Client};
use augur_server::migrate;

/// mimalloc: a lifecycle allocates and frees many small records across threads, and glibc's
/// allocator took about a sixth of the server's time under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use augur_server::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "augur",
    version,
    about = "Self-hosted AI prediction lifecycle service"
)]
struct Args {
    /// A TOML configuration file (also AUGUR_CONFIG); AUGUR_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// A named profile of the configuration file, `[profiles.NAME]`, laid over its base
    /// settings (also AUGUR_PROFILE).
    #[arg(long, global = true)]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server: API, workers and retention, until SIGTERM or Ctrl-C.
    Serve,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Creates a prediction, e.g. `augur predict augur/demo-image -i prompt="a cat" --wait`.
    Predict {
        /// The model, owner/name.
        model: String,
        /// An input, key=value (JSON values are parsed; @path reads a file).
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Follow the prediction to the end with a progress bar (Ctrl-C cancels it), print
        /// its output and save its files.
        #[arg(long)]
        wait: bool,
        /// Where --wait saves file outputs (created if missing).
        #[arg(short, long, default_value = "augur-outputs")]
        output_dir: PathBuf,
        /// Do not save file outputs, only print their URLs.
        #[arg(long, conflicts_with = "output_dir")]
        no_save: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Copies everything from one store to another (with the nodes stopped), files included,
    /// then verifies the copy; an interrupted run resumes when started again.
    Migrate {
        /// The source store's URL.
        #[arg(long)]
        from: String,
        /// The target store's URL.
        #[arg(long)]
        to: String,
        /// The source's files (outputs and uploads), as AUGUR_FILES_DIR: a directory,
        /// file:///dir or s3://bucket/prefix (default: an embedded source's files directory).
        #[arg(long)]
        from_files: Option<String>,
        /// Where the files go, in the same forms (default: an embedded target's files
        /// directory); the same location as --from-files is only checked, not copied.
        #[arg(long)]
        to_files: Option<String>,
        /// Records per page.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Where to keep the progress of an interrupted copy (default: a file in the current
        /// directory named after the two URLs).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Only compare the two stores.
        #[arg(long)]
        verify_only: bool,
    },
    /// Accounts (with the admin token): `augur accounts create alice`.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Credits (with the admin token): `augur credits grant alice 100`.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cog model servers.
    Cog {
        #[command(subcommand)]
        command: CogCommand,
    },
    /// Prints a prediction.
    Get {
        /// The prediction id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Workflows: `augur workflow apply variants.toml`, `augur workflow run acme/variants -i
    /// prompt="a cat" --wait`.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Workflow runs: `augur run get ID`.
    Run {
        #[command(subcommand)]
        command: RunCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Creates or updates a workflow from its blueprint (JSON, or TOML when the file name ends
    /// in .toml); prints its name and version.
    Apply {
        /// The blueprint file.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Starts a run of a workflow; with --wait follows it with a line per node and prints its
    /// output (the exit code is non-zero unless it succeeded).
    Run {
        /// The workflow, owner/name.
        workflow: String,
        /// An input, key=value (JSON values are parsed; @path reads a file).
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Follow the run to the end and print its output.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Prints a workflow run.
    Get {
        /// The run id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Creates an account (it gets the sign-up grant).
    Create {
        /// The username: lowercase letters, digits, '-' and '_'.
        username: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists accounts, newest first.
    List,
    /// Issues an API token for an account; it is printed once and never shown again.
    Token {
        /// The username.
        username: String,
        /// What the token is for.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Grants credits (a negative amount is an adjustment that takes them away).
    Grant {
        /// The username.
        username: String,
        /// Credits to add (or, negative, to take).
        #[arg(allow_negative_numbers = true)]
        amount: i64,
        /// A note kept on the ledger entry.
        #[arg(long)]
        memo: Option<String>,
    },
    /// Shows an account's balance, reserved and available credits.
    Show {
        /// The username.
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum CogCommand {
    /// Prints the `--upload-url` to start a Cog model's server (coglet) with: it carries a
    /// token only that model's server is given, derived from the admin token, so nobody else
    /// can upload files into its predictions.
    UploadUrl {
        /// The model, owner/name, as in its `[[models]]` entry.
        model: String,
        /// Where the model server reaches Augur (default: `callback_url`, else the public URL,
        /// of the configuration).
        #[arg(long)]
        callback_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the resolved configuration with secrets redacted, or why it is invalid.
    Check,
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The server's URL.
    #[arg(long, env = "AUGUR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API token (default: AUGUR_TOKEN, AUGUR_ADMIN_TOKEN, REPLICATE_API_TOKEN, or the
    /// admin-token file of the local embedded store).
    #[arg(long, env = "AUGUR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            // A message, not a crash: no backtrace (whatever RUST_BACKTRACE says), each
            // distinct cause once, secrets masked.
            eprintln!("error: {}", cli::error_message(&error));
            std::process::exit(1);
        }
    }
}

/// Where the configuration comes from.
struct ConfigArgs {
    config: Option<PathBuf>,
    profile: Option<String>,
}

async fn run(args: Args) -> Result<i32> {
    let Args {
        config,
        profile,
        command,
    } = args;
    let args = ConfigArgs { config, profile };
    match command {
        Command::Serve => {
            let config = Config::load(args.config.as_deref(), args.profile.as_deref())?;
            init_tracing(config.log_format);
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("cannot install the metrics recorder")?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            augur_server::serve(config, listener, Some(metrics), shutdown_signal()).await?;
            Ok(0)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = Config::load(args.config.as_deref(), args.profile.as_deref())?;
            print!("{}", config.to_redacted_toml()?);
            Ok(0)
        }
        Command::Predict {
            model,
            inputs,
            wait,
            output_dir,
            no_save,
            server,
        } => {
            let client = client(&server, &args)?;
            let save = if no_save {
                cli::SaveOutputs::No
            } else {
                cli::SaveOutputs::Into(output_dir)
            };
            cli::predict(&client, &model, &inputs, wait, &save).await
        }
        Command::Migrate {
            from,
            to,
            from_files,
            to_files,
            batch,
            checkpoint,
            verify_only,
        } => {
            init_tracing(LogFormat::Text);
            let checkpoint =
                checkpoint.unwrap_or_else(|| migrate::Options::default_checkpoint(&from, &to));
            let options = migrate::Options {
                from,
                to,
                from_files,
                to_files,
                batch,
                checkpoint,
                verify_only,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let summary = migrate::run(&options).await?;
            println!("verified: {summary}");
            Ok(0)
        }
        Command::Accounts { command, server } => {
            let client = client(&server, &args)?;
            match command {
                AccountsCommand::Create { username, name } => {
                    let account = cli::create_account(&client, &username, name.as_deref()).await?;
                    println!("{}", serde_json::to_string_pretty(&account)?);
                }
                AccountsCommand::List => {
                    for account in cli::list_accounts(&client).await? {
                        println!(
                            "{}\t{}\t{}",
                            account["username"].as_str().unwrap_or(""),
                            account["name"].as_str().unwrap_or(""),
                            account["created_at"].as_str().unwrap_or("")
                        );
                    }
                }
                AccountsCommand::Token { username, name } => {
                    let token = cli::create_token(&client, &username, name.as_deref()).await?;
                    println!("{}", token["token"].as_str().unwrap_or_default());
                }
            }
            Ok(0)
        }
        Command::Credits { command, server } => {
            let client = client(&server, &args)?;
            let totals = match command {
                CreditsCommand::Grant {
                    username,
                    amount,
                    memo,
                } => cli::grant(&client, &username, amount, memo.as_deref()).await?,
                CreditsCommand::Show { username } => cli::credits(&client, &username).await?,
            };
            println!(
                "balance {} reserved {} available {}",
                totals["balance"], totals["reserved"], totals["available"]
            );
            Ok(0)
        }
        Command::Cog {
            command:
                CogCommand::UploadUrl {
                    model,
                    callback_url,
                },
        } => {
            let config = Config::load(args.config.as_deref(), args.profile.as_deref())?;
            let model = augur_core::ModelName::parse(&model)?;
            let token = config
                .admin_token
                .clone()
                .or_else(|| local_admin_token(&args).map(augur_core::Secret::new))
                .context("no admin token: set AUGUR_ADMIN_TOKEN (the one the servers use), or run next to the server's data directory")?;
            let callback = callback_url
                .or_else(|| config.callback_url.clone())
                .unwrap_or_else(|| config.public_url_for(config.listen));
            println!(
                "{}",
                augur_engine::cog::upload_url_for(&token, &callback, &model)
            );
            Ok(0)
        }
        Command::Get { id, server } => {
            let client = client(&server, &args)?;
            let prediction = client.get(&id).await?;
            println!("{}", serde_json::to_string_pretty(&prediction)?);
            Ok(0)
        }
        Command::Workflow {
            command: WorkflowCommand::Apply { file, server },
        } => {
            let client = client(&server, &args)?;
            let workflow = cli::apply_workflow(&client, &file).await?;
            println!(
                "{} version {}",
                workflow["name"].as_str().unwrap_or("?"),
                workflow["version"]
            );
            Ok(0)
        }
        Command::Workflow {
            command:
                WorkflowCommand::Run {
                    workflow,
                    inputs,
                    wait,
                    server,
                },
        } => {
            let client = client(&server, &args)?;
            cli::run_workflow(&client, &workflow, &inputs, wait).await
        }
        Command::Run {
            command: RunCommand::Get { id, server },
        } => {
            let client = client(&server, &args)?;
            let run = cli::get_run(&client, &id).await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
            Ok(0)
        }
    }
}

fn client(server: &ServerArgs, args: &ConfigArgs) -> Result<Client> {
    let token = server
        .token
        .clone()
        .or_else(|| std::env::var("AUGUR_ADMIN_TOKEN").ok())
        .or_else(|| std::env::var("REPLICATE_API_TOKEN").ok())
        .or_else(|| local_admin_token(args))
        .context("no API token: pass --token, set AUGUR_TOKEN, or run next to the server's data directory")?;
    Client::new(&server.url, token)
}

/// The token a local embedded server generated, if this directory holds one.
fn local_admin_token(args: &ConfigArgs) -> Option<String> {
    let config = Config::load(args.config.as_deref(), args.profile.as_deref()).ok()?;
    let dir = config
        .store
        .strip_prefix("embedded://")?
        .split('?')
        .next()?;
    let text = std::fs::read_to_string(PathBuf::from(dir).join("admin-token")).ok()?;
    Some(text.trim().to_owned())
}

fn init_tracing(format: LogFormat) {
    let filter = std::env::var("AUGUR_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Args::try_parse_from(std::iter::once("augur").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn workflow_commands_parse() {
        let Command::Workflow {
            command: WorkflowCommand::Apply { file, server },
        } = parse(&[
            "workflow",
            "apply",
            "variants.toml",
            "--url",
            "http://127.0.0.1:9",
        ])
        else {
            panic!("not workflow apply");
        };
        assert_eq!(file, PathBuf::from("variants.toml"));
        assert_eq!(server.url, "http://127.0.0.1:9");

        let Command::Workflow {
            command:
                WorkflowCommand::Run {
                    workflow,
                    inputs,
                    wait,
                    server,
                },
        } = parse(&[
            "workflow",
            "run",
            "acme/variants",
            "-i",
            "prompt=a cat",
            "--input",
            "n=3",
            "--wait",
            "--token",
            "t0k",
        ])
        else {
            panic!("not workflow run");
        };
        assert_eq!(workflow, "acme/variants");
        assert_eq!(inputs, ["prompt=a cat", "n=3"]);
        assert!(wait);
        assert_eq!(server.token.as_deref(), Some("t0k"));
        // The inputs are `augur predict`'s.
        assert_eq!(
            serde_json::Value::Object(cli::parse_inputs(&inputs).unwrap()),
            serde_json::json!({"prompt": "a cat", "n": 3})
        );

        let Command::Workflow {
            command: WorkflowCommand::Run { inputs, wait, .. },
        } = parse(&["workflow", "run", "acme/variants"])
        else {
            panic!("not workflow run");
        };
        assert!(inputs.is_empty() && !wait);

        let Command::Run {
            command: RunCommand::Get { id, .. },
        } = parse(&["run", "get", "r123"])
        else {
            panic!("not run get");
        };
        assert_eq!(id, "r123");
    }

    #[test]
    fn workflow_commands_reject_what_they_do_not_know() {
        for bad in [
            &["workflow", "apply"][..],
            &["workflow", "run"],
            &["workflow", "run", "acme/x", "--follow"],
            &["workflow", "delete", "acme/x"],
            &["run", "get"],
        ] {
            assert!(
                Args::try_parse_from(std::iter::once("augur").chain(bad.iter().copied())).is_err(),
                "{bad:?}"
            );
        }
    }
}
