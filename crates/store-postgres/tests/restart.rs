//! The store across a restart of its server: a private PostgreSQL cluster started from the
//! binaries in `AUGUR_TEST_POSTGRES_BIN` (set by `scripts/services/postgres.sh`; the test skips
//! without it), stopped and started again under the store's feet.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use augur_core::store::{AdminStore, Change, Entity, Op, RecordStore, Write};
use augur_core::{AccountId, ModelName, Prediction, PredictionId, Revision};
use augur_store_postgres::PostgresStore;
use futures::StreamExt;

/// A throwaway cluster on a free loopback port; stopped and removed when dropped.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn start(bin: &Path) -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("augur-pg-restart-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // initdb refuses to run as root: the cluster then belongs to the postgres user.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if root {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let cluster = Cluster {
            bin: bin.to_owned(),
            dir,
            port,
            as_postgres: root,
        };
        let data = cluster.dir.join("data");
        run(cluster.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        cluster.pg_ctl("start");
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, action: &str) {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "60", "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.display()
            ))
            .arg(action);
        if action == "stop" {
            c.args(["-m", "fast"]);
        }
        run(&mut c);
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=2&pool_timeout=2",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn prediction() -> Prediction {
    Prediction::new(
        PredictionId::generate_for(&AccountId::admin()),
        AccountId::admin(),
        ModelName::parse("augur/echo").unwrap(),
        "v1".into(),
        serde_json::json!({"n": 1}),
    )
}

async fn create(store: &PostgresStore, p: &Prediction) -> augur_core::store::Result<()> {
    store
        .write(&Write::new(p.owner.clone()).op(Op::Insert(p.to_record()?)))
        .await
        .map(|_| ())
}

/// While the server is down every operation fails as `Unavailable`; once it is back the
/// store works again by itself, nothing acknowledged is lost, and the subscription
/// reconnects and yields `Resync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_its_server_restarts() {
    let Some(bin) = std::env::var_os("AUGUR_TEST_POSTGRES_BIN") else {
        eprintln!("skipping: set AUGUR_TEST_POSTGRES_BIN to the directory of initdb and pg_ctl");
        return;
    };
    let cluster = Cluster::start(Path::new(&bin));
    let store = PostgresStore::connect(&cluster.url()).await.unwrap();
    let mut changes = store.subscribe().await.unwrap().expect("announcements");
    let before = prediction();
    create(&store, &before).await.unwrap();

    cluster.pg_ctl("stop");
    let err = store.get(&before.key()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let err = create(&store, &prediction()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    cluster.pg_ctl("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match store.get(&before.key()).await {
            Ok(got) => break got.expect("the acknowledged create is there"),
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(
        *got.decode::<Prediction>().unwrap(),
        before,
        "the acknowledged create survived"
    );

    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(Change::Resync)) => break,
            Ok(Some(other)) => seen.push(other),
            other => panic!("no Resync after the restart ({other:?}); saw {seen:?}"),
        }
    }
    let after = prediction();
    create(&store, &after).await.unwrap();
    loop {
        match tokio::time::timeout_at(until, changes.next()).await {
            Ok(Some(Change::Record { key, revision })) if key == after.key() => {
                assert_eq!(revision, Revision::FIRST);
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("the create after the restart was not announced: {other:?}"),
        }
    }
    store.close().await;
}
