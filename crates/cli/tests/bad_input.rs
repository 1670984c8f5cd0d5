//! `paymesh analyze` on hostile input: the real binary on a temporary directory holding one
//! kind of bad file beside good ones.
//!
//! Every case checks the whole output (each message with its file:line, and the field when
//! there is one), the exit status (65 when a file cannot be read or parsed, 79 when the
//! analyzers report errors, 0 when clean) and that nothing panicked. Beside the bad file
//! sit `valid.yaml`, a correct Service that must draw no message, and `witness.yaml`, a
//! Service with a wrong type whose IST0106 message proves that the files after the bad one
//! were still loaded and analyzed.

#![cfg(unix)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const VALID: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: ok
  namespace: payments
spec:
  ports:
  - name: http
    port: 8081
";

const WITNESS: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: witness
  namespace: payments
spec:
  ports:
  - name: http
    port: eighty
";

/// A temporary directory with `valid.yaml` (and `witness.yaml` unless asked otherwise),
/// removed when dropped.
struct Case {
    dir: PathBuf,
}

/// What one run of `paymesh analyze -f DIR` produced.
#[derive(Debug)]
struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Case {
    fn new(name: &str) -> Self {
        Self::bare(name).with("valid.yaml", VALID).with("witness.yaml", WITNESS)
    }

    /// A case with only `valid.yaml` beside the bad file, for runs that should be clean.
    fn without_witness(name: &str) -> Self {
        Self::bare(name).with("valid.yaml", VALID)
    }

    fn bare(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("paymesh-bad-input-{}-{unique}-{name}", std::process::id()));
        // A leftover from an interrupted run of the same pid is stale.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the case directory");
        Self { dir }
    }

    fn with(self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        fs::write(self.dir.join(name), contents).expect("write a case file");
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `DIR/name` as the binary prints it.
    fn at(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn analyze(&self) -> Outcome {
        let output = Command::new(env!("CARGO_BIN_EXE_paymesh"))
            .arg("analyze")
            .arg("-f")
            .arg(&self.dir)
            .output()
            .expect("run paymesh");
        let outcome = Outcome {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(!outcome.stderr.contains("panicked"), "paymesh panicked: {outcome:#?}");
        outcome
    }

    /// The IST0106 line that `witness.yaml` always draws.
    fn witness_message(&self) -> String {
        format!(
            "Error [IST0106] (Service payments/witness {}:9) Schema validation error: \
             spec.ports[0].port: invalid type: string \"eighty\", expected i32\n",
            self.at("witness.yaml")
        )
    }

    /// Exactly `errors` on stderr (one `error: ` line each), the witness on stdout, status 65.
    fn assert_unreadable(&self, outcome: &Outcome, errors: &[String]) {
        let mut stderr: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
        stderr.push_str("Some files couldn't be parsed.\n");
        assert_eq!(outcome.stderr, stderr, "{outcome:#?}");
        assert_eq!(outcome.stdout, self.witness_message(), "{outcome:#?}");
        assert_eq!(outcome.status, Some(65), "{outcome:#?}");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn malformed_yaml_names_its_line_and_the_rest_is_analyzed() {
    let case = Case::new("malformed")
        .with("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  labels: {a: 1\n");
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[format!(
            "{}:5: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}}'",
            case.at("bad.yaml")
        )],
    );
}

#[test]
fn a_bad_document_costs_only_itself() {
    let case = Case::new("multi-document").with(
        "bad.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: first, labels: {istio-injection: enabled}}\n---\nkey: [1, 2\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: third, namespace: payments}\nspec: {ports: 7}\n",
    );
    let outcome = case.analyze();
    assert_eq!(
        outcome.stdout,
        format!(
            "Error [IST0106] (Service payments/third {}:10) Schema validation error: spec.ports: \
             invalid type: integer `7`, expected a sequence\n{}",
            case.at("bad.yaml"),
            case.witness_message()
        ),
        "{outcome:#?}"
    );
    assert_eq!(
        outcome.stderr,
        format!(
            "error: {}:5: invalid YAML: while parsing a flow sequence, expected ',' or ']'\n\
             Some files couldn't be parsed.\n",
            case.at("bad.yaml")
        ),
        "{outcome:#?}"
    );
    assert_eq!(outcome.status, Some(65));
}

#[test]
fn wrong_types_are_schema_errors_at_their_field() {
    let case = Case::new("wrong-types").with(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  namespace: payments\nspec:\n  \
         selector:\n    app: [payment-service]\n",
    );
    let outcome = case.analyze();
    assert_eq!(
        outcome.stdout,
        format!(
            "Error [IST0106] (Service payments/bad {}:8) Schema validation error: spec.selector.app: \
             invalid type: sequence, expected a string\n{}",
            case.at("bad.yaml"),
            case.witness_message()
        ),
        "{outcome:#?}"
    );
    assert_eq!(outcome.stderr, format!("Analyzers found issues when analyzing {}.\n", case.dir.display()));
    assert_eq!(outcome.status, Some(79));
}

#[test]
fn wrong_metadata_types_are_schema_errors() {
    let case = Case::new("wrong-metadata")
        .with("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  labels: [app]\n");
    let outcome = case.analyze();
    assert_eq!(
        outcome.stdout,
        format!(
            "Error [IST0106] (Service {}:5) Schema validation error: metadata.labels: invalid type: \
             sequence, expected a map\n{}",
            case.at("bad.yaml"),
            case.witness_message()
        ),
        "{outcome:#?}"
    );
    assert_eq!(outcome.status, Some(79));
}

#[test]
fn an_unknown_istio_kind_is_named() {
    let case = Case::new("unknown-kind").with(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualServise\nmetadata:\n  name: bad\n",
    );
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[format!(
            "{}:1: VirtualServise bad: unknown kind \"VirtualServise\" in \"networking.istio.io/v1\"",
            case.at("bad.yaml")
        )],
    );
}

/// Kubernetes kinds are decoded leniently (k8s-openapi skips unknown fields), so a
/// misspelt field of a Service loads and the run is clean. This pins that behaviour, so a
/// change to it is a deliberate one.
#[test]
fn an_unknown_field_of_a_kubernetes_kind_is_ignored() {
    let case = Case::without_witness("unknown-field").with(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\n  namespace: payments\nspec:\n  portz:\n  - port: 80\n",
    );
    let outcome = case.analyze();
    assert_eq!(outcome.stdout, "", "{outcome:#?}");
    assert_eq!(
        outcome.stderr,
        format!("\u{2714} No validation issues found when analyzing {}.\n", case.dir.display()),
        "{outcome:#?}"
    );
    assert_eq!(outcome.status, Some(0));
}

#[test]
fn duplicates_in_two_files_name_both_places() {
    let case = Case::new("duplicates").with("zz-again.yaml", format!("# the same Service again\n{VALID}"));
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[format!(
            "{}:2: Service payments/ok: duplicate resource, first defined at {}:1",
            case.at("zz-again.yaml"),
            case.at("valid.yaml")
        )],
    );
}

#[test]
fn a_50_mb_file_is_refused_unread() {
    let case = Case::new("large");
    let file = fs::File::create(case.path("big.yaml")).expect("create big.yaml");
    // Sparse: the size is what matters, and the loader must refuse before reading.
    file.set_len(50 * 1024 * 1024).expect("grow big.yaml");
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[format!("{}:1: file is 52428800 bytes, larger than the 16777216-byte limit", case.at("big.yaml"))],
    );
}

