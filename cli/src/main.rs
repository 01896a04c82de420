//! `sluice`: run a Sluice node; deploy, invoke, list and remove functions;
//! manage nodes and rules, and read the coordinator's decisions.
//!
//! `main` only parses arguments, sets up tracing and hands over to a command.

mod build;
mod cache;
mod cluster;
mod commands;
mod decisions;
mod duration;
mod invocations;
mod logs;
mod nodes;
mod registries;
mod rules;
mod table;
mod tokens;
mod top;
use sluice_cli::node;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use sluice_cli::client::Api;
use sluice_cli::config;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Run functions and containers on your own hosts")]
struct Cli {
    /// Coordinator API addresses for client commands, comma separated; any
    /// coordinator serves, the next is tried when one is down.
    #[arg(long, env = "SLUICE_API", default_value = "http://127.0.0.1:7070", value_delimiter = ',')]
    api: Vec<String>,
    /// Gateway address, for `invoke`.
    #[arg(long, env = "SLUICE_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// API token for client commands (default: --token-file, else the admin
    /// token `sluice up` wrote to its data directory).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the API token.
    #[arg(long, env = "SLUICE_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// The cluster CA's certificate (ca.pem), to check https:// API and gateway addresses against.
    #[arg(long, env = "SLUICE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Output format of client commands.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a single-node Sluice: coordinator, gateway and agent in one process, on local Docker.
    Up(node::UpCommand),
    /// Run a coordinator (state, decisions, API and gateway) without an agent.
    Coordinator(node::CoordinatorCommand),
    /// Run an agent that drives this host's containers for a coordinator.
    Agent(node::AgentArgs),
    /// Create or update a function (with --build DIR, build and push its image first).
    Deploy(commands::DeployArgs),
    /// Build an image from a directory with a Dockerfile through the local Docker, and push it (--push).
    Build(build::BuildArgs),
    /// Call a function through the gateway and print its answer.
    Invoke(commands::InvokeArgs),
    /// List functions and their instances.
    Ls,
    /// A function's container output, each line prefixed by its instance.
    Logs(logs::LogsArgs),
    /// Functions and nodes with live figures, redrawn every second (Ctrl-C ends).
    Top(top::TopArgs),
    /// Remove a function and stop its instances.
    Rm {
        /// Function name.
        name: String,
    },
    /// Coordinator cluster membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Hosts: list, drain, undrain.
    #[command(subcommand)]
    Nodes(nodes::NodesCommand),
    /// Scheduling rules: apply, check, list, remove, explain.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// The coordinator's latest scaling and placement decisions, with their reasons.
    Events(decisions::EventsArgs),
    /// How the coordinator would decide now.
    #[command(subcommand)]
    Explain(decisions::ExplainCommand),
    /// The registries images may come from: ls, allow, set, any.
    #[command(subcommand)]
    Registries(registries::RegistriesCommand),
    /// The gateways' response cache: purge.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// What became of an asynchronous invocation: its state, tries, errors and result.
    Invocation {
        /// The id the 202 of POST /async-function/<name> gave.
        id: String,
    },
    /// API tokens and their roles: create, ls, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Replay an invocation trace through the keep-warm policies and score them.
    Sim(sluice_cli::sim::SimArgs),
    /// A cluster CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Certs(sluice_cli::certs::CertsCommand),
    /// Config files of coordinators and agents: check.
    #[command(subcommand)]
    Config(config::check::ConfigCommand),
    /// Print a shell completion script: `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions {
        /// The shell to complete in.
        shell: Shell,
    },
}

/// Shells `sluice completions` writes a script for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script of `shell` for the whole command line to `out`.
fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "sluice", out);
}

/// The exit code of a config file with mistakes, as of a usage error.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // The config files sit under the command line: parsed together, and again on SIGHUP.
    let resolver = config::Resolver::new(Cli::command(), std::env::args_os().collect());
    let resolved = match resolver.resolve() {
        Ok(resolved) => resolved,
        Err(config::Failure::Usage(e)) => e.exit(),
        Err(config::Failure::Config(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("error: nothing was started; fix the config file (`sluice config check FILE` checks it)");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let cli = Cli::from_arg_matches(&resolved.matches).unwrap_or_else(|e| e.exit());
    if let Command::Config(command) = cli.command {
        return config::check::run(command);
    }
    if let Command::Completions { shell } = cli.command {
        // Written whole, so a reader that stops early (`| head`) is no error.
        let mut script = Vec::new();
        completions(shell, &mut script);
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &script);
        return ExitCode::SUCCESS;
    }
    // An agent is a few timers and sockets: one thread runs it at less CPU than
    // a worker per core (B5). Everything else gets a worker per core.
    if let Command::Sim(args) = cli.command {
        // Pure computation: no async runtime.
        return match sluice_cli::sim::run(args, cli.output == Output::Json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut builder = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let token = || sluice_cli::credentials::resolve(cli.token.clone(), cli.token_file.as_deref());
        let api = || -> anyhow::Result<Api> { Ok(Api::new(&cli.api, cli.tls_ca.as_deref())?.with_token(token()?)) };
        match cli.command {
            Command::Up(command) => {
                // `up` applies only log_level on SIGHUP: nothing else to pass on.
                let _ = config::start(&command.process.log_level, resolver, resolved.node.expect("a node process"));
                node::up(command.up).await
            }
            Command::Coordinator(command) => {
                let _ = config::start(&command.process.log_level, resolver, resolved.node.expect("a node process"));
                node::coordinator(command).await
            }
            Command::Agent(args) => {
                let reloads = config::start(&args.process.log_level, resolver, resolved.node.expect("a node process"));
                node::agent(args, reloads).await
            }
            Command::Deploy(args) => commands::deploy(&api()?, cli.output, args).await,
            Command::Build(args) => build::run(cli.output, args).await,
            Command::Invoke(args) => commands::invoke(&cli.gateway, token()?, cli.tls_ca.as_deref(), args).await,
            Command::Tokens(command) => tokens::run(&api()?, cli.output, command).await,
            Command::Cache(command) => cache::run(&api()?, cli.output, command).await,
            Command::Invocation { id } => invocations::show(&api()?, cli.output, &id).await,
            Command::Registries(command) => registries::run(&api()?, cli.output, command).await,
            Command::Certs(command) => sluice_cli::certs::run(command),
            Command::Ls => commands::ls(&api()?, cli.output).await,
            Command::Logs(args) => logs::run(&api()?, cli.output, args).await,
            Command::Top(args) => top::run(&api()?, cli.output, args).await,
            Command::Rm { name } => commands::rm(&api()?, cli.output, &name).await,
            Command::Cluster(command) => cluster::run(&api()?, cli.output, command).await,
            Command::Nodes(command) => nodes::run(&api()?, cli.output, command).await,
            Command::Rules(command) => rules::run(&api()?, cli.output, command).await,
            Command::Events(args) => decisions::events(&api()?, cli.output, args).await,
            Command::Explain(command) => decisions::explain(&api()?, cli.output, command).await,
            Command::Sim(_) | Command::Config(_) | Command::Completions { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_cover_every_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in ["sluice", "deploy", "logs", "nodes", "follow"] {
                assert!(script.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }
}
