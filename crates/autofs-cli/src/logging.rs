//! Logs go to stderr, as text or JSON lines, filtered by `RUST_LOG`.

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event (tracing-subscriber's JSON format).
    Json,
}

/// Installs the process's log subscriber: stderr, `format`, `RUST_LOG` when set and valid,
/// else `default_filter` (a tracing `EnvFilter` directive such as `info`).
pub fn init(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
