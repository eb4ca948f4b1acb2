//! `outpost server --config FILE` (or `OUTPOST_CONFIG`): a TOML file of the server's settings,
//! one key per flag (`postgres-url = "..."`, `provisioner-daemons = 4`, `log-json = true`;
//! `snake_case` keys work too). Precedence: a flag, then its `OUTPOST_*` variable, then the
//! file, then the default. `--print-config` prints the settings in effect as such a file, each
//! with where it came from, secrets hidden.
//!
//! The file's settings go through clap like flags (appended to the arguments when neither the
//! command line nor the environment set them), so they are checked exactly as flags are.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::config::Cli;

/// Arguments of `server` that are not settings.
const NOT_SETTINGS: &[&str] = &["config", "print_config", "help", "version"];

/// Parses the command line (exiting with clap's message on an error), with the server's
/// config file applied; `--print-config` prints and exits.
pub fn parse() -> Cli {
    match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

fn parse_from(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let m = Cli::command().try_get_matches_from(&argv)?;
    let Some(("server", sm)) = m.subcommand() else {
        return Cli::from_arg_matches(&m);
    };
    if sm.subcommand().is_some() {
        // `server backup|restore` take their own flags.
        return Cli::from_arg_matches(&m);
    }
    let mut from_file = BTreeSet::new();
    let m = match sm.get_one::<std::path::PathBuf>("config") {
        Some(file) => {
            let mut argv = argv;
            argv.extend(file_args(sm, file, &mut from_file)?);
            Cli::command().try_get_matches_from(&argv)?
        }
        None => m,
    };
    if let Some(("server", sm)) = m.subcommand() {
        if sm.get_flag("print_config") {
            print!("{}", render(sm, &from_file));
            std::process::exit(0);
        }
    }
    Cli::from_arg_matches(&m)
}

fn server_command() -> clap::Command {
    Cli::command()
        .find_subcommand("server")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("server"))
}

fn fail(file: &Path, msg: impl std::fmt::Display) -> clap::Error {
    clap::Error::raw(
        ErrorKind::InvalidValue,
        format!("config file {}: {msg}\n", file.display()),
    )
}

/// The arguments the file adds: its settings that no flag or variable set.
fn file_args(
    sm: &ArgMatches,
    file: &Path,
    from_file: &mut BTreeSet<String>,
) -> Result<Vec<OsString>, clap::Error> {
    let text = std::fs::read_to_string(file).map_err(|e| fail(file, e))?;
    let table: toml::Table = text.parse().map_err(|e| fail(file, e))?;
    let cmd = server_command();
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
            .ok_or_else(|| {
                fail(
                    file,
                    format!("unknown setting `{key}` (the settings are the flags of `outpost server --help`, without the dashes)"),
                )
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            sm.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(fail(
                        file,
                        format!(
                        "`{key}` is a {}; settings are strings, numbers, booleans or lists of them",
                        other.type_str()
                    ),
                    ))
                }
            };
            if takes_value {
                out.push(OsString::from(format!("--{long}={s}")));
            } else {
                match v {
                    toml::Value::Boolean(true) => out.push(OsString::from(format!("--{long}"))),
                    toml::Value::Boolean(false) => {}
                    _ => return Err(fail(file, format!("`{key}` is true or false"))),
                }
            }
        }
        from_file.insert(id.to_string());
    }
    Ok(out)
}

/// The settings in effect as a config file, each line saying where its value came from.
fn render(sm: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let cmd = server_command();
    let mut out = String::from(
        "# `outpost server` settings in effect: a flag wins over its OUTPOST_* variable, which wins\n# over the config file, which wins over the default.\n",
    );
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&id) || arg.is_hide_set() {
            continue;
        }
        let source = match sm.value_source(id) {
            _ if from_file.contains(id) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let raw: Vec<String> = sm
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if raw.is_empty() {
            out.push_str(&format!("# {long} = (unset)\n"));
            continue;
        }
        let secret = arg.is_hide_env_values_set() || long.contains("secret");
        let value = |s: &str| -> toml::Value {
            if secret {
                return toml::Value::String("(hidden)".into());
            }
            if long == "postgres-url" {
                return toml::Value::String(hide_password(s));
            }
            if let Ok(b) = s.parse::<bool>() {
                return toml::Value::Boolean(b);
            }
            match s.parse::<i64>() {
                Ok(i) => toml::Value::Integer(i),
                Err(_) => toml::Value::String(s.to_string()),
            }
        };
        let v = if raw.len() == 1 {
            value(&raw[0])
        } else {
            toml::Value::Array(raw.iter().map(|s| value(s)).collect())
        };
        out.push_str(&format!("{long} = {v}  # {source}\n"));
    }
    out
}

/// `postgres://user:secret@host/db` with the password replaced.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:(hidden)@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("postgres://u:pw@h:5432/db"),
            "postgres://u:(hidden)@h:5432/db"
        );
        assert_eq!(hide_password("postgres://u@h/db"), "postgres://u@h/db");
    }
}
