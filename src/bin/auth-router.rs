//! `auth-router`: check a plugin config and explain routing decisions offline,
//! with the plugin's own config compiler and router.
//!
//! ```text
//! auth-router check [--openresty] CONFIG.json
//! auth-router explain CONFIG.json --path /send [--method POST]
//!     [--header x-api-version:v3]... --account ACCOUNT.json [--plugin N] [--json]
//! ```
//!
//! CONFIG.json is one of (JSON only; convert decK's YAML first, e.g.
//! `yq -o=json kong.yml > kong.json`):
//! - the plugin config itself (the Kong `config` object, or the OpenResty
//!   adapter's config file): recognized by its `auth` field;
//! - a plugin object, as the Admin API returns it: `{"name": "auth-router", "config": {...}}`;
//! - a decK / Kong declarative file (it has `_format_version`, `plugins` or
//!   `services`): every `auth-router` plugin in the top-level `plugins` and in
//!   the `plugins` of `services`, their `routes`, top-level `routes` and
//!   `consumers` is used. Error paths then start with the plugin's place in
//!   the file (`services[1].plugins[2].config.auth.url`).
//!
//! Exit status: 0 ok, 1 invalid config, 2 usage or file error.

#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use auth_router_native::config::{self, Config, ConfigError, Destination};
use auth_router_native::routing::{Explanation, Request, Router};
use auth_router_native::VERSION;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  auth-router check [--openresty] CONFIG.json
  auth-router explain CONFIG.json --path PATH --account ACCOUNT.json
                      [--method METHOD] [--header NAME:VALUE]... [--plugin N] [--json]
  auth-router --version | --help

check    validates CONFIG.json exactly as the plugin does: one `path: message`
         line per error (exit 1), or `ok` (exit 0). --openresty adds the plain
         OpenResty adapter's rule: Kong Upstreams (routes[].upstream) do not
         exist there.
explain  shows which route a request takes and why each earlier route did not
         match. PATH is the request path (a query string is ignored). METHOD
         defaults to GET and is compared exactly (HTTP methods are
         case-sensitive). --header may repeat; only the api_version.header one
         is used. ACCOUNT.json is the account object as the auth service
         returns it (after auth.account_pointer); its id is read at
         auth.account_id_pointer. --plugin N picks the Nth auth-router plugin
         of a declarative file that has several. --json prints one JSON
         object; routes are numbered from 1, as in config errors (routes[2]).

CONFIG.json: the plugin config, a plugin object ({\"name\": \"auth-router\",
\"config\": ...}) or a decK/Kong declarative file in JSON.
Exit status: 0 ok, 1 invalid config, 2 usage or file error.";

/// Why the tool stopped.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Bad command line.
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    /// A file could not be read or parsed, or holds the wrong thing.
    #[error("{0}")]
    File(String),
    /// The config is invalid: one `path: message` per line.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 1,
            CliError::Usage(_) | CliError::File(_) => 2,
        }
    }
}

/// What a run prints.
#[derive(Debug, PartialEq, Eq)]
struct Output {
    code: u8,
    stdout: String,
    stderr: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = run(&args, &|path| {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
    });
    // A closed stdout (`| head`) is not worth a panic or a different status.
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}

type ReadFile<'r> = &'r dyn Fn(&str) -> Result<String, String>;

fn run(args: &[String], read: ReadFile<'_>) -> Output {
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(format!("{USAGE}\n")),
        Some("-V" | "--version" | "version") => Ok(format!("auth-router {VERSION}\n")),
        Some("check") => check(args.get(1..).unwrap_or_default(), read),
        Some("explain") => explain(args.get(1..).unwrap_or_default(), read),
        Some(other) => Err(CliError::Usage(format!("unknown command '{other}'"))),
    };
    match result {
        Ok(stdout) => Output {
            code: 0,
            stdout,
            stderr: String::new(),
        },
        Err(e @ CliError::Invalid(_)) => Output {
            code: e.code(),
            stdout: format!("{e}\n"),
            stderr: String::new(),
        },
        Err(e) => Output {
            code: e.code(),
            stdout: String::new(),
            stderr: format!("auth-router: {e}\n"),
        },
    }
}

fn check(args: &[String], read: ReadFile<'_>) -> Result<String, CliError> {
    let (openresty, file) = match args {
        [file] => (false, file),
        [flag, file] | [file, flag] if flag == "--openresty" => (true, file),
        _ => {
            return Err(CliError::Usage(
                "check takes [--openresty] and exactly one CONFIG.json".into(),
            ))
        }
    };
    let mut errors = Vec::new();
    for (place, result) in load_configs(file, read)? {
        match result {
            Err(e) => errors.extend(error_lines(&place, e)),
            Ok(c) if openresty => errors.extend(openresty_errors(&place, &c)),
            Ok(_) => {}
        }
    }
    if errors.is_empty() {
        Ok("ok\n".into())
    } else {
        Err(CliError::Invalid(errors))
    }
}

