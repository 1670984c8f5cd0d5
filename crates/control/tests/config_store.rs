//! The config store's watch: an edit made between the first load and the start of the poll
//! loop is still seen (the baseline fingerprint is taken before the first load).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use paymesh_control::config_store::{ConfigStore, Sources};

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: account, namespace: shop}\nspec:\n  selector: {app: account}\n  ports: [{name: http, port: 8083}]\n";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn an_edit_during_startup_is_not_missed() {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").subsec_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!("paymesh-store-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join("a.yaml"), SERVICE).expect("config");
    let sources = Sources { config: vec![dir.0.clone()], pods: None, trust_domain: "cluster.local".into() };
    let store = ConfigStore::load(sources).expect("loads");
    assert_eq!(store.current().version.n, 1);
    // Edited after the load, before the watcher runs.
    std::fs::write(dir.0.join("b.yaml"), SERVICE.replace("account", "ledger")).expect("edit");
    let watcher = store.watch();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.current().version.n < 2 {
        assert!(Instant::now() < deadline, "the startup edit was never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    assert!(store.current().registry.service_by_host("ledger.shop.svc.cluster.local").is_some());
}

/// A temp dir with `config/` and a pods file, and a store watching them.
fn watched(name: &str, files: &[(&str, &str)], pods: &str) -> (TempDir, std::sync::Arc<ConfigStore>) {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").subsec_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!("paymesh-{name}-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(dir.0.join("config")).expect("dir");
    for (file, text) in files {
        std::fs::write(dir.0.join("config").join(file), text).expect("config");
    }
    std::fs::write(dir.0.join("pods.yaml"), pods).expect("pods");
    let sources = Sources {
        config: vec![dir.0.join("config")],
        pods: Some(dir.0.join("pods.yaml")),
        trust_domain: "cluster.local".into(),
    };
    let store = ConfigStore::load(sources).expect("loads");
    (dir, store)
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PODS: &str = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: account-0, namespace: shop, labels: {app: account}}\n  spec: {containers: [{name: app}]}\n  status: {podIP: 127.1.2.3}\n";

#[tokio::test]
async fn only_files_whose_content_changed_are_parsed_again() {
    let ledger = SERVICE.replace("account", "ledger");
    let (dir, store) = watched("cache", &[("a.yaml", SERVICE), ("b.yaml", &ledger)], PODS);
    assert_eq!(store.files_parsed(), 3, "a.yaml, b.yaml, pods.yaml");
    let watcher = store.watch();

    // One edited file: one parse, and the edit is served.
    std::fs::write(dir.0.join("config/b.yaml"), ledger.replace("8083", "8090")).expect("edit");
    wait_until("the edit accepted", || store.current().version.n >= 2).await;
    assert_eq!(store.files_parsed(), 4);
    let current = store.current();
    let service = current.registry.service_by_host("ledger.shop.svc.cluster.local").expect("ledger");
    assert_eq!(service.ports[0].port, 8090);

    // The pods file changes alone.
    std::fs::write(dir.0.join("pods.yaml"), PODS.replace("127.1.2.3", "127.1.2.4")).expect("pods edit");
    wait_until("the pods change accepted", || store.current().version.n >= 3).await;
    assert_eq!(store.files_parsed(), 5);
    let current = store.current();
    assert_eq!(current.registry.workload("shop", "account-0").and_then(|w| w.ip), "127.1.2.4".parse().ok());

    // Rewritten with the same bytes (a new mtime): read, not parsed.
    std::fs::write(dir.0.join("config/a.yaml"), SERVICE.replace("8083", "8084")).expect("edit");
    wait_until("the second edit accepted", || store.current().version.n >= 4).await;
    assert_eq!(store.files_parsed(), 6);
    std::fs::write(dir.0.join("config/a.yaml"), SERVICE.replace("8083", "8084")).expect("same bytes");
    std::fs::write(dir.0.join("config/b.yaml"), ledger.replace("8083", "8091")).expect("edit");
    wait_until("the third edit accepted", || store.current().version.n >= 5).await;
    assert_eq!(store.files_parsed(), 7, "b.yaml only");

    // A removed file's resources are gone.
    std::fs::remove_file(dir.0.join("config/b.yaml")).expect("remove");
    wait_until("the removal accepted", || store.current().version.n >= 6).await;
    assert!(store.current().registry.service_by_host("ledger.shop.svc.cluster.local").is_none());
    assert_eq!(store.files_parsed(), 7);
    watcher.abort();
}

#[tokio::test]
async fn a_rejected_edit_keeps_the_last_good_config_and_reverting_it_is_read() {
    let (dir, store) = watched("reject", &[("a.yaml", SERVICE)], PODS);
    let watcher = store.watch();
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: shop}\nspec:\n  hosts: [account]\n  http:\n  - route: [{destination: {host: nowhere}}]\n";
    std::fs::write(dir.0.join("config/b.yaml"), bad).expect("bad edit");
    wait_until("the bad edit rejected", || store.rejections_total() >= 1).await;
    assert_eq!(store.current().version.n, 1, "the last good config stays");
    let rejection = store.rejection().expect("a rejection");
    assert!(
        rejection.messages[0].starts_with("Error [IST0101] (VirtualService shop/broken ")
            && rejection.messages[0].contains("b.yaml:"),
        "{:?}",
        rejection.messages
    );
    // Another unrelated edit while b.yaml stays bad: still rejected (the cached parse of b.yaml
    // is analyzed again), with the same message.
    std::fs::write(dir.0.join("config/c.yaml"), SERVICE.replace("account", "ledger")).expect("edit");
    wait_until("the second edit rejected", || store.rejections_total() >= 2).await;
    assert_eq!(store.current().version.n, 1);
    assert_eq!(store.rejection().expect("a rejection").messages, rejection.messages);
    // The fix is read and accepted.
    std::fs::write(dir.0.join("config/b.yaml"), bad.replace("nowhere", "account")).expect("fix");
    wait_until("the fix accepted", || store.current().version.n >= 2).await;
    assert!(store.rejection().is_none());
    let current = store.current();
    assert!(current.store.get("VirtualService", "shop", "broken").is_some());
    assert!(current.registry.service_by_host("ledger.shop.svc.cluster.local").is_some());
    watcher.abort();
}

/// A pods file of `n` pods (over the item-by-item threshold), pretty as the supervisor writes it.
fn pods_file(n: usize, moved: Option<usize>) -> String {
    let items: Vec<_> = (0..n)
        .map(|i| {
            let app = if Some(i) == moved { "ledger-moved" } else { "ledger" };
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("ledger-{i}"), "namespace": "shop", "labels": {"app": app}},
                "spec": {"serviceAccountName": "ledger", "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
                "status": {"podIP": format!("127.3.{}.{}", i / 200, i % 200 + 1)}
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .expect("json")
}

#[test]
fn a_large_pods_file_is_reloaded_item_by_item_with_the_same_result() {
    use paymesh_control::config_store::files::FileCache;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").subsec_nanos();
    let dir = TempDir(std::env::temp_dir().join(format!("paymesh-items-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join("pods.yaml");
    let mut cache = FileCache::default();
    let debug = |resources: &[std::sync::Arc<paymesh_config::resource::Resource>]| -> Vec<String> {
        resources.iter().map(|r| format!("{r:?}")).collect()
    };
    let whole = || {
        let loaded = paymesh_config::load::load_paths(&[&path]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        loaded.resources.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()
    };
    let text = pods_file(300, None);
    assert!(text.len() > paymesh_config::load::list::MIN_BYTES, "{}", text.len());
    std::fs::write(&path, &text).expect("pods");
    let first = cache.load(&[&path]);
    assert_eq!(debug(&first.resources), whole());

    // One pod relabelled (a longer label: every later pod moves along its line).
    std::fs::write(&path, pods_file(300, Some(10))).expect("pods");
    let second = cache.load(&[&path]);
    assert_eq!(debug(&second.resources), whole());
    assert!(std::sync::Arc::ptr_eq(&first.resources[9], &second.resources[9]), "an unchanged pod is reused");
    assert!(!std::sync::Arc::ptr_eq(&first.resources[10], &second.resources[10]));
    assert_eq!(second.resources[10].meta.labels["app"], "ledger-moved");

    // A pod gone from the middle: the later ones move up a few lines.
    let mut fewer: serde_json::Value = serde_json::from_str(&pods_file(300, Some(10))).expect("json");
    fewer["items"].as_array_mut().expect("items").remove(100);
    std::fs::write(&path, serde_json::to_string_pretty(&fewer).expect("json")).expect("pods");
    let third = cache.load(&[&path]);
    assert_eq!(third.resources.len(), 299);
    assert_eq!(debug(&third.resources), whole());
    assert_eq!(third.resources[100].meta.name, "ledger-101");

    // Broken JSON: loaded whole, with the YAML loader's error and location.
    std::fs::write(&path, pods_file(300, None).replace("\"ledger-250\"", "\"ledger-250\" \"x\""))
        .expect("pods");
    let broken = cache.load(&[&path]);
    let expected = paymesh_config::load::load_paths(&[&path]);
    assert!(!expected.errors.is_empty());
    assert_eq!(broken.errors, expected.errors);
    assert_eq!(broken.resources.len(), expected.resources.len());
}