#[test]
fn nesting_10_000_levels_deep_is_an_error_not_a_crash() {
    let flow = format!("spec: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let block = format!("apiVersion: v1\nkind: List\nitems:\n{}x\n", "- ".repeat(10_000));
    let case = Case::new("deep").with("deep-block.yaml", block).with("deep-flow.yaml", flow);
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[
            format!("{}:4: invalid YAML: nesting deeper than 128 levels", case.at("deep-block.yaml")),
            format!("{}:1: invalid YAML: recursion limit exceeded", case.at("deep-flow.yaml")),
        ],
    );
}

#[test]
fn invalid_utf8_names_its_line_and_byte() {
    let case =
        Case::new("utf8").with("bad.yaml", b"apiVersion: v1\nkind: Service\nmetadata:\n  name: b\xffd\n");
    let outcome = case.analyze();
    case.assert_unreadable(&outcome, &[format!("{}:4: invalid UTF-8 at byte 48", case.at("bad.yaml"))]);
}

/// Tests run as root, so permissions cannot make a file unreadable: a dangling symlink and a
/// named pipe stand in. A directory named like a config file is walked, not read.
#[test]
fn unreadable_entries_are_reported_and_skipped() {
    let case = Case::new("unreadable");
    std::os::unix::fs::symlink(case.path("missing-target"), case.path("x.yaml")).expect("symlink");
    fs::create_dir(case.path("y.yaml")).expect("mkdir y.yaml");
    fs::write(case.path("y.yaml/inner.yaml"), VALID.replace("name: ok", "name: inner")).expect("write");
    let mkfifo = Command::new("mkfifo").arg(case.path("z.yaml")).status().expect("run mkfifo");
    assert!(mkfifo.success());
    let outcome = case.analyze();
    case.assert_unreadable(
        &outcome,
        &[
            format!("{}:1: cannot read: No such file or directory (os error 2)", case.at("x.yaml")),
            format!("{}:1: cannot read: not a regular file", case.at("z.yaml")),
        ],
    );
}

#[test]
fn a_missing_path_is_reported() {
    let case = Case::new("missing");
    let missing: &Path = &case.path("nowhere");
    let output = Command::new(env!("CARGO_BIN_EXE_paymesh"))
        .args(["analyze", "-f"])
        .arg(missing)
        .output()
        .expect("run paymesh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "error: {}:1: cannot read: No such file or directory (os error 2)\nSome files couldn't be parsed.\n",
            missing.display()
        )
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert_eq!(output.status.code(), Some(65));
}
