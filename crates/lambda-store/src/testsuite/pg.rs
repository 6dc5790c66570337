//! A private PostgreSQL database per test, so that tests run in parallel on
//! one server: created through the maintenance database of
//! `LAMBDA_TEST_DATABASE_URL` (default the machine's local server) and
//! dropped when the guard goes. A missing server fails the test: CI makes
//! sure there is one. [`PrivatePostgres`] is a server of a test's own, for
//! outages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

use crate::{PostgresConfig, PostgresStore};

/// Where the tests find PostgreSQL: a URL of a database they may create
/// databases from (the user needs CREATEDB).
pub fn maintenance_url() -> String {
    std::env::var("LAMBDA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

/// A fresh, empty database, dropped (connections and all) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// The URL of the new database.
    pub url: String,
    maintenance: String,
}

impl TestDatabase {
    /// Creates `lambda_test_<unique>` on the server of `maintenance_url()`.
    pub async fn create() -> TestDatabase {
        Self::create_on(&maintenance_url()).await
    }

    pub async fn create_on(maintenance: &str) -> TestDatabase {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name =
            format!("lambda_test_{}_{}_{nanos}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect(maintenance).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for this test (LAMBDA_TEST_DATABASE_URL={maintenance}): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        TestDatabase { url: with_database(maintenance, &name), name, maintenance: maintenance.to_owned() }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&PostgresConfig::new(&self.url)).await.expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside or outside a runtime: use a thread of our own.
        let (maintenance, name) = (self.maintenance.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&maintenance).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A PostgreSQL server of the test's own (initdb into a temp dir, a free
/// port), that the test stops and starts to play an outage. PostgreSQL
/// refuses to run as root: as root, the server runs as the `postgres` user.
/// Binaries from `LAMBDA_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C", "-D"])
            .arg(&data));
        let mut pg = PrivatePostgres { port, dir, running: false };
        pg.resume();
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres(&bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]));
        self.running = true;
    }

    /// Stops the server (fast shutdown: connections are cut): the outage.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        self.running = false;
        run(as_postgres(&bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60", "-m", mode, "stop"]));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("LAMBDA_TEST_PG_BIN").map(PathBuf::from).or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        versions.pop()
    });
    dir.map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
        assert_eq!(with_database("postgres://u@h", "t"), "postgres://u@h/t");
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t"),
            "postgres://u:p@h/t?sslmode=disable"
        );
    }
}
