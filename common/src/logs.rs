//! Logging for every Outpost process: `tracing`, filtered by `OUTPOST_LOG` (default `info`),
//! as JSON lines on demand, else text on stderr (coloured only on a terminal, and never with
//! `NO_COLOR` set: <https://no-color.org>).

pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        use std::io::IsTerminal;
        let colour = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .init();
    }
}