/// What the OpenResty adapter's `init()` refuses beyond the compiler, with
/// its message (lua/auth_router/openresty.lua).
fn openresty_errors(place: &str, c: &Config) -> Vec<String> {
    let prefix = if place.is_empty() {
        String::new()
    } else {
        format!("{place}.")
    };
    c.routes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.destination, Destination::Upstream(_)))
        .map(|(i, _)| {
            format!(
                "{prefix}routes[{}].upstream: Kong upstreams are not available in plain \
                 OpenResty, use target (host:port)",
                i + 1
            )
        })
        .collect()
}

/// A plugin config found in a file: where it is (`""` for a bare config,
/// else e.g. `plugins[1].config`) and its compiled form.
type Found = (String, Result<Config, ConfigError>);

/// Reads CONFIG.json and compiles every auth-router config in it.
fn load_configs(file: &str, read: ReadFile<'_>) -> Result<Vec<Found>, CliError> {
    let text = read(file).map_err(CliError::File)?;
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        // Not JSON: report it exactly as the plugin does.
        Err(_) => return Ok(vec![(String::new(), config::compile_json(&text))]),
    };
    let found: Vec<(String, Value)> = match &value {
        Value::Object(o) if o.contains_key("auth") => vec![(String::new(), value)],
        Value::Object(o)
            if o.get("name").and_then(Value::as_str).is_some() && o.contains_key("config") =>
        {
            if o.get("name").and_then(Value::as_str) != Some("auth-router") {
                return Err(CliError::File(format!(
                    "{file}: plugin object is not an auth-router plugin"
                )));
            }
            vec![(
                "config".into(),
                o.get("config").cloned().unwrap_or_default(),
            )]
        }
        Value::Object(o)
            if ["_format_version", "plugins", "services"]
                .iter()
                .any(|k| o.contains_key(*k)) =>
        {
            let mut found = Vec::new();
            declarative_plugins(&value, "", &mut found);
            if found.is_empty() {
                return Err(CliError::File(format!(
                    "{file}: declarative file has no auth-router plugin"
                )));
            }
            found
        }
        // Anything else is read as a bare config, so the errors are the plugin's.
        _ => vec![(String::new(), value)],
    };
    Ok(found
        .into_iter()
        .map(|(place, v)| (place, config::compile(v)))
        .collect())
}

/// Collects the auth-router plugins of a decK / declarative entity.
fn declarative_plugins(entity: &Value, place: &str, found: &mut Vec<(String, Value)>) {
    let items = |key: &str| {
        entity
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().enumerate())
            .into_iter()
            .flatten()
    };
    for (i, plugin) in items("plugins") {
        if plugin.get("name").and_then(Value::as_str) == Some("auth-router") {
            let config = plugin.get("config").cloned().unwrap_or_default();
            found.push((format!("{place}plugins[{}].config", i + 1), config));
        }
    }
    for key in ["services", "routes", "consumers"] {
        for (i, child) in items(key) {
            declarative_plugins(child, &format!("{place}{key}[{}].", i + 1), found);
        }
    }
}

/// `path: message` lines, prefixed with the plugin's place in the file.
fn error_lines(place: &str, err: ConfigError) -> Vec<String> {
    match err {
        ConfigError::Invalid(errs) => errs
            .into_iter()
            .map(|e| {
                let path = match (place.is_empty(), e.path.as_str()) {
                    (true, _) => e.path.clone(),
                    // The root itself is not a record.
                    (false, "config") => place.to_string(),
                    (false, p) => format!("{place}.{p}"),
                };
                format!("{path}: {}", e.message)
            })
            .collect(),
        other if place.is_empty() => vec![other.to_string()],
        other => vec![format!("{place}: {other}")],
    }
}

/// `explain`'s command line.
#[derive(Debug, Default)]
struct ExplainArgs {
    config: Option<String>,
    method: Option<String>,
    path: Option<String>,
    headers: Vec<(String, String)>,
    account: Option<String>,
    plugin: Option<usize>,
    json: bool,
}

