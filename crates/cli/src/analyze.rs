//! `paymesh analyze`: load files, run the analyzers, print istioctl's format.
//!
//! Exit status as istioctl's: 0 when nothing reaches the failure threshold, 79 when the
//! analyzers found issues, 65 when some files could not be read (the rest is still
//! analyzed and printed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use paymesh_config::analyze::{self, Context, Level, MeshConfig, Message, output};
use paymesh_config::load;
use paymesh_config::{Loaded, Store};

const EXIT_DATA_ERROR: u8 = 65;
const EXIT_ISSUES_FOUND: u8 = 79;
/// Where the control plane lives, as istioctl assumes.
const ISTIO_NAMESPACE: &str = "istio-system";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to analyze (recursively: .yaml, .yml, .json).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// More files or directories, as istioctl takes them.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Report on every namespace (the default for files).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Report only on resources of this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Log)]
    output: Format,
    /// Run only these analyzers (repeatable), e.g. gateway.ConflictingGatewayAnalyzer.
    #[arg(long = "analyzer", value_name = "NAME")]
    analyzers: Vec<String>,
    /// List the analyzers and exit.
    #[arg(long)]
    list_analyzers: bool,
    /// A MeshConfig file replacing Istio's defaults.
    #[arg(long = "meshConfigFile", alias = "mesh-config-file", value_name = "FILE")]
    mesh_config_file: Option<PathBuf>,
    /// A MeshNetworks file (`networks: ...`), analyzed as `MeshNetworks istio-system/meshnetworks`.
    #[arg(long = "meshNetworksFile", alias = "mesh-networks-file", value_name = "FILE")]
    mesh_networks_file: Option<PathBuf>,
    /// Messages at or above this level make the exit status non-zero.
    #[arg(long, default_value = "Error", value_parser = parse_level)]
    failure_threshold: Level,
    /// Messages at or above this level are printed.
    #[arg(long, default_value = "Info", value_parser = parse_level)]
    output_threshold: Level,
    /// Hide messages: `CODE=Kind name.namespace` (`*` matches any run of characters).
    #[arg(short = 'S', long = "suppress", value_name = "CODE=RESOURCE")]
    suppress: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    #[value(alias = "text")]
    Log,
    Json,
    Yaml,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("unknown level {s:?} (Error, Warning or Info)"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let registry = analyze::all();
    if args.list_analyzers {
        for analyzer in &registry {
            println!("{}", analyzer.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected: Vec<_> = if args.analyzers.is_empty() {
        registry
    } else {
        let mut selected = Vec::new();
        for name in &args.analyzers {
            let matching: Vec<_> = registry
                .iter()
                .filter(|a| a.name() == name || a.name().starts_with(&format!("{name}.")))
                .collect();
            if matching.is_empty() {
                bail!("unknown analyzer {name:?} (see --list-analyzers)");
            }
            selected.extend(matching.into_iter().copied());
        }
        selected
    };
    let mesh = match &args.mesh_config_file {
        Some(path) => load_mesh_config(path)?,
        None => MeshConfig::default(),
    };
    let paths: Vec<PathBuf> = args.files.iter().chain(&args.paths).cloned().collect();
    if paths.is_empty() {
        bail!("no files to analyze: give -f PATH (a file or a directory)");
    }

    let Loaded { mut resources, mut errors } = load::load_paths(&paths);
    if let Some(path) = &args.mesh_networks_file {
        resources.push(analyze::meshnetworks::load(path, ISTIO_NAMESPACE)?);
    }
    // Istio's ingress gateway, which files rarely contain and paymesh always runs.
    analyze::gateway::builtin::add_missing(&mut resources, &mesh, ISTIO_NAMESPACE);
    let (store, duplicates) = Store::new(resources);
    errors.extend(duplicates);

    let ctx = Context { store: &store, mesh: &mesh, istio_namespace: ISTIO_NAMESPACE };
    let mut found = analyze::run(&ctx, &selected);
    // A resource that does not fit its kind's schema is istioctl's IST0106, not a parse failure.
    let (schema, read_errors) = analyze::schema_messages(errors);
    found.extend(schema);
    found.sort_by_key(|m| m.kind.level);
    found.retain(|m| in_scope(m, &args) && !suppressed(m, &args.suppress));

    let shown: Vec<Message> =
        found.iter().filter(|m| m.kind.level <= args.output_threshold).cloned().collect();
    for error in &read_errors {
        eprintln!("error: {error}");
    }
    let target = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    match args.output {
        Format::Log if shown.is_empty() && read_errors.is_empty() => {
            eprintln!("\u{2714} No validation issues found when analyzing {target}.");
        }
        Format::Log => print!("{}", output::log(&shown)),
        Format::Json => print!("{}", output::json(&shown)),
        Format::Yaml => print!("{}", output::yaml(&shown)),
    }
    if !read_errors.is_empty() {
        eprintln!("Some files couldn't be parsed.");
        return Ok(ExitCode::from(EXIT_DATA_ERROR));
    }
    if found.iter().any(|m| m.kind.level <= args.failure_threshold) {
        eprintln!("Analyzers found issues when analyzing {target}.");
        return Ok(ExitCode::from(EXIT_ISSUES_FOUND));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_mesh_config(path: &PathBuf) -> anyhow::Result<MeshConfig> {
    let text = std::fs::read(path).with_context(|| format!("reading mesh config {}", path.display()))?;
    let docs =
        paymesh_config::yaml::parse_stream(std::str::from_utf8(&text).context("mesh config is not UTF-8")?);
    match docs.into_iter().next() {
        None | Some(Ok(paymesh_config::yaml::Document { root: None, .. })) => Ok(MeshConfig::default()),
        Some(Ok(paymesh_config::yaml::Document { root: Some(root), .. })) => {
            Ok(MeshConfig::new(root.to_json()))
        }
        Some(Err(e)) => bail!("{}:{}: invalid YAML: {}", path.display(), e.line, e.message),
    }
}

/// With `-n`, only messages about that namespace (and cluster-wide ones) are kept.
fn in_scope(message: &Message, args: &Args) -> bool {
    let Some(ns) = &args.namespace else { return true };
    match message.origin.as_ref().map(|o| o.resource.as_str()) {
        Some(resource) => match resource.split_once(' ').and_then(|(_, rest)| rest.split_once('/')) {
            Some((namespace, _)) => namespace == ns,
            None => true,
        },
        None => true,
    }
}

/// `--suppress CODE=Kind name.namespace`, istioctl's syntax, with `*` wildcards.
fn suppressed(message: &Message, rules: &[String]) -> bool {
    let Some(origin) = &message.origin else { return false };
    let (kind, rest) = origin.resource.split_once(' ').unwrap_or((&origin.resource, ""));
    let target = match rest.split_once('/') {
        Some((ns, name)) => format!("{kind} {name}.{ns}"),
        None => format!("{kind} {rest}"),
    };
    rules.iter().any(|rule| {
        let (code, resource) = rule.split_once('=').unwrap_or((rule, "*"));
        wildcard(code, message.kind.code) && wildcard(resource, &target)
    })
}

fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<_> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_like_istioctl() {
        assert!(wildcard("IST0102", "IST0102"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("DestinationRule *.default", "DestinationRule primary-dr.default"));
        assert!(!wildcard("DestinationRule *.default", "DestinationRule primary-dr.other"));
        assert!(!wildcard("IST01", "IST0102"));
    }
}
