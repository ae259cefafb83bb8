//! `autofs-agent`: flags in, library calls out.

use std::path::PathBuf;
use std::process::ExitCode;

use autofs_agent::scan_cmd::{self, EXIT_ERROR, Format, ScanArgs};
use clap::{Parser, Subcommand};

/// autofs-inspector node agent: tells whether CRIU could checkpoint this node's autofs mounts now.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Proc filesystem to inspect (`/host/proc` in a container).
    #[arg(
        long,
        global = true,
        env = "AUTOFS_AGENT_PROC_ROOT",
        default_value = "/proc"
    )]
    proc_root: PathBuf,
    /// Node name in reports (default: $NODE_NAME, then the hostname).
    #[arg(long, global = true, env = "AUTOFS_AGENT_NODE_NAME")]
    node_name: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan this machine once and print one report per autofs mount (the default).
    Scan {
        /// Print JSON lines (one object per mount, fields as in autofs.v1.MountReport).
        #[arg(long, env = "AUTOFS_AGENT_JSON")]
        json: bool,
        /// Write CRIU image files (DIR/<mnt_ns>/autofs-<s_dev>.img) for dumpable mounts.
        #[arg(long, value_name = "DIR", env = "AUTOFS_AGENT_CRIU_IMAGES")]
        criu_images: Option<PathBuf>,
        /// Only the mount namespace of this process (host pid).
        #[arg(long, env = "AUTOFS_AGENT_PID")]
        pid: Option<i32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let node_name = cli
        .node_name
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    let (json, criu_images, pid) = match cli.command {
        Some(Command::Scan {
            json,
            criu_images,
            pid,
        }) => (json, criu_images, pid),
        None => (false, None, None),
    };
    let args = ScanArgs {
        proc_root: cli.proc_root,
        node_name,
        format: if json {
            Format::JsonLines
        } else {
            Format::Table
        },
        criu_images,
        pid,
    };
    match scan_cmd::run(&args, &mut std::io::stdout().lock()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("autofs-agent: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