fn parse_explain(args: &[String]) -> Result<ExplainArgs, CliError> {
    let mut a = ExplainArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--json" => a.json = true,
            "--method" => a.method = Some(value(arg)?),
            "--path" => a.path = Some(value(arg)?),
            "--account" => a.account = Some(value(arg)?),
            "--header" => {
                let h = value(arg)?;
                let (name, v) = h.split_once(':').ok_or_else(|| {
                    CliError::Usage(format!("--header wants NAME:VALUE, got '{h}'"))
                })?;
                a.headers
                    .push((name.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            "--plugin" => {
                let n = value(arg)?;
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 => a.plugin = Some(n),
                    _ => {
                        return Err(CliError::Usage(format!(
                            "--plugin wants a number from 1, got '{n}'"
                        )))
                    }
                }
            }
            flag if flag.starts_with("--") => {
                return Err(CliError::Usage(format!("unknown option '{flag}'")))
            }
            file if a.config.is_none() => a.config = Some(file.to_string()),
            extra => return Err(CliError::Usage(format!("unexpected argument '{extra}'"))),
        }
    }
    Ok(a)
}

fn explain(args: &[String], read: ReadFile<'_>) -> Result<String, CliError> {
    let a = parse_explain(args)?;
    let missing = |what: &str| CliError::Usage(format!("explain needs {what}"));
    let file = a.config.as_deref().ok_or_else(|| missing("CONFIG.json"))?;
    let raw_path = a.path.as_deref().ok_or_else(|| missing("--path"))?;
    let account_file = a.account.as_deref().ok_or_else(|| missing("--account"))?;
    let path = raw_path.split('?').next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(CliError::Usage(format!(
            "--path must start with '/', got '{raw_path}'"
        )));
    }

    let mut configs = load_configs(file, read)?;
    let count = configs.len();
    let (place, compiled) = match (a.plugin, count) {
        (None, 1) => configs.remove(0),
        (None, n) => {
            let places: Vec<&str> = configs.iter().map(|(p, _)| p.as_str()).collect();
            return Err(CliError::Usage(format!(
                "{file} has {n} auth-router plugins ({}); pick one with --plugin N",
                places.join(", ")
            )));
        }
        (Some(n), _) if n <= count => configs.remove(n - 1),
        (Some(n), _) => {
            return Err(CliError::Usage(format!(
                "--plugin {n}: {file} has {count} auth-router plugin(s)"
            )))
        }
    };
    let config = compiled.map_err(|e| CliError::Invalid(error_lines(&place, e)))?;

    let account_text = read(account_file).map_err(CliError::File)?;
    let account: Value = serde_json::from_str(&account_text)
        .map_err(|e| CliError::File(format!("{account_file}: not valid JSON: {e}")))?;
    let id_pointer = config.auth.account_id_pointer.as_str();
    let account_id: Cow<'_, str> = match account.pointer(id_pointer) {
        Some(Value::String(s)) if !s.is_empty() => Cow::Borrowed(s.as_str()),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        _ => {
            return Err(CliError::File(format!(
                "{account_file}: the account has no id at '{id_pointer}' (auth.account_id_pointer)"
            )))
        }
    };
    let version_header = config.api_version.header.as_str();
    let header = a
        .headers
        .iter()
        .find(|(name, _)| name == version_header)
        .map(|(_, v)| v.as_bytes());
    let method = a.method.as_deref().unwrap_or("GET");

    let router = Router::new(&config);
    let req = Request {
        method,
        path: path.as_bytes(),
        api_version_header: header,
        account: &account,
        account_id: &account_id,
    };
    let ex = router.explain(&req);
    Ok(if a.json {
        format!("{}\n", explanation_json(&ex))
    } else {
        explanation_text(&ex, version_header)
    })
}

fn destination(d: &Destination) -> (&'static str, String) {
    match d {
        Destination::Upstream(name) => ("upstream", name.clone()),
        Destination::Target(hp) => ("target", hp.to_string()),
    }
}

fn explanation_text(ex: &Explanation<'_>, version_header: &str) -> String {
    let mut out = match &ex.api_version {
        Some(v) => format!("api version: {} (from {})\n", v.text(), v.source),
        None => format!(
            "api version: none (no {version_header} header, path match, account field or default)\n"
        ),
    };
    for s in &ex.steps {
        let verdict = match &s.mismatch {
            Some(m) => format!("no match: {m}"),
            None => "match".into(),
        };
        out.push_str(&format!("routes[{}] {}: {verdict}\n", s.index + 1, s.name));
    }
    match &ex.decision {
        Some(d) => {
            let (kind, dest) = destination(d.destination);
            out.push_str(&format!(
                "chosen: routes[{}] {} -> {kind} {dest}",
                d.index + 1,
                d.name
            ));
            if let Some(p) = &d.path {
                let p = String::from_utf8_lossy(p);
                out.push_str(&format!(", upstream path {p:?} (strip_prefix)"));
            }
            out.push('\n');
        }
        None => out.push_str("no route matched: Kong's configured service\n"),
    }
    out
}

