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