fn explanation_json(ex: &Explanation<'_>) -> Value {
    let route = ex.decision.as_ref().map(|d| {
        let (kind, dest) = destination(d.destination);
        let mut r = json!({
            "position": d.index + 1,
            "name": d.name,
            "prefix": d.prefix,
            "path": d.path.as_deref().map(String::from_utf8_lossy),
        });
        r[kind] = json!(dest);
        r
    });
    let steps: Vec<Value> = ex
        .steps
        .iter()
        .map(|s| match &s.mismatch {
            Some(m) => json!({
                "position": s.index + 1, "name": s.name, "matched": false,
                "dimension": m.dimension.as_str(), "reason": m.detail,
            }),
            None => json!({"position": s.index + 1, "name": s.name, "matched": true}),
        })
        .collect();
    json!({
        "api_version": ex.api_version.as_ref().map(|v| json!({"value": v.text(), "source": v.source.as_str()})),
        "route": route,
        "steps": steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CONFIG: &str = r#"{
        "auth": {"url": "http://127.0.0.1:9000/auth"},
        "api_version": {"default": "v3"},
        "routes": [
            {"name": "legacy", "api_versions": ["v1", "v2"], "upstream": "legacy"},
            {"name": "email", "paths": ["/send"], "methods": ["POST"], "target": "email:8080", "strip_prefix": true}
        ]
    }"#;

    fn run_with(args: &[&str], files: &[(&str, &str)]) -> Output {
        let files: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(&args, &|p| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| format!("{p}: No such file or directory (os error 2)"))
        })
    }

    #[test]
    fn check_prints_ok_for_a_valid_config() {
        let out = run_with(&["check", "c.json"], &[("c.json", CONFIG)]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"));
    }

    #[test]
    fn check_openresty_refuses_upstream_routes_as_init_does() {
        let out = run_with(&["check", "--openresty", "c.json"], &[("c.json", CONFIG)]);
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stdout,
            "routes[1].upstream: Kong upstreams are not available in plain OpenResty, \
             use target (host:port)\n"
        );
        let targets_only = CONFIG.replace(r#""upstream": "legacy""#, r#""target": "l:1""#);
        let out = run_with(
            &["check", "c.json", "--openresty"],
            &[("c.json", &targets_only)],
        );
        assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"));
    }

    #[test]
    fn check_prints_one_field_error_per_line() {
        let bad = r#"{"auth": {"url": "ftp://x"}, "routes": [{"name": "a"}]}"#;
        let out = run_with(&["check", "c.json"], &[("c.json", bad)]);
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stdout,
            "auth.url: scheme must be http or https, got 'ftp'\n\
             routes[1].target: exactly one of upstream or target is required\n"
        );
    }

    #[test]
    fn check_reports_invalid_json_as_the_plugin_does() {
        let out = run_with(&["check", "c.json"], &[("c.json", "{")]);
        assert_eq!(out.code, 1);
        assert!(
            out.stdout.starts_with("config is not valid JSON: "),
            "{}",
            out.stdout
        );
    }

    #[test]
    fn check_reads_plugin_objects_and_declarative_files() {
        let plugin = format!(r#"{{"name": "auth-router", "config": {CONFIG}}}"#);
        let out = run_with(&["check", "p.json"], &[("p.json", &plugin)]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"));

        let deck = r#"{"_format_version": "3.0", "services": [{"name": "s", "url": "http://x",
            "plugins": [{"name": "cors"}, {"name": "auth-router", "config": {"auth": {"url": "nope"}}}],
            "routes": [{"name": "r", "plugins": [{"name": "auth-router", "config": 1}]}]}]}"#;
        let out = run_with(&["check", "kong.json"], &[("kong.json", deck)]);
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stdout,
            "services[1].plugins[2].config.auth.url: 'nope' is not a URL: relative URL without a base\n\
             services[1].routes[1].plugins[1].config: expected a record (JSON object)\n"
        );

        let none = r#"{"_format_version": "3.0", "plugins": [{"name": "cors"}]}"#;
        let out = run_with(&["check", "kong.json"], &[("kong.json", none)]);
        assert_eq!(out.code, 2);
        assert!(
            out.stderr.contains("no auth-router plugin"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn check_fails_on_a_missing_file_with_status_2() {
        let out = run_with(&["check", "gone.json"], &[]);
        assert_eq!(out.code, 2);
        assert!(out.stderr.contains("gone.json"), "{}", out.stderr);
    }

    #[test]
    fn explain_shows_the_chosen_route_and_earlier_misses() {
        let out = run_with(
            &[
                "explain",
                "c.json",
                "--method",
                "POST",
                "--path",
                "/send/x?y=1",
                "--header",
                "X-Api-Version: v3",
                "--account",
                "a.json",
            ],
            &[("c.json", CONFIG), ("a.json", r#"{"id": "acc_1"}"#)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stdout,
            "api version: v3 (from header)\n\
             routes[1] legacy: no match: api_versions: \"v3\" (from header) is not one of \"v1\", \"v2\"\n\
             routes[2] email: match\n\
             chosen: routes[2] email -> target email:8080, upstream path \"/x\" (strip_prefix)\n"
        );
    }

    #[test]
    fn explain_without_a_match_names_kongs_service() {
        let out = run_with(
            &[
                "explain",
                "c.json",
                "--path",
                "/send",
                "--account",
                "a.json",
            ],
            &[("c.json", CONFIG), ("a.json", r#"{"id": 42}"#)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stdout,
            "api version: v3 (from default)\n\
             routes[1] legacy: no match: api_versions: \"v3\" (from default) is not one of \"v1\", \"v2\"\n\
             routes[2] email: no match: methods: \"GET\" is not one of \"POST\"\n\
             no route matched: Kong's configured service\n"
        );
    }

    #[test]
    fn explain_json_is_machine_readable() {
        let out = run_with(
            &[
                "explain",
                "c.json",
                "--path",
                "/x",
                "--account",
                "a.json",
                "--header",
                "x-api-version:v1",
                "--json",
            ],
            &[("c.json", CONFIG), ("a.json", r#"{"id": "acc_1"}"#)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(
            v,
            json!({
                "api_version": {"value": "v1", "source": "header"},
                "route": {"position": 1, "name": "legacy", "upstream": "legacy", "prefix": null, "path": null},
                "steps": [{"position": 1, "name": "legacy", "matched": true}],
            })
        );
    }

    #[test]
    fn explain_rejects_bad_usage_with_status_2() {
        let files = [("c.json", CONFIG), ("a.json", r#"{"name": "no id"}"#)];
        for (args, needle) in [
            (
                vec!["explain", "c.json", "--account", "a.json"],
                "needs --path",
            ),
            (vec!["explain", "c.json", "--path", "/"], "needs --account"),
            (
                vec!["explain", "c.json", "--path", "x", "--account", "a.json"],
                "must start with '/'",
            ),
            (
                vec![
                    "explain",
                    "c.json",
                    "--path",
                    "/",
                    "--account",
                    "a.json",
                    "--bogus",
                ],
                "unknown option",
            ),
            (
                vec!["explain", "c.json", "--path", "/", "--account", "a.json"],
                "no id at '/id'",
            ),
            (
                vec![
                    "explain",
                    "c.json",
                    "--path",
                    "/",
                    "--account",
                    "a.json",
                    "--plugin",
                    "2",
                ],
                "has 1 auth-router",
            ),
            (vec!["frobnicate"], "unknown command"),
        ] {
            let out = run_with(&args, &files);
            assert_eq!(out.code, 2, "{args:?}");
            assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        }
    }

    #[test]
    fn explain_of_an_invalid_config_prints_its_errors() {
        let out = run_with(
            &["explain", "c.json", "--path", "/", "--account", "a.json"],
            &[("c.json", "{}"), ("a.json", r#"{"id": "a"}"#)],
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (1, "auth: required field missing\n")
        );
    }

    #[test]
    fn explain_needs_a_choice_among_several_plugins() {
        let deck = format!(
            r#"{{"plugins": [{{"name": "auth-router", "config": {CONFIG}}},
                            {{"name": "auth-router", "config": {CONFIG}}}]}}"#
        );
        let files = [("k.json", deck.as_str()), ("a.json", r#"{"id": "a"}"#)];
        let out = run_with(
            &["explain", "k.json", "--path", "/", "--account", "a.json"],
            &files,
        );
        assert_eq!(out.code, 2);
        assert!(
            out.stderr.contains("plugins[1].config, plugins[2].config"),
            "{}",
            out.stderr
        );
        let out = run_with(
            &[
                "explain",
                "k.json",
                "--path",
                "/",
                "--account",
                "a.json",
                "--plugin",
                "2",
            ],
            &files,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    #[test]
    fn help_and_version_exit_0() {
        assert_eq!(run_with(&["--help"], &[]).code, 0);
        let out = run_with(&["--version"], &[]);
        assert_eq!(out.stdout, format!("auth-router {VERSION}\n"));
    }
}
